"""Warm starts (issue 14): the state saved and read back, grown to new users and posts by feature name,
measured progressively on the interactions it has not seen, then continued on them."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import ml.warm
from ml import demo
from ml.csv_files import read_dataset_dir
from ml.dataset import COLUMNS
from ml.settings import TrainingSettings
from ml.timestamps import parse_timestamps
from ml.training import fitted

PARAMS = TrainingSettings(components=16, epochs=10, num_threads=1)


@pytest.fixture(scope="module")
def earlier_and_now(tmp_path_factory):
    """Demo data, and the same data as it was at the 90th percentile of its interactions' times (with a
    tenth of the users not yet joined)."""
    root = tmp_path_factory.mktemp("warm")
    demo.generate(root / "now", users=1500, posts=800, interactions=40_000, seed=7)
    now = read_dataset_dir(root / "now")
    cut = float(np.quantile(now.inter_time, 0.9))
    (root / "earlier").mkdir()
    time_column = {"users": 2, "communities": None, "follows": 2, "posts": 4, "interactions": 3}
    kept_ids: dict[str, set[str]] = {}
    for table, column in time_column.items():
        with (root / "now" / f"{table}.csv").open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))[1:]
        if column is not None:
            times, _ = parse_timestamps([row[column] for row in rows])
            rows = [row for row, t in zip(rows, times, strict=True) if t <= cut]
        if table == "users":  # users whose id ends in 7 joined after the cut
            rows = [row for row in rows if not row[0].endswith("7")]
        if table == "follows":
            rows = [row for row in rows if row[0] in kept_ids["users"]]
        if table == "interactions":
            rows = [row for row in rows if row[0] in kept_ids["users"] and row[1] in kept_ids["posts"]]
        if table == "posts":
            rows = [[*row[:2], row[2] if row[2] in kept_ids["users"] else "", *row[3:]] for row in rows]
        kept_ids[table] = {row[0] for row in rows}
        with (root / "earlier" / f"{table}.csv").open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows([COLUMNS[table], *rows])
    return read_dataset_dir(root / "earlier"), now, cut


def test_the_state_grows_to_new_users_and_posts_by_feature_name(earlier_and_now, tmp_path):
    earlier, now, cut = earlier_and_now
    assert earlier.num_users < now.num_users and earlier.num_items < now.num_items
    _, estimator, features = fitted(earlier, PARAMS)
    ml.warm.save_state(tmp_path, "v1", ml.warm.state_of(estimator, features, PARAMS, cut, full_fit_at=1.0))
    state = ml.warm.load_state(tmp_path, "v1")
    assert state.user_feature_names == features.user_feature_names and state.trained_until == cut
    assert ml.warm.compatible(state, PARAMS) is None
    assert "components" in ml.warm.compatible(state, TrainingSettings(components=8))

    prepared = ml.warm.prepare(now, state, PARAMS)
    grown = prepared.estimator
    names = prepared.features.item_feature_names
    old_index = {name: i for i, name in enumerate(features.item_feature_names)}
    carried = [(i, old_index[n]) for i, n in enumerate(names) if n in old_index]
    assert len(carried) == len(old_index) and len(names) > len(old_index)
    new_rows, old_rows = map(list, zip(*carried, strict=True))
    assert new_rows != old_rows  # new posts sit between old ones (ids in order): indices moved
    for name in ("embeddings", "embedding_gradients", "biases", "bias_gradients"):
        np.testing.assert_array_equal(
            getattr(grown, f"item_{name}")[new_rows], getattr(estimator, f"item_{name}")[old_rows]
        )
    fresh = sorted(set(range(len(names))) - set(new_rows))
    assert np.abs(grown.item_embeddings[fresh]).max() <= 0.5 / PARAMS.components  # LightFM's initialisation
    assert (grown.item_embedding_gradients[fresh] == 1).all()  # adagrad's accumulators start at 1


def test_progressive_figures_then_the_warm_fit(earlier_and_now, tmp_path):
    earlier, now, cut = earlier_and_now
    _, estimator, features = fitted(earlier, PARAMS)
    state = ml.warm.state_of(estimator, features, PARAMS, cut, full_fit_at=1.0)
    prepared = ml.warm.prepare(now, state, PARAMS)
    metrics = prepared.metrics
    assert metrics["protocol"] == "progressive" and metrics["users"] > 100
    assert metrics["model"]["precision@10"] > metrics["popularity"]["precision@10"]
    assert prepared.newer.sum() == (now.inter_time > cut).sum() > 0

    model = ml.warm.warm_fit(now, prepared, PARAMS)
    assert model.num_users == now.num_users and model.num_items == now.num_items
    assert np.isfinite(model.user_embeddings).all() and np.isfinite(model.item_embeddings).all()
    # Every interaction counts for the exclusions, the old and the new.
    user = int(now.inter_user[now.inter_time > cut][0])
    assert set(now.inter_item[now.inter_user == user]) <= set(model.excluded_items(user))


def test_an_unreadable_or_missing_state_means_a_full_fit(tmp_path):
    assert ml.warm.load_state(tmp_path, None) is None
    assert ml.warm.load_state(tmp_path, "v1") is None
    (tmp_path / f"v1{ml.warm.STATE_SUFFIX}").write_bytes(b"not an npz")
    assert ml.warm.load_state(tmp_path, "v1") is None
