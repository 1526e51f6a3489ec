"""The live refresh (tasks.refresh_pipeline) against real PostgreSQL, Redis and a published model."""

from __future__ import annotations

import dataclasses
import json

import psycopg2
import pytest
from redis import Redis

import ml.artifact
import ml.db.connection
from common.config import ConfigError, load_settings
from common.recs_cache import RecsCache
from tasks import refresh_pipeline
from tasks.training import RETRY_ON
from testing.processes import free_port
from testing.service import publish_once, settings_from


@pytest.fixture
def settings(service_env, loaded_db):
    return settings_from(service_env)


@pytest.fixture
def published(settings, cache):
    """The demo data trained and published; returns the model."""
    _, model, _, _ = publish_once(settings, cache)
    return model


def run(settings, cache) -> dict:
    conn = ml.db.connection.connect(settings.database_url)
    try:
        return refresh_pipeline.refresh(settings, cache, conn)
    finally:
        conn.close()


def execute(conn, statement: str, *params) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(statement, params)


def a_community(conn) -> str:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM communities ORDER BY id LIMIT 1")
        return cur.fetchone()[0]


def test_without_a_model_nothing_happens(settings, cache):
    assert run(settings, cache)["status"] == "no-model"
    assert cache.live_state() is None


def test_first_run_starts_at_the_models_snapshot_and_finds_nothing_known(settings, cache, published):
    result = run(settings, cache)
    assert result["status"] == "published" and result["new_model"] is True
    assert result["new_posts"] == 0 and result["changed_users"] == 0
    assert cache.live_pool(result["generation"]) == []
    state = cache.live_state()
    assert state.model_version == cache.current_version()
    again = run(settings, cache)
    assert again["status"] == "unchanged" and again["generation"] == result["generation"]


def test_a_new_post_enters_the_pool_and_its_author_has_seen_it(settings, cache, published, loaded_db):
    run(settings, cache)
    community = a_community(loaded_db)
    author = published.user_ids[0]
    execute(
        loaded_db,
        "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES (%s, %s, %s, %s, now())",
        "fresh-1", community, author, ["dance", "live"],
    )  # fmt: skip
    result = run(settings, cache)
    assert result["status"] == "published" and result["new_posts"] == 1
    pool = cache.live_pool(result["generation"])
    assert [(p[0], p[1], p[2]) for p in pool] == [("fresh-1", ("dance", "live"), community)]
    assert "fresh-1" in cache.exclusions(author)[0]
    # Read again within the lookback: recognised, not added twice, nothing republished.
    again = run(settings, cache)
    assert again["read"]["posts"] == 1 and again["new_posts"] == 0 and again["status"] == "unchanged"
    assert len(cache.live_pool(cache.live_state().generation)) == 1


def test_a_row_dated_far_ahead_waits_for_its_time_and_holds_no_watermark(settings, cache, published, loaded_db):
    """A writer's clock in the year 9999 must not move the watermark there: nothing after it would be read."""
    run(settings, cache)
    community, author = a_community(loaded_db), published.user_ids[0]
    insert = "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES (%s, %s, %s, %s, {})"
    execute(loaded_db, insert.format("'9999-12-31T23:59:59Z'"), "from-9999", community, author, [])
    assert run(settings, cache)["new_posts"] == 0
    execute(loaded_db, insert.format("now()"), "fresh-2", community, author, ["dance"])
    result = run(settings, cache)
    assert result["new_posts"] == 1 and [p[0] for p in cache.live_pool(result["generation"])] == ["fresh-2"]
    assert not cache.live_state().watermarks["posts"].startswith("9999")


def test_new_user_and_its_later_follows_become_live(settings, cache, published, loaded_db):
    run(settings, cache)
    community = a_community(loaded_db)
    execute(loaded_db, "INSERT INTO users (id, role, created_at) VALUES ('newbie', 'fan', now())")
    first = run(settings, cache)
    assert first["changed_users"] == 1
    assert cache.live_user("newbie", first["generation"]) == {"role": "fan", "follows": []}
    execute(
        loaded_db, "INSERT INTO follows (user_id, community_id, created_at) VALUES ('newbie', %s, now())", community
    )
    second = run(settings, cache)
    assert second["changed_users"] == 1
    assert cache.live_user("newbie", second["generation"]) == {"role": "fan", "follows": [community]}
    # A scroll pinned to the first generation still sees the features of then.
    assert cache.live_user("newbie", first["generation"]) == {"role": "fan", "follows": []}


def test_fresh_interactions_are_recorded_as_seen(settings, cache, published, loaded_db):
    run(settings, cache)
    user, post = published.user_ids[1], published.item_ids[2]
    execute(
        loaded_db,
        "INSERT INTO interactions (user_id, post_id, type, created_at) VALUES (%s, %s, 'like', now())",
        user, post,
    )  # fmt: skip
    result = run(settings, cache)
    # Interactions need no new generation (pages read seen: directly); the watermark moves all the same.
    assert result["interactions"] >= 1 and result["status"] == "unchanged"
    assert cache.live_state().watermarks["interactions"] == result["watermarks"]["interactions"]
    seen = cache.exclusions(user)[0]
    assert post in seen
    arrival = seen[post]
    run(settings, cache)  # read again within the lookback: the first arrival stays
    assert cache.exclusions(user)[0][post] == arrival


def test_a_new_model_rebuilds_the_pool_and_drops_the_users_it_knows(settings, cache, published, loaded_db):
    run(settings, cache)
    community = a_community(loaded_db)
    execute(
        loaded_db,
        "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES ('fresh-2', %s, NULL, '{}', now())",
        community,
    )  # fmt: skip
    execute(loaded_db, "INSERT INTO users (id, role, created_at) VALUES ('newbie-2', 'fan', now())")
    before = run(settings, cache)
    assert before["new_posts"] == 1 and "newbie-2" in cache.live_user_ids()
    candidate, _, _, _ = publish_once(settings, cache)  # the new model knows both
    metadata = ml.artifact.read_metadata(settings.model_dir, candidate.version)
    after = run(settings, cache)
    assert after["new_model"] is True and after["model_version"] == candidate.version
    assert after["dropped_users"] == 1
    assert cache.live_pool(after["generation"]) == []
    assert cache.live_user("newbie-2", after["generation"]) is None
    start = refresh_pipeline.snapshot_watermark(metadata)
    assert all(refresh_pipeline._parse(mark) >= start for mark in after["watermarks"].values())


def test_custom_sql_queries_are_wrapped_not_edited(settings, cache, published, loaded_db):
    """A deployment's own schema: a view with other column names, renamed by the SQL_* query."""
    execute(
        loaded_db,
        "CREATE VIEW app_posts AS SELECT id AS post_key, community_id AS board, author_id AS writer,"
        " array_to_string(tags, '|') AS labels, created_at::text AS written FROM posts",
    )
    queries = dict(settings.sql_queries)
    queries["posts"] = (
        "SELECT post_key AS id, board AS community_id, writer AS author_id, labels AS tags, written AS created_at "
        "FROM app_posts;"
    )
    custom = dataclasses.replace(settings, sql_queries=queries)
    run(custom, cache)
    community = a_community(loaded_db)
    execute(
        loaded_db,
        "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES ('fresh-3', %s, NULL, %s, now())",
        community, ["a", "b"],
    )  # fmt: skip
    result = run(custom, cache)
    assert result["new_posts"] == 1
    assert cache.live_pool(result["generation"])[0][:3] == ("fresh-3", ("a", "b"), community)


def test_a_failed_read_leaves_the_previous_state(settings, cache, published, loaded_db):
    first = run(settings, cache)
    execute(
        loaded_db,
        "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES ('fresh-4', %s, NULL, '{}', now())",
        a_community(loaded_db),
    )  # fmt: skip
    broken = dataclasses.replace(settings, sql_queries={**settings.sql_queries, "users": "SELECT nope FROM users"})
    with pytest.raises(psycopg2.Error):
        run(broken, cache)
    state = cache.live_state()
    assert state.generation == first["generation"] and json.dumps(state.watermarks) == json.dumps(first["watermarks"])
    assert run(settings, cache)["new_posts"] == 1


def test_the_artifact_records_where_the_models_data_end(settings, cache, published, loaded_db):
    metadata = ml.artifact.read_metadata(settings.model_dir, cache.current_version())
    with loaded_db, loaded_db.cursor() as cur:
        cur.execute("SELECT date_trunc('second', max(created_at)) FROM posts")
        newest_post = cur.fetchone()[0]
    assert refresh_pipeline._parse(metadata["data_snapshot"]["posts"]) == newest_post
    assert metadata["data_snapshot"]["interactions"] == metadata["data_window"]["last_interaction"]


def test_the_interval_is_configured_and_checked():
    assert load_settings({}, dotenv=False).refresh_interval_seconds == 30.0
    assert load_settings({"REFRESH_INTERVAL_SECONDS": "2"}, dotenv=False).refresh_interval_seconds == 2.0
    for bad in ("0", "abc", "-5"):
        with pytest.raises(ConfigError, match="REFRESH_INTERVAL_SECONDS"):
            load_settings({"REFRESH_INTERVAL_SECONDS": bad}, dotenv=False)
    with pytest.raises(ConfigError, match="REFRESH_LOOKBACK_SECONDS"):
        load_settings({"REFRESH_LOOKBACK_SECONDS": "-1"}, dotenv=False)


def test_redis_away_fails_the_run_with_an_error_the_task_retries(settings, cache, published):
    first = run(settings, cache)
    away = RecsCache(Redis(port=free_port(), socket_connect_timeout=1), cache.prefix)
    with pytest.raises(RETRY_ON):
        run(settings, away)
    assert cache.live_state().generation == first["generation"]


def test_a_backlog_beyond_the_row_limit_is_worked_off_even_within_the_lookback(
    settings, cache, published, loaded_db, monkeypatch
):
    """More new rows than one run reads, all inside the lookback window: later runs still move forward."""
    run(settings, cache)
    monkeypatch.setattr(refresh_pipeline, "MAX_ROWS_PER_TABLE", 3)
    community = a_community(loaded_db)
    for i in range(7):
        execute(
            loaded_db,
            "INSERT INTO posts (id, community_id, author_id, tags, created_at)"
            " VALUES (%s, %s, NULL, '{}', now() + %s * interval '1 millisecond')",
            f"backlog-{i}", community, i,
        )  # fmt: skip
    for _ in range(3):
        result = run(settings, cache)
    pooled = {post[0] for post in cache.live_pool(result["generation"])}
    assert pooled == {f"backlog-{i}" for i in range(7)}
