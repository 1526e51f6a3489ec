"""Offline evaluation: the temporal split of DESIGN section 9, the metrics, and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import ml.db.load
from ml.errors import DatasetError
from ml.evaluate import evaluate, main, ranking_metrics, temporal_split
from ml.settings import TrainingSettings
from testing.factories import make_dataset, planted_dataset, planted_tables
from tests.ml.datasets import write_dataset_dir

FAST = TrainingSettings(components=8, epochs=5, num_threads=1)


def _at(day: int, hour: int = 0) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:00:00Z"


@pytest.fixture
def dataset():
    """u5 has 5 distinct posts, u7 has 7, u4 has 4 (p5 among them); only u7 sees p9, in its test part."""
    posts = [(f"p{i}", "bts", "u5" if i == 0 else "", "") for i in range(10)]
    interactions = [("u5", f"p{i}", "view", _at(1 + i)) for i in range(5)]
    interactions.append(("u5", "p0", "like", _at(20)))  # a repeat: p0 stays u5's first post
    interactions += [("u7", f"p{i}", "view", _at(1 + i, 1)) for i in (0, 1, 2, 3, 4, 5)]
    interactions.append(("u7", "p9", "comment", _at(9, 1)))
    interactions += [("u4", f"p{i}", "like", _at(1 + i, 2)) for i in (5, 3, 2, 1)]
    users = [("u5", "fan"), ("u7", "fan"), ("u4", "fan"), ("idle", "fan")]
    return make_dataset(users, posts, interactions)


def _pairs(dataset, users, items):
    return sorted((dataset.user_ids[u], dataset.item_ids[i]) for u, i in zip(users, items, strict=True))


def test_last_fifth_rounded_up_by_first_interaction_is_test(dataset):
    split = temporal_split(dataset)
    # u5: 5 posts -> 1 test (p4; p0's later like does not move it). u7: 7 posts -> ceil(1.4) = 2 test
    # (p5 and p9), but nobody saw p9 in train, so it is dropped. u4: 4 posts -> no test.
    assert _pairs(dataset, split.test_user, split.test_item) == [("u5", "p4"), ("u7", "p5")]


def test_train_keeps_everything_but_the_test_pairs(dataset):
    split = temporal_split(dataset)
    train = split.train
    assert train.user_ids == dataset.user_ids and train.item_ids == dataset.item_ids
    assert train.item_tags == dataset.item_tags
    np.testing.assert_array_equal(train.follow_user, dataset.follow_user)
    train_pairs = set(_pairs(train, train.inter_user, train.inter_item))
    assert ("u5", "p4") not in train_pairs and ("u7", "p5") not in train_pairs
    assert ("u7", "p9") not in train_pairs  # a test pair, even though it was dropped from the test set
    assert len(train.inter_user) == dataset.num_interactions - 3  # the repeat of (u5, p0) stays
    assert (train.item_author == -1).all()  # so a user's excluded posts are exactly its train posts


def test_ranking_metrics_by_hand():
    ranked = np.array([[3, 1, 7, -1], [5, 6, 2, 0]])
    users = np.array([0, 2])
    test_user, test_item = np.array([0, 0, 0, 2]), np.array([1, 7, 9, 2])
    metrics = ranking_metrics(ranked, users, test_user, test_item, num_items=10, k=3)
    # user 0: hits at ranks 2 and 3 of 3 relevant; user 2: a hit at rank 3 of 1 relevant.
    dcg0, idcg0 = 1 / math.log2(3) + 1 / math.log2(4), 1 + 1 / math.log2(3) + 1 / math.log2(4)
    dcg2, idcg2 = 1 / math.log2(4), 1.0
    assert metrics["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert metrics["recall@3"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["ndcg@3"] == pytest.approx((dcg0 / idcg0 + dcg2 / idcg2) / 2)


def test_evaluate_reports_model_and_popularity_on_the_same_split():
    dataset = planted_dataset(num_users=120, num_items=80, per_user=10)
    result = evaluate(dataset, FAST, k=10)
    split = temporal_split(dataset)
    assert result["users"] == len(np.unique(split.test_user))
    assert result["test_pairs"] == len(split.test_user)
    for label in ("model", "popularity"):
        assert set(result[label]) == {"precision@10", "recall@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in result[label].values())
    json.dumps(result, allow_nan=False)


def test_evaluate_without_any_test_user_is_a_clear_error():
    dataset = make_dataset(
        [("u1", "fan"), ("u2", "fan")],
        [("p1", "bts", "", ""), ("p2", "bts", "", "")],
        [("u1", "p1", "view", _at(1)), ("u2", "p2", "view", _at(2))],
    )
    with pytest.raises(DatasetError, match="at least 5 distinct posts"):
        evaluate(dataset, FAST)


def test_command_line_on_a_dataset_directory(tmp_path):
    directory = write_dataset_dir(tmp_path / "data", planted_tables(num_users=80, num_items=60, per_user=8))
    env = {"LIGHTFM_EPOCHS": "3", "LIGHTFM_COMPONENTS": "8", "TRAIN_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory), "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["params"]["epochs"] == 3 and result["users"] > 0
    table = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory)], capture_output=True, text=True, env=env
    )
    assert "precision@10" in table.stdout and "popularity" in table.stdout


def test_command_line_from_postgresql(tmp_path, database_url, pg_conn, capsys, monkeypatch):
    tables = planted_tables(num_users=80, num_items=60, per_user=8)
    ml.db.load.load_dataset_dir(pg_conn, write_dataset_dir(tmp_path / "data", tables))
    for name, value in {"LIGHTFM_EPOCHS": "3", "LIGHTFM_COMPONENTS": "8", "TRAIN_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    assert main(["--from-db", "--database-url", database_url, "--json"]) == 0
    from_db = json.loads(capsys.readouterr().out)
    assert main([str(tmp_path / "data"), "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    # The same data through PostgreSQL gives the same split.
    for key in ("users", "test_pairs", "train_pairs"):
        assert from_db[key] == from_dir[key] > 0


def test_command_line_refuses_a_bad_directory(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "error:" in done.stderr and "missing" in done.stderr


def test_command_line_reads_only_the_variables_of_ml(tmp_path):
    """Another process's bad variable (REDIS_URL, MAX_PAGE_LIMIT) does not stop it; a bad training one, in one line."""
    directory = write_dataset_dir(tmp_path / "data", planted_tables(num_users=80, num_items=60, per_user=8))
    env = {"LIGHTFM_EPOCHS": "3", "LIGHTFM_COMPONENTS": "8", "TRAIN_THREADS": "1", "PATH": "/usr/bin:/bin"}
    others_bad = {**env, "REDIS_URL": "nonsense", "MAX_PAGE_LIMIT": "100000"}
    done = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory), "--json"], capture_output=True, text=True, env=others_bad
    )
    assert done.returncode == 0, done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "ml.evaluate", str(directory)],
        capture_output=True,
        text=True,
        env={**env, "LIGHTFM_EPOCHS": "0"},
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: LIGHTFM_EPOCHS='0' is invalid: must be >= 1"
