"""A scheduled run on data that has not changed since the current model publishes nothing (issue 10, defect 4).

Against a real worker, Flower and the celery CLI: the second run on the same data ends ``unchanged`` naming the
served version, writes no artifact and no list, announces nothing and frees the lock; an INSERT into
PostgreSQL, or ``--kwargs '{"force": true}'``, makes a new version again.
"""

from __future__ import annotations

import requests

import ml.artifact
from app import create_app
from tasks import outcomes
from testing.polling import wait_until
from testing.processes import free_port, start_worker
from testing.service import run_train, settings_from
from tests.tasks.test_flower_cli import FLOWER_PASSWORD, FLOWER_USER, celery_cli
from tests.tasks.test_pipeline import _insert_interaction

ADMIN_TOKEN = "unchanged-test-admin-token-0123456789"


def redis_state(cache) -> dict[bytes, object]:
    """Every key of the test prefix but the recorded outcome, with its value: what a run may have written."""
    state = {}
    for key in cache.client.scan_iter(match=f"{cache.prefix}*"):
        if key == cache.outcome_key.encode() or key == cache.lock_key.encode():
            continue
        kind = cache.client.type(key)
        read = {b"hash": cache.client.hgetall, b"set": cache.client.smembers}.get(kind, cache.client.get)
        state[key] = read(key)
    return state


def model_status(env: dict[str, str]) -> dict:
    """GET /admin/model-status of a web app on the same Redis and MODEL_DIR."""
    app = create_app({"TESTING": True, "SETTINGS": settings_from({**env, "ADMIN_TOKEN": ADMIN_TOKEN})})
    try:
        response = app.test_client().get("/admin/model-status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()
    finally:
        app.extensions["recsvc"].close()


def test_unchanged_data_publishes_nothing_until_it_changes_or_is_forced(
    loaded_db, cache, service_env, services, celery_client
):
    env = {**service_env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    settings = settings_from(env)
    port = free_port()
    flower = services("flower", ["flower", "--address=127.0.0.1", f"--port={port}"], env)
    start_worker(services, env)
    flower.wait_for_log(r"Visit me at")

    assert "'status': 'published'" in celery_cli(env, "result", celery_cli(env, "call", "tasks.train").strip())
    first = cache.last_training_outcome()
    versions = ml.artifact.list_versions(settings.model_dir)
    before = redis_state(cache)
    updates = cache.subscribe()

    # The same data again: nothing new is built, written or announced, and the lock is free.
    task_id = celery_cli(env, "call", "tasks.train").strip()
    output = celery_cli(env, "result", task_id)
    assert "'status': 'unchanged'" in output
    second = cache.last_training_outcome()
    assert set(second) == set(outcomes.outcome("published"))
    assert (second["status"], second["version"]) == ("unchanged", first["version"])
    assert list(second["stages"]) == ["load"]
    assert ml.artifact.list_versions(settings.model_dir) == versions
    assert ml.artifact.current_version(settings.model_dir) == first["version"]
    assert redis_state(cache) == before
    assert cache.parse_update(updates.get_message(timeout=1.0)) is None
    assert not cache.client.exists(cache.lock_key)
    assert model_status(env)["last_training_outcome"]["status"] == "unchanged"

    def finished_in_flower():
        tasks = requests.get(
            f"http://127.0.0.1:{port}/api/tasks",
            params={"taskname": "tasks.train"},
            auth=(FLOWER_USER, FLOWER_PASSWORD),
            timeout=5,
        ).json()
        task = tasks.get(task_id)
        return task if task and task["state"] == "SUCCESS" else None

    task = wait_until(finished_in_flower, 30, "the unchanged run to appear in Flower as SUCCESS")
    assert "'status': 'unchanged'" in task["result"] and first["version"] in task["result"]

    # New data: a new version, without forcing.
    _insert_interaction(loaded_db)
    third = run_train(celery_client, force=False)
    assert third["status"] == "published" and third["version"] != first["version"]
    assert third["num_interactions"] == first["num_interactions"] + 1

    # The same data, forced through the celery CLI as docs/OPERATIONS.md says: a new version all the same.
    forced_id = celery_cli(env, "call", "tasks.train", "--kwargs", '{"force": true}').strip()
    assert "'status': 'published'" in celery_cli(env, "result", forced_id)
    forced = cache.last_training_outcome()
    assert forced["status"] == "published" and forced["version"] not in (first["version"], third["version"])
    assert cache.current_version() == forced["version"]
