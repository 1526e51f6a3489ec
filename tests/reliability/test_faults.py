"""Fault injection with real processes: what the existing fault tests do not cover (see docs/RELIABILITY.md).

Each test injects one fault and states what must hold: requests keep being answered (from the cache, from
the model a worker holds, or a clear 503), no partial artifact or half-written version is ever served, the
next training run recovers by itself, and nothing already published is lost.

Serving faults run the app under real gunicorn; training faults run a real ``celery -A tasks worker`` on
the pipeline tests' demo data (fixtures of ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import requests

import ml.artifact
from common.recs_cache import RecsCache
from ml.errors import ArtifactError
from tasks import limits
from testing.environment import ADMIN_TOKEN, TOP_K, server_env
from testing.factories import random_model
from testing.polling import poll, wait_until
from testing.processes import GunicornServer, child_pids, start_worker
from testing.service import publish, publish_once, run_train, settings_from

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USERS = [f"user-{u}" for u in range(50)]


# --- serving: gunicorn while bad things are published ---


@pytest.fixture
def gunicorn(redis_url, tmp_path):
    """Start gunicorn (2 workers) on ``model_dir`` once a first version is published; stopped cleanly after."""
    started = []

    def start(model_dir: Path) -> GunicornServer:
        server = GunicornServer(server_env(redis_url, model_dir), workers=2, log_path=tmp_path / "gunicorn.log")
        started.append(server.start())
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.log()[-3000:]


def pages(server: GunicornServer, count: int = 20) -> list[dict]:
    """``count`` pages of known users, each on a new connection (so both workers answer)."""
    answers = []
    for i in range(count):
        response = requests.get(f"{server.url}/recommendations/{USERS[i % len(USERS)]}", params={"limit": 5})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def _rewrite_checksum(model_dir: Path, version: str, npz: bytes, arrays: dict | None = None) -> None:
    """Replace a version's .npz by ``npz`` and make its .json agree (checksum, and ``arrays`` if given)."""
    (model_dir / f"{version}.npz").write_bytes(npz)
    meta_path = model_dir / f"{version}.json"
    document = json.loads(meta_path.read_text())
    document["sha256"] = hashlib.sha256(npz).hexdigest()
    if arrays is not None:
        document["arrays"] = arrays
    meta_path.write_text(json.dumps(document))


class PickleBomb:
    """An object whose unpickling creates a marker file: proof, if it appears, that an artifact was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def damage(kind: str, model_dir: Path, marker: Path):
    """A ``before_publish`` hook that spoils the version's files in one of several ways."""

    def spoil(version: str) -> None:
        npz_path, json_path = model_dir / f"{version}.npz", model_dir / f"{version}.json"
        if kind == "corrupt npz":
            npz_path.write_bytes(os.urandom(len(npz_path.read_bytes())))
        elif kind == "truncated npz":
            npz_path.write_bytes(npz_path.read_bytes()[: len(npz_path.read_bytes()) // 2])
        elif kind == "truncated json":
            json_path.write_text(json_path.read_text()[:100])
        elif kind == "foreign npz, valid checksum":
            buffer = io.BytesIO()
            np.savez(buffer, weights=np.ones((3, 3)))
            _rewrite_checksum(model_dir, version, buffer.getvalue(), {"weights": {"shape": [3, 3], "dtype": "<f8"}})
        elif kind == "pickled object array, valid checksum":
            with np.load(npz_path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            arrays["user_ids"] = np.array([PickleBomb(marker)], dtype=object)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            specs = {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()}
            _rewrite_checksum(model_dir, version, buffer.getvalue(), specs)
        else:
            raise AssertionError(kind)

    return spoil


BAD_ARTIFACTS = [
    "corrupt npz",
    "truncated npz",
    "truncated json",
    "foreign npz, valid checksum",
    "pickled object array, valid checksum",
]


@pytest.mark.parametrize("kind", BAD_ARTIFACTS)
def test_a_bad_artifact_is_refused_while_serving_and_the_next_good_one_is_loaded(kind, cache, gunicorn, tmp_path):
    model_dir, marker = tmp_path / "models", tmp_path / "UNPICKLED"
    first = publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    server = gunicorn(model_dir)

    spoiled = []
    spoil = damage(kind, model_dir, marker)

    def spoil_and_remember(version: str) -> None:
        spoil(version)
        spoiled.append(version)

    bad_model = random_model(num_users=50, num_items=80, seed=2)
    try:
        publish(cache, model_dir, bad_model, top_k=TOP_K, before_publish=spoil_and_remember)
    except ArtifactError:
        assert kind == "truncated json"  # set_current refuses it on disk; Redis already names it
    bad = spoiled[0]

    def both_refused():
        statuses = [requests.get(f"{server.url}/admin/model-status", headers=ADMIN).json() for _ in range(8)]
        errors = {s["worker_pid"]: (s["last_load_error"] or {}).get("version") for s in statuses}
        return len(errors) == 2 and set(errors.values()) == {bad} and statuses

    statuses = poll(both_refused, 10, 0.2)
    assert statuses, "the workers did not report the failed load of the bad version"
    assert {(s["version"], s["cache_version"]) for s in statuses} == {(first, bad)}
    answers = pages(server)
    assert {(a["model_version"], a["source"]) for a in answers} == {(first, "cache")}
    assert requests.get(f"{server.url}/health").json()["status"] == "ok"
    assert not marker.exists(), "the artifact was unpickled"

    good = publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=3), top_k=TOP_K)
    assert poll(lambda: server.holds(good), 10, 0.1), server.worker_versions()
    assert {a["model_version"] for a in pages(server)} == {good}
    assert not marker.exists()


def test_a_lost_update_message_is_caught_by_polling_the_pointer(cache, gunicorn, tmp_path):
    model_dir = tmp_path / "models"
    publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    server = gunicorn(model_dir)
    assert cache.client.pubsub_numsub(cache.channel)[0][1] == 2  # one reloader per worker, listening

    subscriber = cache.subscribe()
    try:
        version = _publish_and_drop_message(cache, model_dir, random_model(num_users=50, num_items=80, seed=2))
        flipped = time.monotonic()
        assert cache.parse_update(subscriber.get_message(timeout=0.5)) is None  # nothing was announced
    finally:
        subscriber.close()
    assert poll(lambda: server.holds(version), 6, 0.1), server.worker_versions()
    assert time.monotonic() - flipped < 5  # the reloaders poll the pointer every 2 s
    assert {a["model_version"] for a in pages(server)} == {version}


def _publish_and_drop_message(cache: RecsCache, model_dir: Path, model) -> str:
    """Stage and write every list, then flip the pointer exactly as the publish script does, minus PUBLISH."""
    version = ml.artifact.save(model, model_dir, {"metrics": {"ndcg@10": 0.25}}, make_current=False)
    items = list(zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True))
    meta = {"created_at": "2026-11-26", "num_users": model.num_users, "num_items": model.num_items}
    cache.stage_version(version, items, model.popular_items, model.popular_scores, meta, 600)
    ranked, scores = model.top_k(np.arange(model.num_users), TOP_K)
    cache.write_user_lists(version, model.user_ids, ranked, scores, 600)
    previous = cache.current_version()
    pipe = cache.client.pipeline(transaction=True)
    for key in cache.recs_keys(version):
        pipe.persist(key)
    pipe.persist(cache.meta_key(version))
    pipe.hset(cache.meta_key(version), "complete", "1").set(cache.current_key, version)
    for key in (cache.meta_key(previous), *cache.recs_keys(previous)):
        pipe.expire(key, 1800)
    pipe.execute()
    ml.artifact.set_current(model_dir, version)
    return version


@pytest.mark.parametrize("missing", ["user lists", "user lists and item metadata"])
def test_a_pointer_to_a_version_without_lists_is_served_from_the_model(missing, cache, gunicorn, tmp_path):
    model_dir = tmp_path / "models"
    publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    server = gunicorn(model_dir)
    newer = random_model(num_users=50, num_items=80, seed=2)
    version = publish(cache, model_dir, newer, top_k=TOP_K, skip_users=tuple(USERS))
    if missing == "user lists and item metadata":
        cache.client.delete(cache.meta_key(version), *cache.recs_keys(version))
    assert poll(lambda: server.holds(version), 5, 0.05)

    answers = pages(server, 30)
    assert {(a["model_version"], a["source"], a["strategy"]) for a in answers} == {(version, "model", "personalized")}
    expected = [newer.item_ids[i] for i in newer.top_k([newer.user_index("user-0")], TOP_K)[0][0][:5]]
    assert [r["post_id"] for r in answers[0]["recommendations"]] == expected
    # Unknown users get the popularity list (from the version's metadata, or the model's if that is gone too).
    unknown = requests.get(f"{server.url}/recommendations/someone-new")
    assert unknown.status_code == 200 and unknown.json()["strategy"] == "popular"


# --- training: a real Celery worker meets a fault ---


def model_files(model_dir: str) -> list[str]:
    return sorted(path.name for path in Path(model_dir).iterdir())


def pool_child(worker) -> int:
    """The pid of a ``--concurrency=1`` worker's pool process (where tasks run)."""
    return wait_until(lambda: child_pids(worker.popen.pid), 10, "a pool child")[0]


def delay_fsync(pid: int, nth: int) -> subprocess.Popen:
    """Make ``pid``'s ``nth`` fsync (and those after it) hang for a minute, with strace's fault injection.

    Skips the test where strace is missing or may not trace (no ptrace permission, as in some containers).
    """
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    strace = subprocess.Popen(
        ["strace", "-qq", "-o", "/dev/null", "-p", str(pid), "-e", "trace=fsync",
         "-e", f"inject=fsync:delay_enter=60000000:when={nth}+"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)  # attached
    if strace.poll() is not None:
        pytest.skip(f"strace cannot trace here: {strace.stderr.read().decode().strip()}")
    return strace


def assert_pointer_on_a_complete_version(cache: RecsCache, model_dir: str) -> str:
    """The Redis pointer names a published version whose artifact loads and which has every user's list."""
    version = cache.current_version()
    assert version is not None and cache.is_published(version)
    model, _ = ml.artifact.load(model_dir, version)
    assert sum(cache.client.hlen(key) for key in cache.recs_keys(version)) == model.num_users
    for listed in ml.artifact.list_versions(model_dir):  # every version a reader can see is whole
        ml.artifact.load(model_dir, listed)
    return version


def terminate_sleeping_queries(conn) -> None:
    """End the killed run's query (a dead client's pg_sleep would hold its table locks until it wakes)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ("%pg_sleep%",),
        )
    conn.commit()


# How each stage is held long enough for the kill to land inside it, and the log line that says it started.
STAGE_FAULTS = {
    "load": {"SQL_INTERACTIONS": "SELECT user_id, post_id, type, created_at FROM interactions, pg_sleep(20)"},
    "evaluate": {"LIGHTFM_EPOCHS": "5000"},
    "artifact": {},  # its first fsync (the .npz, before the rename) hangs: see delay_fsync
    "publish": {},  # the fsync of CURRENT hangs, after the Redis flip: killed between the two pointers
}


@pytest.mark.parametrize("stage", list(STAGE_FAULTS))
def test_worker_killed_in_each_stage_leaves_the_pointer_on_a_complete_version(
    stage, loaded_db, cache, service_env, services, celery_client
):
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "10"}
    settings = settings_from(env)
    current, _, _, _ = publish_once(settings, cache)
    worker = start_worker(services, {**env, **STAGE_FAULTS[stage]})
    strace = None
    if stage in ("artifact", "publish"):
        # fsyncs of a run: .npz, directory, .json, directory (the artifact), the warm-start state, the similar-post
        # table and the data snapshot kept beside it (file, directory each: ml.artifact.save_beside), then
        # CURRENT's (publish).
        strace = delay_fsync(pool_child(worker), 1 if stage == "artifact" else 11)

    celery_client.send_task("tasks.train", kwargs={"force": True})
    worker.wait_for_log(rf"training stage {stage} started")
    time.sleep(1.0 if stage in ("artifact", "publish") else 0.5)
    worker.signal(signal.SIGKILL)
    worker.popen.wait(10)
    if strace is not None:  # it may still be delaying the dead process's fsync
        strace.kill()
        strace.communicate(timeout=10)  # reaps it and closes its stderr pipe
    terminate_sleeping_queries(loaded_db)

    log = worker.log()
    later = {"load": "evaluate", "evaluate": "fit", "artifact": "precompute"}.get(stage)
    assert later is None or f"training stage {later} started" not in log, f"the kill came after {stage}"
    served = assert_pointer_on_a_complete_version(cache, settings.model_dir)
    if stage == "publish":
        # Killed between the Redis flip and the disk's pointer: Redis names the new, complete version.
        assert served > current.version and ml.artifact.current_version(settings.model_dir) == current.version
    else:
        assert served == current.version and ml.artifact.current_version(settings.model_dir) == current.version
        assert ml.artifact.list_versions(settings.model_dir)[-1] == current.version
    assert 0 < cache.client.ttl(cache.lock_key)  # the dead run's lock frees itself...
    wait_until(lambda: not cache.client.exists(cache.lock_key), 60, "the lock's TTL")

    # ...and the next run publishes on its own (with the default time budget: a busy machine is no fault here).
    start_worker(services, service_env, name="w2")
    result = run_train(celery_client)
    assert result["status"] == "published" and result["version"] > served
    assert assert_pointer_on_a_complete_version(cache, settings.model_dir) == result["version"]
    assert ml.artifact.current_version(settings.model_dir) == result["version"]
    assert current.version in ml.artifact.list_versions(settings.model_dir)  # the earlier version is kept


def test_worker_killed_in_precompute_never_publishes_its_version(
    loaded_db, service_env, services, celery_client, private_redis
):
    """Killed while precompute's writes wait: the artifact is complete, its lists are not, nothing is published.

    The run is held deterministically: strace delays the artifact's last fsync, meanwhile Redis pauses
    every write (``CLIENT PAUSE WRITE``, on a private server), then the run goes on into precompute, whose
    first write waits there when the worker is killed.
    """
    with redis.Redis.from_url(private_redis.url) as client:
        env = {**service_env, "REDIS_URL": private_redis.url, "TRAIN_TIME_LIMIT_SECONDS": "10"}
        settings = settings_from(env)
        cache = RecsCache(client, settings.redis_prefix)
        current, _, _, _ = publish_once(settings, cache)
        worker = start_worker(services, env)
        strace = delay_fsync(pool_child(worker), 4)  # .npz, directory, .json, directory: the 4th holds the run

        celery_client.send_task("tasks.train", kwargs={"force": True})
        worker.wait_for_log(r"training stage artifact started")
        time.sleep(1.0)
        client.client_pause(60_000, all=False)  # writes wait, reads go on
        strace.terminate()  # the run leaves the artifact stage and starts precompute
        strace.communicate(timeout=10)  # reaps it and closes its stderr pipe
        worker.wait_for_log(r"training stage precompute started")
        time.sleep(0.5)
        worker.signal(signal.SIGKILL)
        worker.popen.wait(10)
        client.client_unpause()

        staged = ml.artifact.list_versions(settings.model_dir)[-1]
        assert staged > current.version and "training stage publish started" not in worker.log()
        assert not cache.is_published(staged)
        assert sum(cache.client.hlen(key) for key in cache.recs_keys(staged)) == 0
        assert cache.client.ttl(cache.meta_key(staged)) in (-2, *range(1, limits.lock_ttl(settings) + 1))
        assert assert_pointer_on_a_complete_version(cache, settings.model_dir) == current.version
        assert ml.artifact.current_version(settings.model_dir) == current.version
        wait_until(lambda: not cache.client.exists(cache.lock_key), 60, "the lock's TTL")

        start_worker(services, {**service_env, "REDIS_URL": private_redis.url}, name="w2")
        result = run_train(celery_client)
        assert result["status"] == "published" and result["version"] > staged
        assert assert_pointer_on_a_complete_version(cache, settings.model_dir) == result["version"]
        assert not cache.is_published(staged)


@pytest.fixture
def small_model_dir(tmp_path):
    """A 4 MB tmpfs as MODEL_DIR, so that a test can fill the disk the artifact is written to (room for two
    versions with the files kept beside each: warm state, data snapshot, similar-post table)."""
    path = tmp_path / "models"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("room", ["half the .npz", "the .npz but not the .json"])
def test_disk_full_while_writing_the_artifact_fails_cleanly_and_the_next_run_recovers(
    room, loaded_db, cache, service_env, services, celery_client, small_model_dir
):
    env = {**service_env, "MODEL_DIR": str(small_model_dir)}
    settings = settings_from(env)
    current, _, _, _ = publish_once(settings, cache)
    files = model_files(settings.model_dir)
    # The next version's .npz has the same size (same data, uncompressed arrays); tmpfs counts whole pages.
    npz_bytes = (small_model_dir / f"{current.version}.npz").stat().st_size
    stats = os.statvfs(small_model_dir)
    page = stats.f_frsize
    left = npz_bytes // 2 if room == "half the .npz" else -(-npz_bytes // page) * page
    filler = small_model_dir / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * page - left))
    start_worker(services, env)

    run = celery_client.send_task("tasks.train", kwargs={"force": True})
    run.get(timeout=120, propagate=False)

    assert run.failed() and "No space left on device" in repr(run.result)
    assert cache.current_version() == current.version
    assert ml.artifact.current_version(settings.model_dir) == current.version
    assert model_files(settings.model_dir) == sorted([*files, "filler"])  # no partial file of any kind
    assert not cache.client.exists(cache.lock_key)
    outcome = wait_until(cache.last_training_outcome, 10, "the failure to be recorded")
    assert outcome["status"] == "failed" and "No space left" in outcome["reason"]
    ml.artifact.load(settings.model_dir)  # what is current still loads

    filler.unlink()  # space frees: the next run recovers by itself
    result = run_train(celery_client)
    assert result["status"] == "published"
    assert assert_pointer_on_a_complete_version(cache, settings.model_dir) == result["version"]
    assert ml.artifact.current_version(settings.model_dir) == result["version"]
    assert current.version in ml.artifact.list_versions(settings.model_dir)


def test_redis_restarted_during_training_the_run_retries_and_publishes(
    loaded_db, service_env, services, celery_client, tmp_path, private_redis
):
    with redis.Redis.from_url(private_redis.url) as client:
        env = {**service_env, "REDIS_URL": private_redis.url, "LIGHTFM_EPOCHS": "400"}
        settings = settings_from(env)
        cache = RecsCache(client, settings.redis_prefix)
        current, _, _, _ = publish_once(settings, cache)
        worker = start_worker(services, env)

        run = celery_client.send_task("tasks.train", kwargs={"force": True})
        worker.wait_for_log(r"training stage fit started")
        private_redis.stop()  # the cache, pointer and lock go away (no persistence: the worst case)
        worker.wait_for_log(r"tasks\.train\[[^]]+\] retry: Retry in", timeout=120)
        private_redis.start()
        result = run.get(timeout=180)

        assert result["status"] == "published" and result["version"] > current.version
        assert assert_pointer_on_a_complete_version(cache, settings.model_dir) == result["version"]
        assert ml.artifact.current_version(settings.model_dir) == result["version"]
        ml.artifact.load(settings.model_dir, current.version)  # the version published before is still on disk
