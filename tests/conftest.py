"""The fixtures every test directory shares: the test PostgreSQL database and Redis databases (cleaned per test),
the demo data loaded, the service's environment, and real service processes.

Where the services are is set by the ``TEST_*`` variables (:mod:`testing.environment`); the process,
polling and publishing helpers behind these fixtures live in the :mod:`testing` package, which the
benchmarks share. Fixtures of one directory only stay in that directory's conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg2
import pytest
import redis
from celery import Celery
from psycopg2 import sql

from common.recs_cache import RecsCache
from ml.db.connection import connect, create_database
from ml.db.load import load_dataset_dir
from ml.db.schema import create_schema
from testing.cluster import RedisClusterNodes
from testing.environment import REDIS_PREFIX, TEST_CELERY_REDIS_URL, TEST_DATABASE_URL, TEST_REDIS_URL
from testing.processes import CeleryProcess, RedisServer
from testing.service import DEMO_INTERACTIONS, DEMO_POSTS, DEMO_USERS, write_demo


def _drop_database(database_url: str) -> None:
    """Drop the database ``database_url`` names, closing its connections (the tests' own database only)."""
    conn = connect(database_url, database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            name = unquote(urlsplit(database_url).path.lstrip("/"))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def database_url():
    """A fresh, empty test database for the session (made by ``ml.db``'s own code); dropped afterwards."""
    _drop_database(TEST_DATABASE_URL)
    create_database(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    _drop_database(TEST_DATABASE_URL)


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
def cache(redis_client) -> RecsCache:
    """A RecsCache on the test Redis database, with the prefix every app and process of the tests uses."""
    return RecsCache(redis_client, REDIS_PREFIX)


@pytest.fixture
def private_redis():
    """A redis-server of the test's own, which it may stop, restart, pause or reconfigure; removed after it."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster():
    """A local Redis Cluster of three masters for the session (:mod:`testing.cluster`); tests flush it."""
    cluster = RedisClusterNodes().start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_tls_cluster():
    """A local Redis Cluster of three masters speaking TLS only, for the session; tests flush it."""
    cluster = RedisClusterNodes(tls=True).start()
    yield cluster
    cluster.close()


@pytest.fixture
def celery_redis_url():
    """The Redis database for the Celery broker and results of tests that start real workers."""
    yield from _flushed_around(TEST_CELERY_REDIS_URL)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """The test's MODEL_DIR (created by the first save)."""
    return tmp_path / "models"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The small demo dataset every training test starts from."""
    return write_demo(tmp_path_factory.mktemp("demo"), DEMO_USERS, DEMO_POSTS, DEMO_INTERACTIONS)


@pytest.fixture
def loaded_db(pg_conn, demo_dir):
    """The test database with the schema and the demo dataset; returns a connection to it."""
    create_schema(pg_conn)
    load_dataset_dir(pg_conn, demo_dir)
    pg_conn.commit()
    return pg_conn


@pytest.fixture
def service_env(database_url, redis_url, celery_redis_url, tmp_path) -> dict[str, str]:
    """Environment of the service's processes in these tests; a test adjusts it before starting them."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CELERY", "FLOWER"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=REDIS_PREFIX,
        CELERY_BROKER_URL=celery_redis_url,
        CELERY_RESULT_BACKEND=celery_redis_url,
        MODEL_DIR=str(tmp_path / "models"),
        TRAIN_INTERVAL_SECONDS="300",
        TRAIN_TIME_LIMIT_SECONDS="60",
        QUALITY_GATE_MARGIN="0.2",
        RECS_RETAIN_SECONDS="1800",
        LIGHTFM_EPOCHS="30",
        TRAIN_THREADS="1",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def celery_client(celery_redis_url) -> Iterator[Celery]:
    """A Celery client on the test broker: sends tasks by name and reads results, as an operator would."""
    client = Celery("test-client", broker=celery_redis_url, backend=celery_redis_url)
    client.conf.update(
        task_serializer="json", accept_content=["json"], result_accept_content=["json"], result_extended=True
    )
    yield client
    client.close()


@pytest.fixture
def services(tmp_path) -> Iterator[Callable[..., CeleryProcess]]:
    """Start ``celery -A tasks`` processes: ``services(name, args, env)``; every one is killed at teardown."""
    started: list[CeleryProcess] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> CeleryProcess:
        process = CeleryProcess(name, args, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
