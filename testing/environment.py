"""Where the tests' services are: a dedicated PostgreSQL database and dedicated Redis databases.

Set by environment variables so that several test runs on one machine do not collide:

- ``TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/recsvc_test``): created at the
  start of the session, dropped at the end.
- ``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``): cache, pub/sub and lock; flushed around
  every test that uses it.
- ``TEST_CELERY_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``): Celery broker and result backend of
  tests that start real workers; flushed likewise.

``make test`` runs the suite on two pytest-xdist workers. Worker ``gwN`` takes the database named by
``TEST_DATABASE_URL`` with ``_gwN`` appended, and the Redis databases ``2 * N`` below the two named (the
defaults: 15 and 14 for ``gw0``, 13 and 12 for ``gw1``), so the workers never share a key or a table.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...; empty without xdist


def _redis_database_of_worker(url: str) -> str:
    """``url`` with its database number lowered by two per xdist worker (worker 0 keeps it)."""
    if not _XDIST_WORKER:
        return url
    parts = urlsplit(url)
    database = int(parts.path.lstrip("/") or 0) - 2 * int(_XDIST_WORKER.removeprefix("gw"))
    if database < 0:
        raise RuntimeError(f"{url}: too few Redis databases below it for xdist worker {_XDIST_WORKER}")
    return urlunsplit(parts._replace(path=f"/{database}"))


def _database_of_worker(url: str) -> str:
    """``url`` with the xdist worker's name appended to its database name."""
    if not _XDIST_WORKER:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{_XDIST_WORKER}"))


TEST_DATABASE_URL = _database_of_worker(
    os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/recsvc_test")
)
TEST_REDIS_URL = _redis_database_of_worker(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
TEST_CELERY_REDIS_URL = _redis_database_of_worker(os.environ.get("TEST_CELERY_REDIS_URL", "redis://127.0.0.1:6379/14"))

# The one key prefix of a test run (every RecsCache, app and process of the tests uses it). Pub/sub channels
# are server-wide, not per database: a prefix of this run's own keeps other runs' messages off its channels.
REDIS_PREFIX = f"recsvc-test-{os.getpid()}:"

ADMIN_TOKEN = "test-admin-token-0123456789"
TOP_K = 30  # TOP_K_RECOMMENDATIONS of the servers the tests start


def server_env(redis_url: str, model_dir: Path) -> dict[str, str]:
    """The environment of a test's gunicorn serving ``model_dir`` from ``redis_url``."""
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": REDIS_PREFIX,
        "MODEL_DIR": str(model_dir),
        "TOP_K_RECOMMENDATIONS": str(TOP_K),
        "MAX_PAGE_LIMIT": str(TOP_K),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "info",
    }
