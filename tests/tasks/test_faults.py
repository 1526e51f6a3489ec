"""Faults with real processes: unreachable PostgreSQL or Redis, and a worker killed in the middle of a run.

In every case the version being served stays current (in Redis and on disk), nothing half-written becomes
visible, and the training lock frees itself so that a later run publishes.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

import ml.artifact
import ml.csv_files
import ml.db.connection
import ml.db.load
import ml.db.schema
from tasks import limits
from testing.polling import wait_until
from testing.processes import free_port, start_worker
from testing.service import listed, publish_once, run_train, settings_from, write_demo


@pytest.fixture(scope="module")
def many_users_dir(tmp_path_factory) -> Path:
    """A demo dataset with enough users for 15 precompute chunks of 100."""
    return write_demo(tmp_path_factory.mktemp("many-users"), users=1500, posts=300, interactions=9000)


def model_files(model_dir: str) -> list[str]:
    return sorted(path.name for path in Path(model_dir).iterdir())


@pytest.mark.parametrize("unreachable", ["DATABASE_URL", "REDIS_URL"])
def test_unreachable_store_retries_then_fails_cleanly(
    loaded_db, cache, service_env, services, celery_client, unreachable
):
    settings = settings_from(service_env)
    current, _, _, _ = publish_once(settings, cache)
    files = model_files(settings.model_dir)
    scheme = "postgresql://postgres@" if unreachable == "DATABASE_URL" else "redis://"
    worker = start_worker(services, {**service_env, unreachable: f"{scheme}127.0.0.1:{free_port()}/0"})

    run = celery_client.send_task("tasks.train", kwargs={"force": True})
    run.get(timeout=120, propagate=False)

    assert run.failed()
    # ml.db.connection.ConnectError is psycopg2's OperationalError said in one line (and retried as one).
    assert ("ConnectError" if unreachable == "DATABASE_URL" else "ConnectionError") in repr(run.result)
    # 2, 4 and 8 s, never drawn shorter (a jittered draw could spend all three retries within a second)
    assert re.findall(r"tasks\.train\[[^]]+\] retry: Retry in (\d+)s", worker.log()) == ["2", "4", "8"]
    assert cache.current_version() == current.version
    assert ml.artifact.current_version(settings.model_dir) == current.version
    assert model_files(settings.model_dir) == files
    assert not cache.client.exists(cache.lock_key)
    if unreachable == "DATABASE_URL":  # with Redis down there is nowhere to record it but the task result
        # Celery stores the task's failure before it calls on_failure, which records the outcome.
        outcome = wait_until(cache.last_training_outcome, 10, "the failure to be recorded")
        assert outcome["status"] == "failed" and "no PostgreSQL server answers at 127.0.0.1:" in outcome["reason"]


def test_worker_killed_in_fit_changes_nothing_and_frees_the_lock(
    loaded_db, cache, service_env, services, celery_client
):
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "10"}
    settings = settings_from(env)
    current, _, _, _ = publish_once(settings, cache)
    files = model_files(settings.model_dir)
    slow = start_worker(services, {**env, "LIGHTFM_EPOCHS": "2000"})

    celery_client.send_task("tasks.train", kwargs={"force": True})
    slow.wait_for_log(r"training stage fit started")
    slow.signal(signal.SIGKILL)

    assert cache.current_version() == current.version
    assert ml.artifact.current_version(settings.model_dir) == current.version
    assert model_files(settings.model_dir) == files  # no new version, no temporary file
    assert 0 < cache.client.ttl(cache.lock_key) <= limits.lock_ttl(settings)
    start_worker(services, env, name="w2")
    wait_until(lambda: not cache.client.exists(cache.lock_key), limits.lock_ttl(settings) + 5, "the lock's TTL")

    result = run_train(celery_client)
    assert result["status"] == "published" and result["version"] > current.version
    assert cache.current_version() == result["version"]


def test_worker_killed_in_chunked_precompute_never_publishes_a_partial_version(
    pg_conn, many_users_dir, cache, service_env, services, celery_client
):
    ml.db.schema.create_schema(pg_conn)
    ml.db.load.load_dataset_dir(pg_conn, many_users_dir)
    pg_conn.commit()
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "10", "PRECOMPUTE_CHUNK_USERS": "100"}
    settings = settings_from(env)
    current, _, _, _ = publish_once(settings, cache)
    worker = start_worker(services, env)

    celery_client.send_task("tasks.train", kwargs={"force": True})
    match = worker.wait_for_log(r"tasks\.precompute_chunk\[[^]]+\] succeeded")
    worker.signal(signal.SIGKILL)

    staged = re.search(r"precomputing \d+ users of (\S+) in 15 chunk tasks", worker.log()[: match.end()]).group(1)
    assert cache.current_version() == current.version
    assert ml.artifact.current_version(settings.model_dir) == current.version
    assert not cache.is_published(staged)
    ttls = {cache.client.ttl(key) for key in cache.recs_keys(staged)} - {-2}  # the buckets written so far
    assert ttls and all(0 < ttl <= limits.lock_ttl(settings) for ttl in ttls)
    # A new worker takes the chunks still queued. If the killed worker took none down with it (killed between
    # two chunks), the chord completes and the run publishes a complete version while it still holds the lock;
    # if it did, the chord never completes and the version never publishes. Never a partial version.
    start_worker(services, env, name="w2")
    wait_until(lambda: not cache.client.exists(cache.lock_key), limits.lock_ttl(settings) + 5, "the lock's TTL")
    if cache.is_published(staged):
        users = ml.csv_files.read_dataset_dir(many_users_dir).user_ids
        assert all(listed(cache, staged, user) is not None for user in users)
    else:
        assert cache.current_version() == current.version

    result = run_train(celery_client)
    assert result["status"] == "published" and result["version"] > staged
    assert cache.current_version() == result["version"]


def test_run_over_its_time_limit_stops_frees_the_lock_and_keeps_the_current_model(
    loaded_db, cache, service_env, services, celery_client
):
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "10"}
    settings = settings_from(env)
    current, _, _, _ = publish_once(settings, cache)
    files = model_files(settings.model_dir)
    start_worker(services, {**env, "LIGHTFM_EPOCHS": "10000"})

    run = celery_client.send_task("tasks.train", kwargs={"force": True})
    run.get(timeout=60, propagate=False)

    assert run.failed() and "SoftTimeLimitExceeded" in repr(run.result)
    assert not cache.client.exists(cache.lock_key)
    outcome = wait_until(cache.last_training_outcome, 10, "the failure to be recorded")
    assert outcome["status"] == "failed"
    assert outcome["reason"] == "the run took longer than TRAIN_TIME_LIMIT_SECONDS (10 s)"
    assert cache.current_version() == current.version
    assert model_files(settings.model_dir) == files
