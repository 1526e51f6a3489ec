"""What the web process does around gunicorn's workers, as the hooks ``gunicorn.conf.py`` installs.

- the master refuses a TCP port already taken (``reuse_port`` would let a second server share it silently)
  and names its addresses in gunicorn's "Listening at" line;
- Prometheus's per-process metric files start empty, a dead worker's live gauges go, and a directory the
  master made goes with it;
- a recsvc worker loads its model and starts its reloader after the fork (:mod:`app.reloader`), stops it at
  exit, and settles (BLAS on one thread, the loaded app frozen, collections rare).

The app's modules are imported inside the hooks: the master, which serves nothing, never loads them.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import sys


def refuse_taken_ports(server) -> None:
    """``on_starting``, with ``reuse_port``: stop the master if a configured TCP address is in use.

    Without ``reuse_port`` gunicorn refuses a taken port itself, and must not be stopped here: after a
    ``USR2`` the new master inherits the old one's socket, and under systemd the port is systemd's.
    """
    if not server.cfg.reuse_port:
        return
    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a Unix socket path: gunicorn itself refuses one in use
            continue
        host, port = address[0], address[1]
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            sys.exit(f"recsvc web: invalid configuration: API_HOST={host!r} is invalid: {exc.strerror}")
        for family, kind, proto, _, sockaddr in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    sys.exit(f"recsvc web: cannot listen on {host}:{port}: {exc.strerror}; is another server there?")
    server.log.error_log.addFilter(ListeningAddress(server.cfg.address))


class ListeningAddress(logging.Filter):
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


def empty_metrics_dir() -> None:
    """``on_starting``: start from empty metric files (a previous run's values must not be added in)."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def mark_worker_dead(server, worker) -> None:
    """``child_exit``, in the master: drop a dead worker's live gauges from the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def remove_metrics_dir(server) -> None:
    """``on_exit``: remove the metrics directory the master made for itself."""
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def start_worker(worker) -> None:
    """``post_worker_init``, in each recsvc worker after the fork: load the model, start the reloader thread,
    then settle the worker (:func:`settle_worker`)."""
    from app import reloader

    reloader.start(worker.wsgi)
    settle_worker(worker)


def settle_worker(worker) -> None:
    """Set up the process for serving once the app is loaded: BLAS on one thread, a frozen heap, a rare collector.

    BLAS runs single-threaded for good (:func:`ml.model.pin_blas_to_one_thread`), as every ranking of a page
    asks anyway, so the per-call limit costs nothing.

    The loaded app moves out of the collector's reach (``gc.freeze()``), so a full collection no longer walks
    its objects (tens of thousands) in the middle of requests. What requests leave behind is freed by
    reference counting (pages make next to no reference cycles), but the worker's bounded memories (kept
    feeds, lists, exclusions: tens of thousands of objects) fill and turn over, and Python's collector, run
    every 700 objects made and not yet freed, walked all of them each time: pauses of tens of milliseconds in
    the middle of pages (docs/PERFORMANCE.md, "The garbage collector"). A collection waits for
    ``API_GC_THRESHOLD`` (50,000) such objects instead; what waits for it meanwhile is the little cyclic
    garbage a worker makes (an error's traceback, say): about that many objects at most.
    """
    from common.config import load_settings  # checked by the master already (gunicorn.conf.py)
    from ml.model import pin_blas_to_one_thread

    pin_blas_to_one_thread()
    gc.freeze()
    gc.set_threshold(load_settings().api_gc_threshold)


def stop_worker(server, worker) -> None:
    """``worker_exit``: stop the worker's reloader thread and close its connections (a no-op in the master)."""
    app = getattr(worker, "wsgi", None)
    if app is not None:
        from app import reloader

        reloader.stop(app)
        app.extensions["recsvc"].close()
