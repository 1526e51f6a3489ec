"""The cold-post protocol of ml.evaluate: the newest posts withheld, scored from their features alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ml.errors import DatasetError
from ml.evaluate import COLD_PERCENT, cold_post_split, evaluate_cold_posts
from ml.settings import TrainingSettings
from testing.factories import make_dataset, planted_dataset, planted_tables
from tests.ml.datasets import write_dataset_dir

PARAMS = TrainingSettings(components=16, epochs=20, num_threads=1, half_life_days=0.0, seed=5)


def test_the_newest_tenth_of_posts_is_withheld_entirely():
    dataset = planted_dataset(num_users=60, num_items=95, per_user=10)
    train, cold = cold_post_split(dataset)
    assert len(cold) == 10  # 10% of 95, rounded up
    # Posts are created an hour apart in their order: the withheld ones are the last ten.
    assert [dataset.item_ids[i] for i in cold] == [f"p{i}" for i in range(85, 95)]
    assert train.item_ids == [f"p{i}" for i in range(85)]
    assert train.num_items == 85 and train.user_ids == dataset.user_ids
    kept = np.isin(dataset.inter_item, cold, invert=True)
    assert train.num_interactions == int(kept.sum())
    assert [train.item_ids[i] for i in train.inter_item] == [dataset.item_ids[i] for i in dataset.inter_item[kept]]
    np.testing.assert_array_equal(train.inter_time, dataset.inter_time[kept])
    assert COLD_PERCENT == 10


def test_feature_scored_model_beats_community_popularity_on_planted_fandoms():
    """Fandoms (communities and topic tags) drive the planted interactions: features carry the signal."""
    result = evaluate_cold_posts(planted_dataset(), PARAMS)
    assert result["cold_posts"] == 24 and result["unscorable_posts"] == 0
    assert result["users"] > 100 and result["test_pairs"] >= result["users"]
    model, popular, affinity = result["model"], result["community_popularity"], result["user_community"]
    assert model["ndcg@10"] > 1.5 * popular["ndcg@10"]
    assert model["ndcg@10"] > 0.8 * affinity["ndcg@10"]
    json.dumps(result, allow_nan=False)


def test_a_users_own_posts_are_not_ranked_for_it():
    day = "2026-05-{:02d}T00:00:00Z".format
    posts = [(f"p{i}", "bts", "u1" if i == 9 else "", "mv") for i in range(10)]
    interactions = [("u1", f"p{i}", "like", day(1 + i)) for i in range(10)]
    interactions += [("u2", f"p{i}", "like", day(1 + i)) for i in range(10)]
    result = evaluate_cold_posts(make_dataset([("u1", "fan"), ("u2", "fan")], posts, interactions), PARAMS)
    # p9 is the only cold post; u1 wrote it, so only u2 can find it.
    assert result["cold_posts"] == 1 and result["users"] == 2
    assert result["model"]["recall@10"] == pytest.approx(0.5)


def test_no_interaction_with_a_withheld_post_is_a_clear_error():
    posts = [(f"p{i}", "bts", "", "mv") for i in range(10)]
    interactions = [("u1", f"p{i}", "like", f"2026-05-0{1 + i}T00:00:00Z") for i in range(9)]
    with pytest.raises(DatasetError, match="newest 10% of posts"):
        evaluate_cold_posts(make_dataset([("u1", "fan"), ("u2", "fan")], posts, interactions), PARAMS)


def test_command_line_cold_posts(tmp_path):
    directory = write_dataset_dir(tmp_path / "data", planted_tables(num_users=80, num_items=60, per_user=8))
    env = {"LIGHTFM_EPOCHS": "3", "LIGHTFM_COMPONENTS": "8", "TRAIN_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory), "--cold-posts", "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cold_posts"] == 6 and set(result) >= {"model", "community_popularity", "user_community"}
    table = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory), "--cold-posts"], capture_output=True, text=True, env=env
    )
    assert "cold posts (newest 10% withheld)" in table.stdout and "community_popularity" in table.stdout
