"""End to end with the real pipeline: a Celery worker trains and publishes, gunicorn workers serve it live.

The training-side fixtures (demo data in PostgreSQL, the processes' environment, ``celery -A tasks``
processes) are the shared ones of ``tests/conftest.py`` and the :mod:`testing` package.
"""

from __future__ import annotations

import time

import requests

from testing.polling import poll
from testing.processes import GunicornServer, start_worker
from testing.service import most_active_users, run_train


def test_versions_trained_by_celery_reach_every_gunicorn_worker(
    loaded_db, cache, service_env, services, celery_client, tmp_path
):
    start_worker(services, service_env)
    first = run_train(celery_client)
    assert first["status"] == "published", first
    server = GunicornServer(service_env, workers=3, log_path=tmp_path / "gunicorn.log").start()
    try:
        assert server.holds(first["version"])
        user = most_active_users(loaded_db, 1)[0]
        page = requests.get(f"{server.url}/recommendations/{user}", params={"limit": 10}).json()
        assert (page["model_version"], page["strategy"], page["source"]) == (first["version"], "personalized", "cache")

        second = run_train(celery_client)
        done = time.monotonic()
        assert second["status"] == "published", second
        # The task published before it returned: every worker must hold the version within a second of that.
        assert poll(lambda: server.holds(second["version"]), 1.0, 0.02), server.worker_versions()
        assert time.monotonic() - done < 1.0
        answers = [requests.get(f"{server.url}/recommendations/{user}").json() for _ in range(12)]
        assert {a["model_version"] for a in answers} == {second["version"]}

        pinned = requests.get(
            f"{server.url}/recommendations/{user}",
            params={"limit": 10, "offset": 10, "version": first["version"]},
        ).json()
        assert (pinned["model_version"], pinned["version_fallback"]) == (first["version"], False)
        assert [r["rank"] for r in pinned["recommendations"]] == list(range(11, 21))
        assert not {r["post_id"] for r in page["recommendations"]} & {r["post_id"] for r in pinned["recommendations"]}
    finally:
        assert server.stop() == 0, server.log()
