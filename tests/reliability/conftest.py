"""Fixtures of the reliability tests: the app under real gunicorn on a published model, shared by a module.

The server, its environment, the way a version is published and the reading of its access log
(:func:`testing.processes.access_statuses`) come from the :mod:`testing` package, as for the end-to-end tests.
"""

from __future__ import annotations

import pytest
import redis

from common.recs_cache import RecsCache
from testing.environment import REDIS_PREFIX, TOP_K, server_env
from testing.factories import random_model
from testing.processes import GunicornServer, RedisServer
from testing.service import publish


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """gunicorn (2 workers) serving a published 50-user, 80-post model, shared by a module's tests.

    It has a redis-server of its own, so the module-wide server needs no per-test flushing of the shared
    test database. Stopped after the module; it must shut down cleanly.
    """
    directory = tmp_path_factory.mktemp("served")
    private = RedisServer().start()
    client = redis.Redis.from_url(private.url)
    publish(RecsCache(client, REDIS_PREFIX), directory / "models", random_model(num_users=50, num_items=80, seed=1),
            top_k=TOP_K)  # fmt: skip
    server = GunicornServer(server_env(private.url, directory / "models"), workers=2, log_path=directory / "g.log")
    try:
        yield server.start()
        assert server.stop() == 0, server.log()[-3000:]
    finally:
        server.stop()
        client.close()
        private.close()
