"""Shared fixtures: a dedicated PostgreSQL database and dedicated Redis databases, cleaned per test.

Tests run against the real servers. Where they live is set by environment variables so that several
test runs on one machine do not collide:

- ``TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/recsvc_test``): created at the
  start of the session if missing, dropped at the end.
- ``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``): cache, pub/sub and lock; flushed around
  every test that uses it.
- ``TEST_CELERY_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``): Celery broker and result backend of
  tests that start real workers; flushed likewise.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import redis

from tests.app.processes import RedisServer

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/recsvc_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_CELERY_REDIS_URL = os.environ.get("TEST_CELERY_REDIS_URL", "redis://127.0.0.1:6379/14")
# Per run: pub/sub channels are server-wide (not per database), so parallel runs must not share names.
TEST_REDIS_PREFIX = f"recsvc-test-{os.getpid()}:"


def _admin_url(url: str) -> tuple[str, str]:
    """The URL of the server's ``postgres`` maintenance database, and the test database's name."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


@pytest.fixture(scope="session")
def database_url():
    """A fresh, empty test database for the session; dropped afterwards."""
    admin_url, name = _admin_url(TEST_DATABASE_URL)
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    yield TEST_DATABASE_URL
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def pg_conn(database_url):
    """A connection to the test database, with every table in the public schema dropped after the test."""
    conn = psycopg2.connect(database_url)
    yield conn
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables WHERE schemaname = 'public'")
        tables = cur.fetchone()[0]
        if tables:
            cur.execute(f"DROP TABLE {tables} CASCADE")
    conn.commit()
    conn.close()


def _flushed_around(url: str):
    """Yield ``url`` with its Redis database flushed before and after."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url():
    """The test Redis database's URL; the database is flushed before and after the test."""
    yield from _flushed_around(TEST_REDIS_URL)


@pytest.fixture
def redis_client(redis_url):
    """A client on the test Redis database (flushed around the test)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own, which it may stop, restart, pause or reconfigure; removed after it."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def celery_redis_url():
    """The Redis database for the Celery broker and results of tests that start real workers."""
    yield from _flushed_around(TEST_CELERY_REDIS_URL)


# The training pipeline's fixtures (demo data in PostgreSQL, the service's environment, real Celery processes),
# defined in tests/tasks/conftest.py, are also used by the end-to-end and reliability tests.
from tests.tasks.conftest import cache, celery_client, demo_dir, loaded_db, service_env, services  # noqa: E402, F401
