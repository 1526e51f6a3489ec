"""Keeping the served model published: the current artifact is published again when Redis lacks it.

Two situations leave the web without lists or without a model although a good artifact is on disk: Redis came
back empty (a restart without persistence), or the pointer names a version this ``MODEL_DIR`` does not hold
(``make clean``, a second checkout sharing Redis, a dropped Docker volume). Both are repaired from the disk,
under the version id the artifact already has, without a training run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import ml.artifact
from common.recs_cache import RecsCache
from tasks import limits, publication
from testing.environment import REDIS_PREFIX
from testing.polling import wait_until
from testing.processes import REPO, start_worker
from testing.service import listed, publish_once, run_train, settings_from


def other_checkout(service_env, tmp_path) -> dict[str, str]:
    """The environment of a second checkout: the same Redis and database, a model directory of its own."""
    return {**service_env, "MODEL_DIR": str(tmp_path / "other-checkout-models")}


def bootstrap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.bootstrap", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def test_nothing_is_done_while_the_pointer_names_a_published_version_on_disk(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    candidate, _, _, _ = publish_once(settings, cache)

    for verify in (False, True):
        assert publication.ensure_published(settings, cache, verify=verify) == {
            "status": "ok",
            "version": candidate.version,
        }
    assert cache.last_training_outcome() is None
    assert not cache.client.exists(cache.lock_key)


def test_an_empty_redis_gets_the_current_artifact_again_under_its_own_version(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    candidate, model, _, _ = publish_once(settings, cache)
    kept = ml.artifact.list_versions(settings.model_dir)
    cache.client.flushdb()  # what a restart without persistence leaves
    updates = cache.subscribe()

    outcome = publication.ensure_published(settings, cache)

    assert outcome["status"] == "republished"
    assert outcome["version"] == candidate.version and outcome["previous_version"] is None
    assert outcome["reason"] == "Redis holds no current version"
    assert outcome["num_users"] == model.num_users and set(outcome["stages"]) == {"precompute", "publish"}
    assert cache.current_version() == candidate.version and cache.is_published(candidate.version)
    assert all(listed(cache, candidate.version, user) is not None for user in model.user_ids)
    assert cache.parse_update(updates.get_message(timeout=5))["version"] == candidate.version
    assert cache.last_training_outcome() == outcome
    assert ml.artifact.list_versions(settings.model_dir) == kept  # nothing was trained
    assert not cache.client.exists(cache.lock_key)


def test_a_pointer_to_a_version_this_model_dir_lacks_is_replaced_by_its_current_artifact(
    loaded_db, cache, service_env, tmp_path
):
    settings = settings_from(service_env)
    mine, _, _, _ = publish_once(settings, cache)
    theirs, _, _, _ = publish_once(settings_from(other_checkout(service_env, tmp_path)), cache)
    assert cache.current_version() == theirs.version
    # The periodic check does not fight another writer on the same Redis; only a verifying one replaces it.
    assert publication.ensure_published(settings, cache) == {"status": "ok", "version": theirs.version}

    outcome = publication.ensure_published(settings, cache, verify=True)

    assert (outcome["status"], outcome["version"], outcome["previous_version"]) == (
        "republished",
        mine.version,
        theirs.version,
    )
    assert theirs.version in outcome["reason"] and "MODEL_DIR" in outcome["reason"]
    assert cache.current_version() == mine.version


def test_nothing_to_republish_when_model_dir_holds_no_loadable_version(loaded_db, cache, service_env, tmp_path):
    theirs, _, _, _ = publish_once(settings_from(other_checkout(service_env, tmp_path)), cache)
    settings = settings_from(service_env)  # an empty MODEL_DIR

    outcome = publication.ensure_published(settings, cache, verify=True)

    assert outcome["status"] == "unservable"
    assert theirs.version in outcome["reason"] and "has no current version" in outcome["reason"]
    assert cache.current_version() == theirs.version
    assert not cache.client.exists(cache.lock_key)


def test_a_corrupt_current_artifact_is_found_only_when_verifying(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    candidate, _, _, _ = publish_once(settings, cache)
    npz = Path(settings.model_dir) / f"{candidate.version}.npz"
    npz.write_bytes(npz.read_bytes()[:-100])

    assert publication.ensure_published(settings, cache)["status"] == "ok"  # the cheap check reads no arrays
    outcome = publication.ensure_published(settings, cache, verify=True)
    assert outcome["status"] == "unservable" and "checksum mismatch" in outcome["reason"]


def test_a_held_training_lock_defers_the_repair_to_the_run_holding_it(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    publish_once(settings, cache)
    cache.client.delete(cache.current_key)
    assert cache.training_lock(limits.lock_ttl(settings)).acquire()

    outcome = publication.ensure_published(settings, cache)

    assert (outcome["status"], outcome["reason"]) == ("skipped", "training already running")
    assert cache.current_version() is None


def test_bootstrap_republishes_when_the_pointer_names_a_version_this_model_dir_lacks(
    loaded_db, cache, service_env, tmp_path
):
    settings = settings_from(service_env)
    mine, _, _, _ = publish_once(settings, cache)
    theirs, _, _, _ = publish_once(settings_from(other_checkout(service_env, tmp_path)), cache)

    done = bootstrap(service_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "republished"' in done.stdout
    assert cache.current_version() == mine.version
    assert ml.artifact.list_versions(settings.model_dir) == [mine.version]  # republished, not retrained
    assert theirs.version != mine.version


def test_bootstrap_trains_when_model_dir_cannot_serve_the_pointer_nor_anything_else(
    loaded_db, cache, service_env, tmp_path
):
    theirs, _, _, _ = publish_once(settings_from(other_checkout(service_env, tmp_path)), cache)
    settings = settings_from(service_env)

    done = bootstrap(service_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "published"' in done.stdout
    (trained,) = ml.artifact.list_versions(settings.model_dir)
    assert cache.current_version() == trained != theirs.version
    assert ml.artifact.current_version(settings.model_dir) == trained


@pytest.mark.parametrize("broker", ["separate", "same Redis"])
def test_a_redis_restarted_empty_is_refilled_from_disk_within_30_s(
    loaded_db, service_env, services, celery_client, private_redis, tmp_path, broker
):
    # The cache on a redis-server of the test's own (restarted below). The broker and results stay on the test
    # Redis, or live on the restarted one too, as under `make run` (CELERY_BROKER_URL defaults to REDIS_URL).
    env = {**service_env, "REDIS_URL": private_redis.url}
    if broker == "same Redis":
        env.update(CELERY_BROKER_URL=private_redis.url, CELERY_RESULT_BACKEND=private_redis.url)
        celery_client.conf.update(broker_url=private_redis.url, result_backend=private_redis.url)
    settings = settings_from(env)
    cache = RecsCache(redis.Redis.from_url(private_redis.url), REDIS_PREFIX)
    worker = start_worker(services, env)
    published = run_train(celery_client)
    version = published["version"]
    users = ml.artifact.load(settings.model_dir, version)[0].user_ids
    beat = services("beat", ["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}"], env)

    private_redis.stop()
    private_redis.start()
    returned = time.monotonic()
    assert cache.current_version() is None

    wait_until(lambda: cache.current_version() == version, 30, "the pointer to be restored")
    refilled_after = time.monotonic() - returned
    assert cache.is_published(version)
    assert all(listed(cache, version, user) is not None for user in users)
    # The republish records its outcome just after the flip that restored the pointer.
    outcome = wait_until(cache.last_training_outcome, 10, "the republish's outcome")
    assert (outcome["status"], outcome["version"]) == ("republished", version)
    assert ml.artifact.list_versions(settings.model_dir) == [version]  # no training run, no new version
    print(f"refilled {len(users)} users' lists {refilled_after:.1f} s after Redis returned empty")

    # The checks that find all well (every 10 s) leave no line in the logs; the one that acted does.
    def checks_run() -> int:
        stats = celery_client.control.inspect(timeout=2).stats() or {}
        return sum(worker.get("total", {}).get("tasks.ensure_published", 0) for worker in stats.values())

    def moves_run() -> int:
        stats = celery_client.control.inspect(timeout=2).stats() or {}
        return sum(worker.get("total", {}).get("tasks.move_impressions", 0) for worker in stats.values())

    wait_until(lambda: checks_run() >= 2, 30, "a check after the refill", interval=1.0)
    assert f"republished version {version}: Redis holds no current version" in worker.log()
    assert worker.log().count("tasks.ensure_published[") == 1  # the succeeded line of the refill
    assert "'status': 'ok'" not in worker.log() and "ensure-published" not in beat.log()
    # Likewise the moves of served pages that found none (beat sends one every 10 s too).
    wait_until(lambda: moves_run() >= 2, 30, "two moves of served pages", interval=1.0)
    assert "tasks.move_impressions[" not in worker.log() and "move-impressions" not in beat.log()


def test_bootstrap_waits_for_a_training_run_holding_the_lock(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    candidate, _, _, _ = publish_once(settings, cache)
    cache.client.delete(cache.current_key)
    assert cache.training_lock(3).acquire()  # a run that ends (here: expires) three seconds from now

    done = bootstrap(service_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("a training run holds the training lock: waiting for it to end") == 1
    assert '"status": "republished"' in done.stdout and cache.current_version() == candidate.version


def test_bootstrap_says_why_when_the_first_run_is_rejected(loaded_db, cache, service_env):
    with loaded_db.cursor() as cur:
        cur.execute("DELETE FROM interactions")
    loaded_db.commit()

    done = bootstrap(service_env)

    assert done.returncode == 1
    assert "Redis holds no current version, and MODEL_DIR has nothing to publish instead" in done.stdout
    assert '"status": "rejected"' in done.stderr and '"reason": "no interactions to learn from"' in done.stderr
    assert "Traceback" not in done.stderr
    assert cache.current_version() is None


def test_an_in_process_bootstrap_of_a_chunked_run_releases_the_lock_once(loaded_db, cache, service_env):
    # More users than PRECOMPUTE_CHUNK_USERS: tasks.train replaces itself with a chord, which Task.apply runs
    # eagerly; its publish_version releases the lock, and the train task must not release it a second time.
    env = {**service_env, "PRECOMPUTE_CHUNK_USERS": "100"}

    done = bootstrap(env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "published"' in done.stdout and '"count": 2' in done.stdout
    assert "had expired before its holder released it" not in done.stderr
    assert not cache.client.exists(cache.lock_key)
