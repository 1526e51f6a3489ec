"""Real service processes for the tests and benchmarks: gunicorn, a private redis-server, ``celery -A tasks``.

Servers bind a port found free by binding to port 0, so parallel runs do not collide. Each process runs as
it does in production, configured through its environment only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from testing.polling import poll, wait_until

REPO = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")


# Ports for the servers tests start come from below the kernel's range for outgoing connections' local ports
# (its low end is read from here, 32768 by default): a port from that range, as binding port 0 gives, can be taken
# by any client's connection between its choice and the server's bind (CI, 2026-12-01).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000
_choices = random.Random()  # its own generator: a test that seeds the module's cannot make workers collide


def free_port() -> int:
    """A TCP port nobody listens on right now, below the ephemeral range, for servers a test starts."""
    try:
        highest = int(_EPHEMERAL_RANGE.read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        highest = 32_767
    for _ in range(100):
        port = _choices.randrange(_LOWEST_PORT, max(highest, _LOWEST_PORT + 1000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port between {_LOWEST_PORT} and {highest}")


def child_pids(pid: int) -> list[int]:
    """The pids of process ``pid``'s children (none once it has gone)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def descendant_pids(pid: int) -> set[int]:
    """The pids of process ``pid``'s children, their children and so on (whichever still run)."""
    found, pending = set(), [pid]
    while pending:
        children = child_pids(pending.pop())
        found.update(children)
        pending.extend(children)
    return found


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening_addresses(pid: int) -> dict[int, tuple[str, int]]:
    """The TCP sockets process ``pid`` listens on, from /proc: socket inode -> (local address, port)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed since the listing (a connection just finished): not a listener
        if target.startswith("socket:["):
            held.add(int(target[len("socket:[") : -1]))
    listening = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(fields[9]) in held:  # 0A: LISTEN
                # The address is printed as 32-bit words in the host's byte order.
                words = [int(address[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(address), 8)]
                listening[int(fields[9])] = (str(ipaddress.ip_address(b"".join(words))), int(port, 16))
    return listening


def tls_server_options(directory: str | Path) -> list[str]:
    """redis-server's TLS options with a self-signed certificate for 127.0.0.1 in ``directory`` (``cert.pem``,
    made by ``openssl`` unless there), which clients check the server against; no client certificates."""
    cert, key = f"{directory}/cert.pem", f"{directory}/key.pem"
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
    return ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]


class RedisServer:
    """A throwaway redis-server without persistence, which a test may stop and start again on the same port.

    ``transport`` ``unix``: it listens on a Unix socket only (no TCP port), and ``url`` is ``unix://...``;
    ``tls``: on TLS only, with a self-signed certificate made by ``openssl`` (``url`` is ``rediss://...``
    with the certificate as the CA to check it against); ``tcp+unix``: on TCP (``url``) and on a Unix socket
    (``unix_url``), so that two clients of the same data can be told apart by transport.
    """

    def __init__(self, transport: str = "tcp"):
        self._dir = tempfile.mkdtemp(prefix="recsvc-redis-")
        self.port = 0 if transport == "unix" else free_port()
        self._transport = transport
        self.unix_url = f"unix://{self._dir}/redis.sock?db=0" if "unix" in transport else None
        self.url = {
            "tcp": f"redis://127.0.0.1:{self.port}/0",
            "tcp+unix": f"redis://127.0.0.1:{self.port}/0",
            "unix": self.unix_url,
            "tls": f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self._dir}/cert.pem",
        }[transport]
        self._process: subprocess.Popen | None = None

    def _listening(self) -> list[str]:
        unix = ["--unixsocket", f"{self._dir}/redis.sock", "--unixsocketperm", "700"] if self.unix_url else []
        if self._transport == "tls":
            return ["--port", "0", "--tls-port", str(self.port), *tls_server_options(self._dir)]
        return ["--port", str(self.port), *unix]

    def start(self) -> RedisServer:
        command = ["redis-server", *self._listening(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(
            [*command, "--dir", self._dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        try:
            if not poll(client.ping, 10):
                raise RuntimeError(f"redis-server at {self.url} did not start")
        finally:
            client.close()
        return self

    @property
    def pid(self) -> int:
        """The running redis-server's process id (benchmarks read its CPU time)."""
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


# The access log's format (app.access_log.ACCESS_LOG_FORMAT): '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=...'.
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


# The gunicorn settings of another WSGI app than recsvc's (no model, no reloader in its workers).
BARE_GUNICORN_CONFIG = "benchmarks/bare.gunicorn.conf.py"


PORT_ATTEMPTS = 3
PORT_TAKEN = "Address already in use"  # in the master's refusal of a port it cannot listen on


class GunicornServer:
    """gunicorn on a free port: ``wsgi:app`` with the repository's gunicorn.conf.py, or ``app`` with ``config``.

    ``repo`` is the checkout it runs from (its code and its gunicorn.conf.py; this one's virtualenv): another
    checkout lets a benchmark serve two trees side by side.
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 3,
        log_path: Path | None = None,
        app: str = "wsgi:app",
        config: str = "gunicorn.conf.py",
        repo: Path = REPO,
    ):
        self.workers = workers
        self.app = app
        self.config = config
        self.repo = repo
        self._env = {
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            **env,
            "API_HOST": "127.0.0.1",
            "API_WORKERS": str(workers),
        }
        self._choose_port()
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="recsvc-gunicorn-", suffix=".log")[1])
        self._process: subprocess.Popen | None = None

    def _choose_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env["API_PORT"] = str(self.port)

    def start(self, ready_timeout: float = 60) -> GunicornServer:
        """Start, and wait until every worker is up (for the recsvc app: holds a model and its reloader listens).

        :func:`free_port` only finds a port free at that moment: another process may still take it before
        gunicorn binds it (another test's server), and the master then exits refusing it
        (``app.gunicorn_hooks.refuse_taken_ports``). The server then starts again on another port, up to
        :data:`PORT_ATTEMPTS` times.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [str(GUNICORN), "-c", self.config, self.app],
                    cwd=self.repo,
                    env=self._env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                ready = poll(lambda: self._process.poll() is not None or self._ready(), ready_timeout, 0.2)
            except BaseException:  # a readiness check that failed outright leaves no gunicorn behind either
                self.stop()
                raise
            if ready and self._process.poll() is None:
                return self
            self.stop()
            if attempt < PORT_ATTEMPTS and PORT_TAKEN in self.log():
                self._choose_port()
                continue
            break
        raise RuntimeError(f"gunicorn did not start {self.workers} workers:\n{self.log()}")

    def _ready(self) -> bool:
        if self.app == "wsgi:app":
            listening = [s for s in self.metric_samples("recsvc_reloader_listening") if s.value == 1]
            return len(self.worker_versions()) == self.workers and len(listening) == self.workers
        # Any other app: every worker process exists and the server answers.
        return len(self.worker_pids()) == self.workers and requests.get(self.url, timeout=5).status_code > 0

    @property
    def master_pid(self) -> int:
        return self._process.pid

    def worker_pids(self) -> list[int]:
        """The pids of the master's worker processes."""
        return child_pids(self.master_pid)

    def metric_samples(self, family: str) -> list:
        """The samples of one metric family on the server's ``/metrics`` (added up over its workers)."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return [
            sample for found in text_string_to_metric_families(text) if found.name == family for sample in found.samples
        ]

    def worker_versions(self) -> dict[str, str]:
        """pid -> model version held, for every live worker (from the multiprocess model_info gauge)."""
        return {s.labels["pid"]: s.labels["version"] for s in self.metric_samples("recsvc_model_info") if s.value == 1}

    def holds(self, version: str) -> bool:
        """Whether each of the server's workers is up and holds ``version`` (none is missing, none holds another)."""
        held = self.worker_versions()
        return len(held) == self.workers and set(held.values()) == {version}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> GunicornServer:
        return self

    def __exit__(self, *exc_info) -> None:
        """Stop the server whatever happened in the block, so that no test leaves a gunicorn running."""
        self.stop()

    def stop(self) -> int | None:
        """SIGTERM (graceful shutdown) and wait; returns the exit code (None if it was already stopped)."""
        if self._process is None:
            return None
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait(10)
        self._process = None
        return code


class CeleryProcess:
    """One ``celery -A tasks ...`` process (worker, beat, Flower, the CLI) in its own process group, logging
    to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """Wait until the process's output matches ``pattern`` (a regex); fail early if the process exits."""

        def found():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return re.search(pattern, self.log())

        return wait_until(found, timeout, f"{pattern!r} in the output of {self.name}", interval=0.05)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (a worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Kill the process group and reap the leader."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._log.close()


def start_worker(
    services: Callable[[str, list[str], dict[str, str]], CeleryProcess],
    env: dict[str, str],
    name: str = "w1",
    concurrency: int = 1,
) -> CeleryProcess:
    """A ``celery -A tasks worker`` process started through ``services``, returned once it is consuming."""
    worker = services(
        f"worker-{name}",
        ["worker", "--loglevel=INFO", f"--hostname={name}@%h", f"--concurrency={concurrency}", "--without-gossip",
         "--without-mingle", "--pool=prefork"],
        env,
    )  # fmt: skip
    worker.wait_for_log(r"\bready\.")
    return worker
