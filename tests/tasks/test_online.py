"""Moving served pages into PostgreSQL: nothing lost while PostgreSQL is away (up to the stream's bound),
nothing written twice; the report task's pipeline end to end on real PostgreSQL and Redis."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import psycopg2
import pytest

import ml.db.connection
from common.config import load_settings
from common.recs_cache import RecsCache, ServedEntry
from tasks import online_pipeline
from testing.environment import REDIS_PREFIX

SCHEMA = "recsvc_online_e_test"


@pytest.fixture
def settings(database_url, redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ONLINE_SCHEMA": SCHEMA}
    env["EXPERIMENT"] = json.dumps(
        {
            "name": "exp",
            "control": "b",
            "variants": [
                {"name": "a", "share": 0.5, "ranking": "production"},
                {"name": "b", "share": 0.5, "ranking": "popular"},
            ],
        }
    )
    return load_settings(env, dotenv=False)


@pytest.fixture
def cache(redis_client):
    return RecsCache(redis_client, REDIS_PREFIX)


@pytest.fixture
def conn(pg_conn):
    yield pg_conn
    pg_conn.rollback()
    with pg_conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    pg_conn.commit()


def _unreachable_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"


def _record(cache, n, start=0, maxlen=50):
    for i in range(start, start + n):  # one page at a time, as the web workers' flushes come
        cache.record_served_pages(
            [ServedEntry(f"u{i}", [f"p{i}", f"q{i}"], 1, "exp", "a", "production", "v1", int(time.time() * 1000))],
            maxlen,
        )


def _rows(conn):
    with conn.cursor() as cur:
        cur.execute(f"SELECT user_id, post_id, rank FROM {SCHEMA}.impressions ORDER BY user_id, rank")
        rows = cur.fetchall()
    conn.rollback()
    return rows


def test_pages_wait_while_postgres_is_away_up_to_the_bound_then_move_once(settings, cache, conn):
    _record(cache, 30)
    with pytest.raises(psycopg2.OperationalError):  # what the task does first; it retries, the pages wait
        ml.db.connection.connect(_unreachable_url())
    assert cache.served_backlog() == 30
    _record(cache, 400, start=30)  # the mover stays down past the bound (50, trimmed in nodes of 100)
    kept = cache.served_backlog()
    assert 50 <= kept <= 150
    result = online_pipeline.move_impressions(settings, cache, conn)
    assert result["pages"] == kept and result["inserted"] == 2 * kept and result["backlog"] == 0
    users = {u for u, _, _ in _rows(conn)}
    assert users == {f"u{i}" for i in range(430 - kept, 430)}  # the newest pages survived, the oldest dropped
    assert online_pipeline.move_impressions(settings, cache, conn)["pages"] == 0


def test_a_batch_whose_mover_died_is_moved_again_without_duplicates(settings, cache, conn):
    _record(cache, 5)
    pending = cache.read_served_pages(100)  # a mover read them, inserted and committed, then died before XACK
    from ml import online

    online.create_online_schema(conn, SCHEMA)
    online.insert_impressions(conn, SCHEMA, [r for p in pending for r in online_pipeline.impressions_of(p)])
    conn.commit()
    _record(cache, 3, start=5)
    first = online_pipeline.move_impressions(settings, cache, conn)  # the pending five first, then the new three
    assert (first["pages"], first["inserted"]) == (5, 0)
    second = online_pipeline.move_impressions(settings, cache, conn)
    assert (second["pages"], second["inserted"]) == (3, 6)
    assert len(_rows(conn)) == 16 and cache.served_backlog() == 0


def test_the_report_joins_moved_impressions_with_interactions(settings, cache, conn):
    _record(cache, 4)
    online_pipeline.move_impressions(settings, cache, conn)
    with conn.cursor() as cur:  # after the impressions: clicks on what was shown
        cur.execute("CREATE TABLE interactions (user_id text, post_id text, type text, created_at timestamptz)")
        cur.execute("INSERT INTO interactions VALUES ('u1', 'p1', 'like', now()), ('u2', 'q2', 'view', now())")
        cur.execute("INSERT INTO interactions VALUES ('u3', 'p3', 'like', now() - interval '1 hour')")  # before
    conn.commit()
    report = online_pipeline.online_report(settings, cache, conn, now=datetime.now(UTC))
    assert cache.online_report()["quality"] == report["quality"]
    assert report["quality"]["daily"][0]["impressions"] == 8 and report["quality"]["daily"][0]["clicks"] == 2
    (today,) = report["experiment"]["days"]
    (a,) = today["variants"]
    assert (a["variant"], a["impressions"], a["users"], a["clicks"]["like"], a["clicks"]["view"]) == ("a", 8, 4, 1, 1)
    summary = online_pipeline.summary(report)
    assert summary["variants"]["a"]["ctr"] == 0.25 and summary["alert"] is False
