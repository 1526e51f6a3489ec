"""End to end with real processes: a Celery worker and beat retrain on schedule against PostgreSQL and Redis."""

from __future__ import annotations

import pytest

import ml.artifact
from tasks import outcomes
from testing.polling import wait_until
from testing.processes import start_worker
from testing.service import listed, next_update, popular_listed, settings_from

NEW_USER = "fan-who-just-joined"


def add_user_with_interactions(conn, user_id: str, posts: int) -> None:
    """Insert a user who interacted with ``posts`` existing posts, as the NestJS backend would."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO users (id, role, created_at) VALUES (%s, 'fan', now())", (user_id,))
        cur.execute(
            "INSERT INTO interactions (user_id, post_id, type, created_at)"
            " SELECT %s, id, 'like', now() FROM posts ORDER BY id LIMIT %s",
            (user_id, posts),
        )
    conn.commit()


def user_ids(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM users")
        return [row[0] for row in cur.fetchall()]


def test_beat_retrains_and_publishes_new_versions(loaded_db, cache, service_env, services, celery_client, tmp_path):
    env = {**service_env, "TRAIN_INTERVAL_SECONDS": "3", "RECS_RETAIN_SECONDS": "2", "QUALITY_GATE_MARGIN": "0.5"}
    settings = settings_from(env)
    updates = cache.subscribe()
    start_worker(services, env, concurrency=2)
    beat = services("beat", ["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}"], env)

    # The first scheduled run publishes: message, pointer, every user's list, the popularity list.
    first = next_update(cache, updates, timeout=60)
    version = first["version"]
    users = user_ids(loaded_db)
    assert first["num_users"] == len(users)
    assert version in ml.artifact.list_versions(settings.model_dir)
    assert cache.is_published(version)
    assert all(listed(cache, version, user_id) is not None for user_id in users)
    assert popular_listed(cache, version) is not None

    # New interactions reach a later version; the pointer follows it, on disk too.
    add_user_with_interactions(loaded_db, NEW_USER, posts=12)

    def version_with_new_user():
        update = next_update(cache, updates, timeout=30)
        return update["version"] if listed(cache, update["version"], NEW_USER) is not None else None

    newer = wait_until(version_with_new_user, 60, "a version that knows the new user")
    assert newer > version
    assert wait_until(lambda: ml.artifact.current_version(settings.model_dir) >= newer, 10, "the on-disk pointer")

    # Superseded versions expire RECS_RETAIN_SECONDS after they stop being current.
    wait_until(lambda: not cache.client.exists(*cache.recs_keys(version), cache.meta_key(version)), 20, "expiry")

    beat.stop()
    wait_until(lambda: not cache.client.exists(cache.lock_key), 60, "the last scheduled run to end")

    # Two runs at once (forced: the data is that of the last scheduled run): the second finds the lock held.
    runs = [celery_client.send_task("tasks.train", kwargs={"force": True}) for _ in range(2)]
    results = sorted((run.get(timeout=90) for run in runs), key=lambda result: result["status"])
    assert [result["status"] for result in results] == ["published", "skipped"]
    published, skipped = results
    assert skipped["reason"] == "training already running"
    assert set(published["stages"]) == {"load", "evaluate", "fit", "artifact", "similar", "precompute", "publish"}
    assert published["num_users"] == len(users) + 1
    assert published["metrics"]["model"]["precision@10"] >= published["metrics"]["popularity"]["precision@10"]
    assert cache.current_version() == published["version"]
    assert cache.last_training_outcome()["version"] == published["version"]
    assert runs[0].name == "tasks.train"  # result_extended: the result backend knows what ran

    # Data that cannot yield a model is refused through the worker too; the current model stays.
    with loaded_db.cursor() as cur:
        cur.execute("DELETE FROM interactions")
    loaded_db.commit()
    # A refusal ends as a task FAILURE naming the reason (Flower's Failed filter finds it), its outcome recorded.
    refused = celery_client.send_task("tasks.train", kwargs={"force": True})
    with pytest.raises(outcomes.RunRejected, match="^no interactions to learn from$"):
        refused.get(timeout=90)
    assert refused.state == "FAILURE"
    assert cache.current_version() == published["version"]
    recorded = cache.last_training_outcome()
    assert (recorded["status"], recorded["reason"]) == ("rejected", "no interactions to learn from")
