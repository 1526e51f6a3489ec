"""Fixtures of the reliability tests: the app under real gunicorn on a published model, and its access log.

The server, its environment and the way a version is published are the end-to-end tests' own
(``tests.e2e.test_web_gunicorn``, ``tests.app.helpers``, ``tests.app.processes``); this module only adds
what several reliability tests read from a running server: every answered status, from gunicorn's access log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from common.recs_cache import RecsCache
from tests.app.helpers import REDIS_PREFIX, publish
from tests.app.processes import GunicornServer, RedisServer
from tests.e2e.test_web_gunicorn import ADMIN_TOKEN, TOP_K, server_env
from tests.ml.factories import random_model

__all__ = ["ADMIN_TOKEN", "TOP_K", "server_env"]

# The access log's format (gunicorn.conf.py): '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=...'.
_ACCESS = re.compile(r'^\S+ "(?P<request>.*)" (?P<status>\d{3}) ')


def access_statuses(log_path: Path) -> list[tuple[str, int]]:
    """(request line, status) of every request gunicorn logged, in order."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") != "gunicorn.access":
            continue
        match = _ACCESS.match(entry["message"])
        if match:
            found.append((match["request"], int(match["status"])))
    return found


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
