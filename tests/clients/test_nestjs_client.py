"""The NestJS client (clients/nestjs) against the real service: its node test suite, run by ``npm test``.

Starts real gunicorn twice on the test Redis database: one with a published model and an admin token, one
with no model and no token (503 feeds, 403 admin endpoints). Then runs the client's tests, which compile it
with ``tsc`` and run node's test runner on the compiled JavaScript, and checks that every one of them passed.
The client's dependencies come from ``make nestjs-client`` (``npm ci`` from the committed lockfile).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import requests

from common.recs_cache import RecsCache
from testing.environment import REDIS_PREFIX
from testing.factories import random_model
from testing.processes import REPO, GunicornServer
from testing.service import publish

CLIENT_DIR = REPO / "clients" / "nestjs"
TOP_K = 30
FEED_POSTS = 50  # MAX_FEED_POSTS of the served service: the scroll goes past its TOP_K lists
ADMIN_TOKEN = "nestjs-admin-token-0123456789"
EVENTS_TOKEN = "nestjs-events-token-0123456789"
NPM_TEST_TIMEOUT = 240


class ModellessGunicornServer(GunicornServer):
    """gunicorn serving the app before any model is published: ready once every worker answers /health 503."""

    def _ready(self) -> bool:
        if len(self.worker_pids()) != self.workers:
            return False
        return requests.get(f"{self.url}/health", timeout=5).status_code == 503


@pytest.fixture
def servers(redis_client, redis_url, tmp_path):
    """(URL of a service with a model, URL of one without); both stopped cleanly afterwards."""
    model_dir = tmp_path / "models"
    publish(RecsCache(redis_client, REDIS_PREFIX), model_dir, random_model(num_users=50, num_items=80, seed=3), TOP_K)
    common = {
        "REDIS_URL": redis_url,
        "TOP_K_RECOMMENDATIONS": str(TOP_K),
        "MAX_PAGE_LIMIT": str(TOP_K),
        "MAX_FEED_POSTS": str(FEED_POSTS),
    }
    served_env = {"REDIS_PREFIX": REDIS_PREFIX, "MODEL_DIR": str(model_dir), "ADMIN_TOKEN": ADMIN_TOKEN}
    served = GunicornServer(
        {**common, **served_env, "EVENTS_TOKEN": EVENTS_TOKEN},
        workers=2,
        log_path=tmp_path / "served.log",
    )
    # An empty ADMIN_TOKEN wins over a developer's .env: the admin endpoints are disabled.
    no_model = {"REDIS_PREFIX": REDIS_PREFIX + "empty:", "MODEL_DIR": str(tmp_path / "no-models"), "ADMIN_TOKEN": ""}
    empty = ModellessGunicornServer(
        {**common, **no_model},
        workers=1,
        log_path=tmp_path / "empty.log",
    )
    served.start()
    try:
        empty.start()
        try:
            yield served.url, empty.url
        finally:
            assert empty.stop() == 0, empty.log()
    finally:
        assert served.stop() == 0, served.log()


@pytest.mark.timeout(NPM_TEST_TIMEOUT + 60)
def test_nestjs_client_suite_passes_against_the_live_service(servers):
    npm = shutil.which("npm")
    assert npm, "npm is needed for the NestJS client's tests"
    assert (CLIENT_DIR / "node_modules" / "@nestjs" / "axios").is_dir(), "run `make nestjs-client` first"
    url, no_model_url = servers
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RECSVC_URL": url,
        "RECSVC_NO_MODEL_URL": no_model_url,
        "RECSVC_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECSVC_EVENTS_TOKEN": EVENTS_TOKEN,
        "RECSVC_FEED_POSTS": str(FEED_POSTS),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [npm, "test", "--silent"],
        cwd=CLIENT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NPM_TEST_TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # node's runner ends with a summary; every test must have run and passed (none skipped or todo).
    summary = {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.MULTILINE)}
    written = len(re.findall(r"^\s*test\(", (CLIENT_DIR / "test" / "client.test.ts").read_text(), re.MULTILINE))
    assert written >= 20 and summary.get("tests") == written, output
    assert summary["pass"] == summary["tests"], output
    assert summary["fail"] == summary["skipped"] == summary["todo"] == summary["cancelled"] == 0, output


def test_lockfile_pins_the_declared_versions():
    """``npm ci`` installs exactly the versions package.json pins, so the lockfile must agree with it."""
    package = json.loads((CLIENT_DIR / "package.json").read_text())
    lock = json.loads((CLIENT_DIR / "package-lock.json").read_text())
    for name, version in package["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
