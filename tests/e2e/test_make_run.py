"""``make run`` end to end: the README's first command sets up and runs the whole system, and Ctrl-C stops it.

Runs the real Makefile against the test PostgreSQL server (a database of its own, created by ``make run``
itself and dropped afterwards) and the test Redis database, on free ports, with the model directory, demo
data and env file in a temporary directory. Run twice: the second run must reuse the data and the model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import requests

from tests.app.processes import free_port
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_PREFIX

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 240


@pytest.fixture
def run_database_url():
    """The URL of a database that does not exist yet (``make run`` creates it); dropped afterwards."""
    parts = urlsplit(TEST_DATABASE_URL)
    url = urlunsplit(parts._replace(path=parts.path + "_make_run"))
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    name = urlsplit(url).path.lstrip("/")
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    yield url
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


class MakeRun:
    """One ``make run`` in its own process group, its output in a file."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str):
        self.log_path = tmp / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_ENV_FILE={tmp / 'env'}", f"DEMO_DIR={tmp / 'demo'}"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_until(self, check, what: str) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"make run exited early:\n{self.output()[-4000:]}"
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{what} not within {START_DEADLINE} s:\n{self.output()[-4000:]}")

    def ctrl_c(self) -> int:
        """Send SIGINT to the whole process group, as a terminal's Ctrl-C does; return make's exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def group_is_gone(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return True
        return False


def test_make_run_serves_the_demo_feed_and_reuses_it_the_second_time(
    tmp_path, run_database_url, redis_url, redis_client
):
    api_port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": run_database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": TEST_REDIS_PREFIX + "make-run:",
        "MODEL_DIR": str(tmp_path / "models"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "API_WORKERS": "2",
        "FLOWER_PORT": str(flower_port),
        "TRAIN_INTERVAL_SECONDS": "3600",
    }
    api = f"http://127.0.0.1:{api_port}"

    def personalised_feed():
        answer = requests.get(f"{api}/recommendations/user-0001?limit=5", timeout=2)
        return answer.status_code == 200 and answer.json()["strategy"] == "personalized"

    first = MakeRun(env, tmp_path, "first")
    try:
        first.wait_until(personalised_feed, "a personalised feed")
        first.wait_until(lambda: requests.get(f"http://127.0.0.1:{flower_port}/", timeout=2).ok, "Flower")
        assert requests.get(f"{api}/docs", timeout=2).status_code == 200
        token = (tmp_path / "env").read_text().strip().removeprefix("ADMIN_TOKEN=")
        status = requests.get(f"{api}/admin/model-status", headers={"Authorization": f"Bearer {token}"}, timeout=2)
        assert status.status_code == 200
        version = requests.get(f"{api}/recommendations/user-0001", timeout=2).json()["model_version"]
        assert first.ctrl_c() is not None
        deadline = time.monotonic() + 30
        while not first.group_is_gone() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.group_is_gone(), "processes of make run survived Ctrl-C"
    finally:
        first.kill()
    output = first.output()
    assert "loading demo data" in output
    assert '"status": "published"' in output

    second = MakeRun(env, tmp_path, "second")
    try:
        second.wait_until(personalised_feed, "a personalised feed on the second run")
        again = requests.get(f"{api}/recommendations/user-0001", timeout=2).json()
        assert again["model_version"] == version  # the published model was reused, not retrained
        second.ctrl_c()
    finally:
        second.kill()
    output = second.output()
    assert "loading demo data" not in output
    assert f"model {version} is already published" in output
