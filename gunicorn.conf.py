"""gunicorn settings of the web process (``gunicorn wsgi:app``, DESIGN section 2).

Read by the gunicorn master at start. It validates the service's settings first, so a bad value stops the
master with a message naming the variable before any worker starts. Each worker then loads the app (after
the fork: nothing is shared across it), loads the model before it serves, and runs one model reloader
thread (``post_worker_init``). Options may still be overridden as usual, e.g. with ``GUNICORN_CMD_ARGS``.
"""

import gc
import logging
import os
import shutil
import socket
import sys
import tempfile

from common.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    sys.exit(f"recsvc web: invalid configuration: {exc}")

# prometheus_client decides at import time whether to keep metrics in per-process files, so the directory
# must be set before any worker imports it. A fresh one per master unless the deployment chose one.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recsvc-prometheus-")

from app.logs import logging_config  # noqa: E402  (after PROMETHEUS_MULTIPROC_DIR is set)
from app.server_errors import install as install_json_server_errors  # noqa: E402

# Requests gunicorn refuses itself (oversized request line or headers, malformed HTTP) get a JSON error too.
install_json_server_errors()

_host = _settings.api_host
bind = f"[{_host}]:{_settings.api_port}" if ":" in _host else f"{_host}:{_settings.api_port}"
workers = _settings.api_workers
# gthread rather than sync: on the benchmark (benchmarks/serve.py) both gave the same throughput and
# latency within the noise of a shared 2-core machine, and gthread keeps HTTP keep-alive connections to
# the backend and lets a request stuck on a Redis timeout (0.2 s) block one thread instead of the worker.
# Two threads: request handling is CPU-bound under the GIL, and more threads (4 were tried) only added
# tail latency (p99 27-29 ms against 19-21 ms with two workers of two threads on 2 cores).
worker_class = "gthread"
threads = 2
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections evenly. On one
# shared socket whichever worker wakes first takes them, and keep-alive clients (the backend's connection
# pool, a load balancer) stay where they landed: 32 connections were seen split 29/3/0/0 over 4 workers.
# A second server on the same port would then start silently and share the traffic, so on_starting
# refuses a port that is already taken. Costs: gunicorn 27 cannot re-execute itself with reuse_port (USR2
# upgrades fail, the old master keeps serving) and ignores systemd's sockets. API_REUSE_PORT=0 gives both
# back, with one socket shared by the workers (docs/OPERATIONS.md, "Sizing the web tier").
reuse_port = _settings.api_reuse_port
keepalive = 5
timeout = 30
# On SIGTERM a worker stops accepting and finishes the requests it has for up to this long.
graceful_timeout = 20
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
logconfig_dict = logging_config(_settings.log_level)
# The control socket's default path is one per user, so several masters on a host would fight over it;
# nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server):
    """Refuse a taken port, and start from empty metric files (a previous run's values must not be added in).

    Without ``reuse_port`` gunicorn refuses a taken port itself, and must not be stopped here: after a
    ``USR2`` the new master inherits the old one's socket, and under systemd the port is systemd's.
    """
    if server.cfg.reuse_port:
        _refuse_taken_ports(server.cfg.address)
        server.log.error_log.addFilter(_ListeningAddress(server.cfg.address))
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def _refuse_taken_ports(addresses) -> None:
    """Stop the master if a TCP address is in use (``reuse_port`` alone would let it share the port)."""
    for address in addresses:
        if not isinstance(address, tuple):  # a Unix socket path: gunicorn itself refuses one in use
            continue
        host, port = address[0], address[1]
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    sys.exit(f"recsvc web: cannot listen on {host}:{port}: {exc.strerror}; is another server there?")


class _ListeningAddress(logging.Filter):
    """Fills in the address of gunicorn's ``Listening at: %s (%s)`` line, which reuse_port leaves empty.

    gunicorn prints the master's sockets there; with reuse_port the master opens none (each worker opens
    its own after the fork), so the line said ``Listening at:  (pid)``. It now names the configured
    addresses as gunicorn writes them (``http://host:port``, ``unix:path``).
    """

    def __init__(self, addresses):
        super().__init__()
        self._addresses = ",".join(_address_text(address) for address in addresses)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Listening at: %s (%s)" and isinstance(record.args, tuple) and record.args[:1] == ("",):
            record.args = (self._addresses, *record.args[1:])
        return True


def _address_text(address) -> str:
    if not isinstance(address, tuple):
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def post_worker_init(worker):
    """In each worker, after the fork: load the model, start the reloader thread, then freeze the heap.

    The reloader is skipped for another WSGI app run with these settings (the benchmark's bare endpoint).
    ``gc.freeze()`` moves the objects of the loaded app out of the collector's reach: a full collection
    no longer walks them (about 75,000 objects, a 30 ms pause measured in-process) in the middle of requests.
    """
    if "recsvc" in getattr(worker.wsgi, "extensions", {}):
        from app import reloader

        reloader.start(worker.wsgi)
    gc.freeze()


def worker_exit(server, worker):
    """Stop the worker's reloader thread and close its connections (a no-op when called in the master)."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "recsvc" in getattr(app, "extensions", {}):
        from app import reloader

        reloader.stop(app)
        app.extensions["recsvc"].close()


def child_exit(server, worker):
    """In the master: drop a dead worker's live gauges from the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
