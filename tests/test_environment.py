"""The test services of each pytest-xdist worker (testing.environment): no two workers share a database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRINT_URLS = (
    "import json, testing.environment as e; "
    "print(json.dumps([e.TEST_DATABASE_URL, e.TEST_REDIS_URL, e.TEST_CELERY_REDIS_URL]))"
)


def urls_of(worker: str | None, **configured: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST_XDIST_"))}
    env.update(configured)
    if worker is not None:
        env["PYTEST_XDIST_WORKER"] = worker
    return subprocess.run([sys.executable, "-c", PRINT_URLS], cwd=ROOT, env=env, capture_output=True, text=True)


def test_each_worker_takes_its_own_database_and_redis_databases():
    found = {worker: json.loads(urls_of(worker).stdout) for worker in (None, "gw0", "gw1")}
    base = "postgresql://postgres@127.0.0.1:5432/recsvc_test"
    assert found[None] == [base, "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/14"]
    assert found["gw0"] == [f"{base}_gw0", "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/14"]
    assert found["gw1"] == [f"{base}_gw1", "redis://127.0.0.1:6379/13", "redis://127.0.0.1:6379/12"]


def test_configured_urls_move_every_worker_and_too_few_databases_are_refused():
    configured = {
        "TEST_DATABASE_URL": "postgresql://postgres@db.example:5433/mine?sslmode=disable",
        "TEST_REDIS_URL": "redis://127.0.0.1:6380/9",
        "TEST_CELERY_REDIS_URL": "redis://127.0.0.1:6380/8",
    }
    assert json.loads(urls_of("gw2", **configured).stdout) == [
        "postgresql://postgres@db.example:5433/mine_gw2?sslmode=disable",
        "redis://127.0.0.1:6380/5",
        "redis://127.0.0.1:6380/4",
    ]
    refused = urls_of("gw1", TEST_REDIS_URL="redis://127.0.0.1:6379/1")
    assert refused.returncode != 0
    assert "redis://127.0.0.1:6379/1: too few Redis databases below it for xdist worker gw1" in refused.stderr
