"""gunicorn settings of the web process (``gunicorn wsgi:app``, DESIGN section 2).

Read by the gunicorn master at start. It validates the service's settings first, so a bad value stops the
master with a message naming the variable before any worker starts. Each worker then loads the app (after
the fork: nothing is shared across it), loads the model before it serves, and runs one model reloader
thread (``post_worker_init``). Options may still be overridden as usual, e.g. with ``GUNICORN_CMD_ARGS``.
"""

import os
import shutil
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
worker_class = "gthread"
threads = 4
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
    """Start from empty metric files: values of a previous run's workers must not be added in."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def post_worker_init(worker):
    """In each worker, after the fork: load the model, then start the reloader thread.

    Skipped for another WSGI app run with these settings (the benchmark's bare endpoint).
    """
    if "recsvc" in getattr(worker.wsgi, "extensions", {}):
        from app import reloader

        reloader.start(worker.wsgi)


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
