"""``make run`` end to end: the README's first command sets up and runs the whole system, and Ctrl-C stops it.

Runs the real Makefile against the test PostgreSQL server (a database of its own, created by ``make run``
itself and dropped afterwards) and the test Redis database, on free ports, with the model directory, demo
data and env file in a temporary directory. Run twice: the second run must reuse the data and the model.
Nothing it starts listens beyond this host, and Ctrl-C stops every process it started and ends it quietly.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import requests

from tests.app.processes import descendant_pids, free_port, listening_addresses, running
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

    def listening(self) -> set[tuple[str, int]]:
        """The addresses and ports every process of this run listens on (TCP)."""
        found = set()
        for pid in descendant_pids(self.proc.pid):
            try:
                found |= set(listening_addresses(pid).values())
            except FileNotFoundError:
                pass  # exited meanwhile (a short-lived helper): listens on nothing
        return found


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
        first.wait_until(lambda: requests.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=2).ok, "Flower")
        listening = first.listening()
        assert {api_port, flower_port} <= {port for _, port in listening}, listening
        assert all(ipaddress.ip_address(address).is_loopback for address, _ in listening), listening
        assert requests.get(f"{api}/docs", timeout=2).status_code == 200
        token = (tmp_path / "env").read_text().strip().removeprefix("ADMIN_TOKEN=")
        status = requests.get(f"{api}/admin/model-status", headers={"Authorization": f"Bearer {token}"}, timeout=2)
        assert status.status_code == 200
        version = requests.get(f"{api}/recommendations/user-0001", timeout=2).json()["model_version"]
        processes = descendant_pids(first.proc.pid)
        # make ends by the SIGINT it got too, as any program a terminal's Ctrl-C stops: the shell prints nothing.
        assert first.ctrl_c() == -signal.SIGINT
        deadline = time.monotonic() + 30
        while any(running(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in processes if running(pid)], "processes of make run survived Ctrl-C"
    finally:
        first.kill()
    output = first.output()
    assert "make: ***" not in output, output[-2000:]  # was `make: *** [Makefile:..: run] Error 130`
    assert "Inspect method" not in output  # Flower's warnings while the worker was still booting
    assert f"http://127.0.0.1:{api_port}/    listens on 127.0.0.1 port {api_port}" in output
    assert f"http://127.0.0.1:{flower_port}/    listens on 127.0.0.1 port {flower_port}" in output
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


def test_make_venv_shows_the_install_as_it_goes():
    """A cold install takes minutes (rectools-lightfm compiles): a line says so, then pip shows its progress."""
    dry_run = subprocess.run(["make", "-n", "-B", "venv"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = dry_run.stdout.splitlines()
    (install,) = [i for i, line in enumerate(lines) if "-r requirements-dev.txt" in line]
    assert not re.search(r"\s(--quiet|-q)\b", lines[install]), lines[install]
    assert lines[install - 1].startswith("echo ") and "minutes" in lines[install - 1], lines[install - 1]
