"""MAX_POST_AGE_DAYS (issue 14): a trained model cut down to the posts that can still be shown ranks exactly as
the whole model would with the older posts left out."""

from __future__ import annotations

import numpy as np
import pytest

import ml.post_age
from ml import demo
from ml.csv_files import read_dataset_dir
from ml.settings import TrainingSettings
from ml.training import train

DAYS = 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Demo data (posts over 90 days) and a model fitted on all of it."""
    root = tmp_path_factory.mktemp("post-age")
    demo.generate(root, users=300, posts=300, interactions=6000, seed=5)
    dataset = read_dataset_dir(root)
    return dataset, train(dataset, TrainingSettings(components=8, epochs=3, num_threads=1))


def test_only_recent_posts_are_ranked_as_the_whole_model_ranks_them(trained):
    dataset, model = trained
    recent = ml.post_age.recent_posts(dataset, DAYS)
    assert 0 < len(recent) < dataset.num_items
    assert (dataset.item_time[recent] >= dataset.item_time.max() - DAYS * 86400).all()

    cut = ml.post_age.recent_posts_only(model, dataset, DAYS)

    assert cut.item_ids == [dataset.item_ids[i] for i in recent]
    assert cut.user_ids == model.user_ids
    old = np.setdiff1d(np.arange(model.num_items), recent)
    users = np.arange(model.num_users)
    items, scores = cut.top_k(users, 20)
    for user in users:
        # The whole model's scores, the user's exclusions and the old posts left out: the same order.
        row = model.item_embeddings @ model.user_embeddings[user] + model.item_biases + model.user_biases[user]
        row[model.excluded_items(user)] = -np.inf
        row[old] = -np.inf
        best = np.argsort(-row, kind="stable")[:20]
        best = best[np.isfinite(row[best])]
        got = items[user][items[user] >= 0]
        assert [cut.item_ids[i] for i in got] == [model.item_ids[i] for i in best], f"user {user}"
        np.testing.assert_allclose(scores[user][: len(got)], row[best], rtol=1e-5, atol=1e-5)
        # Exclusions are those of the kept posts, renumbered.
        kept_excluded = [model.item_ids[i] for i in model.excluded_items(user) if i not in set(old)]
        assert [cut.item_ids[i] for i in cut.excluded_items(user)] == kept_excluded
    # Popularity keeps its order, over the kept posts only.
    assert [cut.item_ids[i] for i in cut.popular_items] == [
        model.item_ids[i] for i in model.popular_items if i not in set(old)
    ]


def test_a_limit_every_post_is_within_changes_nothing(trained):
    dataset, model = trained
    assert ml.post_age.recent_posts_only(model, dataset, 10_000) is model
