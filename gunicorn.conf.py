"""gunicorn settings of the web process (``gunicorn wsgi:app``, DESIGN section 2).

Read by the gunicorn master at start. It validates the service's settings first, so a bad value stops the
master with a message naming the variable before any worker starts. Each worker then loads the app (after
the fork: nothing is shared across it), loads the model before it serves, and runs one model reloader
thread. The hooks are :mod:`app.gunicorn_hooks`'s. Options may still be overridden as usual, e.g. with
``GUNICORN_CMD_ARGS``; another WSGI app runs with ``benchmarks/bare.gunicorn.conf.py`` (these settings
without the recsvc worker's hooks).
"""

import os
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

from app import gunicorn_hooks  # noqa: E402  (after PROMETHEUS_MULTIPROC_DIR is set)
from app.access_log import ACCESS_LOG_FORMAT  # noqa: E402
from app.api import REQUEST_LINE_LIMIT  # noqa: E402
from app.logs import logging_config  # noqa: E402
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
# tail latency (docs/PERFORMANCE.md, "What the serving path's speed rests on").
worker_class = "gthread"
threads = 2
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections evenly. On one
# shared socket whichever worker wakes first takes them, and keep-alive clients (the backend's connection
# pool, a load balancer) stay where they landed, so a few workers take all the load.
# A second server on the same port would then start silently and share the traffic, so on_starting
# refuses a port that is already taken. Costs: gunicorn 27 cannot re-execute itself with reuse_port (USR2
# upgrades fail, the old master keeps serving) and ignores systemd's sockets. API_REUSE_PORT=0 gives both
# back, with one socket shared by the workers (docs/OPERATIONS.md, "Sizing the web tier").
reuse_port = _settings.api_reuse_port
# A longer request line is a 414 request_uri_too_long (app.api.REQUEST_LINE_LIMIT says why this long).
limit_request_line = REQUEST_LINE_LIMIT
keepalive = 5
timeout = 30
# On SIGTERM a worker stops accepting and finishes the requests it has for up to this long.
graceful_timeout = 20
accesslog = "-"
access_log_format = ACCESS_LOG_FORMAT
# gunicorn's logger with access lines made from the atoms the format names only: the same lines for 10 us
# less per request (app.access_log; docs/PERFORMANCE.md, "A cheaper access log").
logger_class = "app.access_log.AccessLogger"
logconfig_dict = logging_config(_settings.log_level)
# The control socket's default path is one per user, so several masters on a host would fight over it;
# nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server):
    gunicorn_hooks.refuse_taken_ports(server)
    gunicorn_hooks.empty_metrics_dir()


post_worker_init = gunicorn_hooks.start_worker
worker_exit = gunicorn_hooks.stop_worker
child_exit = gunicorn_hooks.mark_worker_dead
if _OWN_METRICS_DIR:
    on_exit = gunicorn_hooks.remove_metrics_dir
