"""scripts/services.py: starts a local server that is installed but down, and names what cannot be had."""

import os
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import redis

from testing.environment import TEST_DATABASE_URL, TEST_REDIS_URL
from testing.postgres import PasswordPostgres, unavailable_reason
from testing.processes import free_port

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


def _without_database_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DB_", "PG"))}


def _assert_one_line_error(result, *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot connect to PostgreSQL") and "DATABASE_URL" in lines[0]
    for words in expected:
        assert words in lines[0], lines[0]


def test_create_database_with_a_missing_role_fails_in_one_line():
    """The issue's case: the default DATABASE_URL names no user, so the login name (here PGUSER) is tried."""
    parts = urlsplit(TEST_DATABASE_URL)
    env = {
        **_without_database_settings(),
        "DATABASE_URL": f"postgresql://{parts.hostname}:{parts.port or 5432}/recsvc_services_test",
        "PGUSER": "recsvc_no_such_role",
        "REDIS_URL": TEST_REDIS_URL,
    }
    result = run("--create-database", env=env)
    _assert_one_line_error(result, 'role "recsvc_no_such_role" does not exist', "names no user", "createuser")
    assert "started PostgreSQL" not in result.stdout  # the server answered: nothing to start


@pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"no password-protected PostgreSQL: {unavailable_reason()}"
)
def test_a_wrong_password_fails_in_one_line_without_showing_it():
    server = PasswordPostgres()
    try:
        server.start()
        url = server.url(password="not-the-password", database="recsvc")
        for args in ([], ["--create-database"]):
            result = run("--database-url", url, "--redis-url", TEST_REDIS_URL, *args)
            _assert_one_line_error(result, 'password of role "postgres" was refused', "postgresql://postgres:***@")
            assert "not-the-password" not in result.stderr + result.stdout
        result = run(
            "--database-url", server.url(database="recsvc"), "--redis-url", TEST_REDIS_URL, "--create-database"
        )
        assert result.returncode == 0 and "created database recsvc" in result.stdout, result.stderr
    finally:
        server.close()
