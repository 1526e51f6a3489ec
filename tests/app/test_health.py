"""/health: 200 while the worker can serve, 503 when it cannot, each dependency reported."""

from __future__ import annotations

import time

from testing.factories import random_model
from testing.service import publish


def test_healthy_with_model_redis_and_postgres(make_app, settings_env, database_url, cache, model_dir):
    version = publish(cache, model_dir, random_model(seed=1), top_k=5)
    client = make_app({**settings_env, "DATABASE_URL": database_url}).test_client()
    started = time.perf_counter()
    response = client.get("/health")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["model"]["ok"] and body["checks"]["model"]["version"] == version
    assert body["checks"]["model"]["age_seconds"] >= 0
    # The app's first /health runs both probes inside the request: each took some time, and no more than it.
    postgres = body["checks"]["postgres"]
    assert {key: value for key, value in postgres.items() if key != "latency_ms"} == {
        "ok": True,
        "required": False,
        "error": None,
    }
    for check in (body["checks"]["redis"], postgres):
        assert check["ok"] and 0 < check["latency_ms"] <= elapsed_ms, (check, elapsed_ms)


def test_degraded_but_serving_without_redis(make_app, settings_env, dead_redis_url, cache, model_dir):
    publish(cache, model_dir, random_model(seed=1), top_k=5)
    response = make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client().get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False and "Redis" in body["checks"]["redis"]["error"]


def test_unavailable_without_a_model(make_app, settings_env):
    env = {**settings_env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/recsvc_no_such_database"}
    response = make_app(env).test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["model"]["ok"] is False and body["checks"]["model"]["error"]
    assert body["checks"]["postgres"]["ok"] is False  # information only: it does not decide the status
