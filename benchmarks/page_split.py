"""Benchmark where a feed page's time goes in a web worker: the feed path's parts timed one by one, in process.

``benchmarks/page_cost.py`` gives a page's whole CPU cost; this one splits it. It sets up the same apps
(``page_cost.worker_app``: as a gunicorn worker sets itself up, on a redis-server of its own) for
``/recommendations`` without live state and for the live feed of ``benchmarks/serve.py`` (``--fresh-posts``
fresh posts, ``--seen-per-user`` views and half as many impressions per user), wraps each part of the feed
path in a wall-clock timer, and asks both for pages of random users of ``--users`` as ``serve.py`` does
(alternating in ``--rounds`` chunks). Reported per request: the microseconds spent in each part and how often
it ran. Parts nest: an indented part is inside the one above it. Each timer adds about a microsecond per
call to its part and the parts around it, so the figures show where the time goes rather than what a part
costs unobserved (``page_cost.py`` measures that). Usage, from the repository root::

    .venv/bin/python -m benchmarks.page_split [--users 100000] [--requests 20000] [--rounds 4]

Prints a markdown table (docs/PERFORMANCE.md, "Where a first look's time goes").
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# page_cost sets up Prometheus' per-process metric files before anything imports prometheus_client.
from benchmarks.page_cost import (
    add_feed_arguments,
    call,
    clean_up,
    publish_feeds,
    requests_for,
    worker_app,
)
from benchmarks.serve import PAGE_LIMIT
from common.redis_clients import worker_client
from testing.processes import RedisServer

WARM_UP_REQUESTS = 2000


class Timers:
    """Wall time and calls per named part, switched between the runs they are counted for."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, list[float]]] = {}  # run -> part -> [seconds, calls]
        self.run = ""

    def wrap(self, owner: Any, attribute: str, part: str) -> None:
        """Time every call of ``owner.attribute`` (a class's method, an instance's or a module's function)."""
        original: Callable[..., Any] = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent = self.totals.setdefault(self.run, {}).setdefault(part, [0.0, 0])
                spent[0] += time.perf_counter() - started
                spent[1] += 1

        setattr(owner, attribute, timed)


class PerApp:
    """A part whose object is each app's own (``getter(app)``), not a class or module shared by them."""

    def __init__(self, getter: Callable[[Any], Any]):
        self.getter = getter


def instrument(timers: Timers, apps: list) -> list[str]:
    """Wrap the feed path's parts (of every app in ``apps``); returns the parts in the order to print them."""
    from app import feed_shortcut, metrics
    from app.feed import lru, service, stages
    from app.feed.mirror import LiveMirror
    from app.list_memo import ListMemo
    from app.served_log import ServedLog

    feed = apps[0].extensions["recsvc"].feed
    parts: list[tuple[Any, str, str]] = [
        (feed_shortcut.FeedShortcut, "plain_request", "the shortcut reads the request (path, query arguments)"),
        (service.FeedService, "_resolve", "resolving the scope (FeedService._resolve)"),
        # What page_cost.worker_app counts: each app's cache holds its own counting wrapper.
        (PerApp(lambda app: app.extensions["recsvc"].cache), "user_reads",
         "  the Redis read (RecsCache.user_reads: one round trip)"),
        (service.FeedService, "_unpack", "  unpacking and checking the list, keeping it in the memo"),
        (ListMemo, "get", "  looking the list up in the worker's memo"),
        (LiveMirror, "remember", "  keeping the user's exclusions in the live mirror"),
        *[(type(stage), "__call__", f"stage {type(stage).__name__}") for stage in feed.stages],
        (stages.Page, "__call__", "the page (Page: cutting the response out of the feed)"),
        (stages, "_render", "  rendering positions no page showed yet (the rankings compute here)"),
        (lru.Lru, "put", "keeping the feed, the list and rankings (Lru.put, dropping the oldest)"),
        (metrics, "observe_request", "the request's metrics (count and latency)"),
        # The encoder each app's shortcut bound when it was made.
        (PerApp(lambda app: app.wsgi_app), "_body", "encoding the response (orjson)"),
        (ServedLog, "record", "queueing the page for the served stream (impressions)"),
    ]  # fmt: skip
    for owner, attribute, part in parts:
        for target in [owner.getter(app) for app in apps] if isinstance(owner, PerApp) else [owner]:
            timers.wrap(target, attribute, part)
    return [part for _, _, part in parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_feed_arguments(parser)
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests per app (default 20000)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating chunks per app (default 4)")
    args = parser.parse_args(argv)
    if min(args.users, args.requests, args.rounds) < 1:
        parser.error("--users, --requests and --rounds must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="recsvc-page-split-"))
    load_before = os.getloadavg()[0]
    redis_server = RedisServer().start()
    apps: list = []
    timers = Timers()
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    try:
        _, settings, live_settings = publish_feeds(worker_client(redis_server.url), redis_server.url, work, args)
        runs = {"/recommendations": worker_app(settings), "live feed": worker_app(live_settings)}
        apps = list(runs.values())
        order = instrument(timers, apps)
        pages = settings.top_k // PAGE_LIMIT
        users = list(range(args.users))
        chunk = -(-args.requests // args.rounds)
        for n, app in enumerate(apps):
            timers.run = "warm-up"
            for environ in requests_for(users, pages, WARM_UP_REQUESTS, seed=n):
                call(app, environ)
        for round_ in range(args.rounds):
            for n, (name, app) in enumerate(runs.items()):
                measured = requests_for(users, pages, chunk, seed=100 * round_ + n + 1)
                timers.run = name
                cpu_started, wall_started = time.process_time(), time.perf_counter()
                for environ in measured:
                    call(app, environ)
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - cpu_started
                wall[name] = wall.get(name, 0.0) + time.perf_counter() - wall_started
    finally:
        clean_up(apps, redis_server, work)

    count = chunk * args.rounds
    names = list(cpu)
    print(
        f"\nin process, one request at a time, {count} requests per app in {args.rounds} alternating chunks; model "
        f"{args.users} users x {args.items} posts x {args.components} components; live: {args.fresh_posts} fresh "
        f"posts, {args.seen_per_user} views and {args.seen_per_user // 2} impressions per user; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print("| part | " + " | ".join(f"{name}: us per request (calls)" for name in names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, figures in (
        ("whole request, wall", [1e6 * wall[name] / count for name in names]),
        ("whole request, CPU of the process", [1e6 * cpu[name] / count for name in names]),
    ):
        print(f"| {label} | " + " | ".join(f"{us:.1f}" for us in figures) + " |")
    for part in order:
        cells = []
        for name in names:
            seconds, calls = timers.totals.get(name, {}).get(part, [0.0, 0])
            cells.append(f"{1e6 * seconds / count:.1f} ({calls / count:.2f})")
        print(f"| {part} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
