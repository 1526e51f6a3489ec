"""``python -m tasks.rollback``: an earlier version is served again, exactly as a training run publishes one."""

from __future__ import annotations

import subprocess
import sys

import ml.artifact
from app import create_app
from common.config import load_settings
from tasks import limits
from testing.processes import REPO
from testing.service import listed, next_update, publish_once, settings_from


def rollback(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.rollback", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_rollback_republishes_an_earlier_version_everywhere(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, first_model, _, _ = publish_once(settings, cache)
    second, _, _, _ = publish_once(settings, cache)
    cache.client.delete(*cache.recs_keys(first.version), cache.meta_key(first.version))  # its lists expired
    updates = cache.subscribe()

    listing = rollback(service_env, "--list")
    assert listing.returncode == 0, listing.stderr
    assert f"{second.version}" in listing.stdout and "(current)" in listing.stdout
    done = rollback(service_env, first.version)

    assert done.returncode == 0, done.stderr
    assert f"version {first.version} is current again (was {second.version})" in done.stdout
    assert next_update(cache, updates)["version"] == first.version
    assert cache.current_version() == first.version
    assert ml.artifact.current_version(settings.model_dir) == first.version
    assert all(listed(cache, first.version, user) is not None for user in first_model.user_ids)
    assert 0 < cache.client.ttl(cache.recs_key(second.version, first_model.user_ids[0])) <= settings.recs_retain_seconds
    assert not cache.client.exists(cache.lock_key)
    # /admin/model-status's last outcome tells of the rollback, not of the run it undid.
    outcome = cache.last_training_outcome()
    assert (outcome["status"], outcome["version"], outcome["previous_version"]) == (
        "rolled_back",
        first.version,
        second.version,
    )
    assert outcome["reason"] == f"rolled back from {second.version} by hand (python -m tasks.rollback)"
    status = model_status(service_env)
    assert (status["version"], status["cache_version"]) == (first.version, first.version)
    assert status["last_training_outcome"] == outcome


def model_status(env: dict[str, str]) -> dict:
    """``GET /admin/model-status`` of a web app on ``env``, as an operator sees it."""
    token = "rollback-test-admin-token"
    app = create_app({"TESTING": True, "SETTINGS": load_settings({**env, "ADMIN_TOKEN": token}, dotenv=False)})
    try:
        answer = app.test_client().get("/admin/model-status", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()
    finally:
        app.extensions["recsvc"].close()


def test_rollback_refuses_an_unknown_version_and_a_held_lock(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, _, _, _ = publish_once(settings, cache)
    second, _, _, _ = publish_once(settings, cache)

    unknown = rollback(service_env, "20200101T000000Z-00000000")
    assert unknown.returncode == 1 and "is not kept in" in unknown.stderr

    assert cache.training_lock(limits.lock_ttl(settings)).acquire()
    busy = rollback(service_env, first.version)
    assert busy.returncode == 1 and "training lock" in busy.stderr
    assert cache.current_version() == second.version
