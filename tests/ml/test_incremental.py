"""Reading only what changed (issue 14): a run's interactions saved by id, and the next read merged with them,
against the real PostgreSQL, through the shipped queries and a deployment's own."""

from __future__ import annotations

import numpy as np
import pytest

import ml.incremental
from ml.db.load import load_dataset_dir
from ml.db.read import read_dataset
from ml.db.schema import create_schema
from ml.settings import DEFAULT_QUERIES
from tests.ml.datasets import dataset_records

# A deployment's own SQL: created_at leaves as ISO 8601 text, and ids through expressions. The wrapped read
# (q.created_at::timestamptz >= ...) must work on it as on the shipped schema.
OWN_QUERIES = {
    **DEFAULT_QUERIES,
    "interactions": "SELECT i.user_id::text AS user_id, i.post_id AS post_id, i.type,"
    " to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at"
    " FROM interactions i;",
}
NEWEST = "2026-02-05T11:00:00Z"  # the tiny dataset's newest interaction

ARRIVE = """
INSERT INTO users (id, role, created_at) VALUES ('u5', 'fan', now());
INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES ('p0', 'bts', 'u5', '{new}', now());
INSERT INTO interactions (user_id, post_id, type, created_at) VALUES
    ('u5', 'p1', 'like', now()), ('u1', 'p0', 'view', now()),
    -- committed now, created 30 s before the saved data's newest row: inside a 60 s lookback
    ('u3', 'p5', 'view', timestamptz '2026-02-05T10:59:30Z');
"""


@pytest.fixture
def tiny_db(pg_conn, tiny_dataset_dir):
    create_schema(pg_conn)
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    pg_conn.commit()
    return pg_conn


def _execute(conn, statement: str) -> None:
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.commit()


@pytest.mark.parametrize("queries", [DEFAULT_QUERIES, OWN_QUERIES], ids=["shipped", "own"])
def test_a_merged_read_equals_a_full_read(tiny_db, tmp_path, queries):
    before = read_dataset(tiny_db, queries)
    ml.incremental.save(tmp_path, "v1", before, queries)
    _execute(tiny_db, ARRIVE)

    merged, read = ml.incremental.read(tiny_db, queries, ml.incremental.load(tmp_path, "v1"), lookback_seconds=60)

    assert (read.mode, read.rows_kept) == ("incremental", before.num_interactions - 1)
    # From the cut on: the saved data's newest row, read again rather than kept, and the three new rows.
    assert read.rows_read == 4 and read.since == before.inter_time.max() - 60
    assert dataset_records(merged) == dataset_records(read_dataset(tiny_db, queries))
    assert merged.user_ids[-1] == "u5" and merged.item_ids[0] == "p0"  # new ids moved the indices: mapped by id


def test_deleted_or_late_rows_mean_a_full_read_and_a_rewritten_one_waits_for_it(tiny_db, tmp_path):
    before = read_dataset(tiny_db, DEFAULT_QUERIES)
    ml.incremental.save(tmp_path, "v1", before, DEFAULT_QUERIES)
    snapshot = ml.incremental.load(tmp_path, "v1")

    # A deleted user: its follows and interactions go with it (the schema's cascade), and its saved rows too.
    _execute(tiny_db, "DELETE FROM users WHERE id = 'u4'")
    merged, read = ml.incremental.read(tiny_db, DEFAULT_QUERIES, snapshot, 60)
    assert read.mode == "incremental"
    assert dataset_records(merged) == dataset_records(read_dataset(tiny_db, DEFAULT_QUERIES))

    # A row deleted before the cut, or one committed more than the lookback after its created_at: PostgreSQL
    # holds another count than the snapshot keeps, so everything is read.
    for change in (
        "DELETE FROM interactions WHERE user_id = 'u1' AND post_id = 'p2'",
        "INSERT INTO interactions (user_id, post_id, type, created_at)"
        " VALUES ('u3', 'p1', 'view', timestamptz '2026-02-01T00:00:00Z')",
    ):
        ml.incremental.save(tmp_path, "v2", read_dataset(tiny_db, DEFAULT_QUERIES), DEFAULT_QUERIES)
        _execute(tiny_db, change)
        merged, read = ml.incremental.read(tiny_db, DEFAULT_QUERIES, ml.incremental.load(tmp_path, "v2"), 60)
        assert read.mode == "full" and "rows were deleted or committed late" in read.reason
        assert dataset_records(merged) == dataset_records(read_dataset(tiny_db, DEFAULT_QUERIES))

    # A row rewritten in place before the cut is not seen until the next full read (the daily full retrain).
    ml.incremental.save(tmp_path, "v2", read_dataset(tiny_db, DEFAULT_QUERIES), DEFAULT_QUERIES)
    _execute(tiny_db, "UPDATE interactions SET type = 'comment' WHERE user_id = 'u2' AND post_id = 'p1'")
    merged, read = ml.incremental.read(tiny_db, DEFAULT_QUERIES, ml.incremental.load(tmp_path, "v2"), 60)
    assert read.mode == "incremental"
    assert ("u2", "p1", 0) in {row[:3] for row in dataset_records(merged)["interactions"]}  # still a view


def test_a_snapshot_of_other_queries_or_none_means_a_full_read(tiny_db, tmp_path):
    dataset = read_dataset(tiny_db, DEFAULT_QUERIES)
    path = ml.incremental.save(tmp_path, "v1", dataset, DEFAULT_QUERIES)
    ml.incremental.save(tmp_path, "v2", dataset, DEFAULT_QUERIES, keep=("v1",))
    ml.incremental.save(tmp_path, "v3", dataset, DEFAULT_QUERIES)
    assert sorted(p.name for p in tmp_path.glob("*.data.npz")) == ["v3.data.npz"]  # only what is kept

    for snapshot, queries, reason in (
        (ml.incremental.load(tmp_path, "v3"), OWN_QUERIES, "the SQL_* queries changed since the snapshot"),
        (ml.incremental.load(tmp_path, "v1"), DEFAULT_QUERIES, "no data snapshot of the served version"),
    ):
        read_back, read = ml.incremental.read(tiny_db, queries, snapshot, 60)
        assert (read.mode, read.reason, read.rows_read) == ("full", reason, dataset.num_interactions)
        assert dataset_records(read_back) == dataset_records(dataset)

    # Plain arrays, no pickle; a damaged file is no snapshot.
    with np.load(tmp_path / "v3.data.npz", allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    assert path.name == "v1.data.npz"
    (tmp_path / "v3.data.npz").write_bytes(b"not a zip file")
    assert ml.incremental.load(tmp_path, "v3") is None
