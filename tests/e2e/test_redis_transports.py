"""End to end on a Redis reached the other ways REDIS_URL allows: a Unix socket only (``unix://``, no TCP port)
and TLS only (``rediss://``). Celery's broker and results (derived from REDIS_URL), the training run,
gunicorn's workers and their reloaders, and the rate limits all reach it that way.
"""

from __future__ import annotations

import pytest
import requests
from celery import Celery

from common.config import load_settings
from common.recs_cache import RecsCache
from common.redis_clients import worker_client
from testing.environment import ADMIN_TOKEN, REDIS_PREFIX
from testing.polling import poll
from testing.processes import GunicornServer, RedisServer, start_worker
from testing.service import most_active_users, run_train


@pytest.fixture(params=["unix", "tls"])
def other_redis(request):
    server = RedisServer(request.param).start()
    yield server
    server.close()


def test_the_service_runs_on_a_redis_reached_over_a_unix_socket_or_tls(
    loaded_db, service_env, other_redis, services, tmp_path
):
    env = {key: value for key, value in service_env.items() if not key.startswith("CELERY_")}  # from REDIS_URL
    env.update(REDIS_URL=other_redis.url, ADMIN_TOKEN=ADMIN_TOKEN, RATE_LIMIT="1000/second")
    settings = load_settings(env, dotenv=False)
    client = Celery("unix-client", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    client.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    cache = RecsCache(worker_client(other_redis.url), REDIS_PREFIX)
    start_worker(services, env)
    server = None
    try:
        first = run_train(client)
        assert first["status"] == "published", first
        assert cache.current_version() == first["version"]
        server = GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
        assert server.holds(first["version"])
        user = most_active_users(loaded_db, 1)[0]
        page = requests.get(f"{server.url}/recommendations/{user}", params={"limit": 10}, timeout=10)
        assert page.status_code == 200, page.text
        assert page.json()["model_version"] == first["version"] and "X-RateLimit-Limit" in page.headers
        event = {"user_id": user, "post_id": "p-seen", "type": "view", "created_at": "2026-11-30T05:00:00Z"}
        events = requests.post(
            f"{server.url}/events",
            json={"events": [event]},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert events.status_code == 200, events.text
        assert "p-seen" in cache.exclusions(user)[0]
        assert list(cache.client.scan_iter(f"{REDIS_PREFIX}*ratelimit*"))  # the limits' counters, in this Redis

        second = run_train(client)
        assert second["status"] == "published", second
        # The reloaders' subscription: every worker follows the announcement at once.
        assert poll(lambda: server.holds(second["version"]), 1.5, 0.02), server.worker_versions()
    finally:
        if server is not None:
            assert server.stop() == 0, server.log()
        cache.client.close()
        client.close()
