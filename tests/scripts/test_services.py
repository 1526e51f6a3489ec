"""scripts/services.py: starts a local server that is installed but down, and names what cannot be had."""

import os
import shutil
import subprocess
import sys

import pytest
import redis

from tests.app.processes import free_port
from tests.conftest import TEST_DATABASE_URL

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "services.py")


def run(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs a local redis-server to start")
def test_starts_a_local_redis_that_is_down():
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("--database-url", TEST_DATABASE_URL, "--redis-url", url)
    client = redis.Redis.from_url(url)
    try:
        assert result.returncode == 0, result.stderr
        assert "started Redis" in result.stdout
        assert client.ping()
    finally:
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass


def test_names_the_missing_server_when_it_cannot_be_started():
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no redis-server on the PATH
    result = run("--database-url", TEST_DATABASE_URL, "--redis-url", url, env=env)
    assert result.returncode != 0
    assert "Redis is not running" in result.stderr and "not installed" in result.stderr


def test_refuses_bad_configuration_by_name():
    env = {**os.environ, "REDIS_URL": "nonsense"}
    result = run("--database-url", TEST_DATABASE_URL, env=env)
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr
