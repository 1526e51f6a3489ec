"""Benchmark a web worker's access log line: gunicorn's own logger against ``app.access_log.AccessLogger``.

Each request a gunicorn worker answers ends with an access line. Both loggers are set up as
``gunicorn.conf.py`` sets the service's (``ACCESS_LOG_FORMAT``, the JSON lines of ``app.logs``, written to a
file as a worker's stdout is under the benchmarks) and log ``--lines`` requests each, alternating
``--rounds`` times; the request, its WSGI environ and its response are gunicorn's own objects for a feed page
as ``benchmarks/serve.py`` asks for it (its request parsed, its environ made by ``gunicorn.http.wsgi``, the
service's response headers). Reported: the process's CPU per line, medians over the rounds. The feed's
whole cost per request is ``benchmarks/page_cost.py``'s (without gunicorn) and ``benchmarks/serve.py``'s (with
it). Usage, from the repository root::

    .venv/bin/python -m benchmarks.access_log [--lines 50000] [--rounds 5]

Prints a markdown table (docs/PERFORMANCE.md, "A cheaper access log").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import socket
import statistics
import sys
import tempfile
import time

from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from app.access_log import ACCESS_LOG_FORMAT, AccessLogger
from app.logs import logging_config

REQUEST = b"GET /recommendations/user-000042?limit=20&offset=40 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
CLIENT, SERVER = ("127.0.0.1", 40123), ("127.0.0.1", 8000)
RESPONSE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", "1843"), ("X-Request-ID", "a" * 32)]


def _logger(logger_class: type[Logger], lines_to: object) -> Logger:
    """``logger_class`` configured as gunicorn.conf.py configures the service's, its access lines to ``lines_to``."""
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", ACCESS_LOG_FORMAT)
    config.set("logconfig_dict", logging_config("INFO"))
    with contextlib.redirect_stdout(lines_to):  # the access handler's stream is sys.stdout when configured
        return logger_class(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=50_000, help="lines per logger and round (default 50,000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians (default 5)")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.rounds < 1:
        parser.error("--lines and --rounds must be at least 1")
    request = next(iter(RequestParser(Config(), iter([REQUEST]), CLIENT)))
    ours, theirs = socket.socketpair()
    with contextlib.closing(ours), contextlib.closing(theirs), tempfile.TemporaryFile("w") as lines_to:
        response, environ = wsgi.create(request, ours, CLIENT, SERVER, Config())
        response.start_response("200 OK", RESPONSE_HEADERS)
        response.sent = 1843
        elapsed = datetime.timedelta(microseconds=2345)
        loggers = {"gunicorn's `Logger`": Logger, "`app.access_log.AccessLogger`": AccessLogger}
        micros: dict[str, list[float]] = {name: [] for name in loggers}
        for _ in range(args.rounds):
            for name, logger_class in loggers.items():
                logger = _logger(logger_class, lines_to)
                started = time.process_time()
                for _ in range(args.lines):
                    logger.access(response, request, environ, elapsed)
                micros[name].append((time.process_time() - started) / args.lines * 1e6)
    print(
        f"\n{args.lines:,} lines per logger, median of {args.rounds} alternating rounds, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| logger | CPU per line, us |")
    print("|---|---:|")
    for name, values in micros.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
