"""Scale out: above PRECOMPUTE_CHUNK_USERS the precompute is shared by every worker process as chunk tasks."""

from __future__ import annotations

import numpy as np
from celery import chord

import ml.artifact
import ml.db.load
import ml.db.schema
from testing.polling import wait_until
from testing.processes import start_worker
from testing.service import listed, run_train, settings_from, write_demo


def test_two_workers_share_the_precompute_and_the_version_flips_once(
    pg_conn, cache, service_env, services, celery_client, tmp_path
):
    ml.db.schema.create_schema(pg_conn)
    ml.db.load.load_dataset_dir(pg_conn, write_demo(tmp_path / "demo", users=1000, posts=300, interactions=7000))
    pg_conn.commit()
    env = {**service_env, "PRECOMPUTE_CHUNK_USERS": "100"}
    settings = settings_from(env)
    updates = cache.subscribe()
    start_worker(services, env, name="w1")
    start_worker(services, env, name="w2")

    result = run_train(celery_client)

    assert result["status"] == "published", result
    assert result["chunks"]["count"] == 10
    assert [worker.split("@")[0] for worker in result["chunks"]["workers"]] == ["w1", "w2"]
    assert set(result["stages"]) == {"load", "evaluate", "fit", "artifact", "similar", "precompute", "publish"}
    version = result["version"]
    assert cache.current_version() == version
    assert ml.artifact.current_version(settings.model_dir) == version
    model, _ = ml.artifact.load(settings.model_dir, version)
    expected_items, _ = model.top_k(np.arange(model.num_users), settings.top_k)
    for user, user_id in enumerate(model.user_ids):
        items, _ = listed(cache, version, user_id)
        np.testing.assert_array_equal(items, expected_items[user][expected_items[user] >= 0])
    # One announcement, after the flip; the run's lock is released by the publishing task.
    announced = [cache.parse_update(updates.get_message(timeout=1)) for _ in range(3)]
    assert [update["version"] for update in announced if update] == [version]
    wait_until(lambda: not cache.client.exists(cache.lock_key), 5, "the lock to be released")
    assert cache.last_training_outcome()["version"] == version


def test_failed_chunk_fails_the_run_frees_the_lock_and_says_why(cache, service_env, services, celery_client):
    # A chunked run whose version cannot be loaded: its chunk fails (no retry for a missing artifact), the
    # chord fails, and the errback frees the run's lock at once instead of leaving it to its TTL.
    run_id, missing_version = "run-with-a-missing-artifact", "20200101T000000Z-deadbeef"
    assert cache.training_lock(600).acquire(token=run_id)
    start_worker(services, service_env)
    chunks = [celery_client.signature("tasks.precompute_chunk", args=(missing_version, 0, 100))]
    candidate = {"version": missing_version, "created_at": "2020-01-01T00:00:00Z", "num_users": 100,
                 "num_items": 10, "num_interactions": 1000, "metrics": {}}  # fmt: skip
    publish = celery_client.signature(
        "tasks.publish_version",
        kwargs={"candidate": candidate, "stages": {}, "dispatched_at": 0.0, "lock_token": run_id},
    ).on_error(celery_client.signature("tasks.abandon_run", kwargs={"lock_token": run_id}))

    result = chord(chunks, app=celery_client)(publish)
    result.get(timeout=60, propagate=False)

    assert result.failed() and "ArtifactError" in repr(result.result)
    wait_until(lambda: not cache.client.exists(cache.lock_key), 10, "the errback to free the lock")
    outcome = cache.last_training_outcome()
    assert outcome["status"] == "failed"
    assert run_id in outcome["reason"] and "ArtifactError" in outcome["reason"]
    assert cache.current_version() is None
