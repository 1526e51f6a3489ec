"""Benchmark the garbage collector's pauses in a web worker around a model swap, in process.

A collection walks every tracked object made since the one before (and, for an older generation, those it
holds), holding the GIL meanwhile: every request of the worker waits. A worker's memories (kept feeds, lists,
exclusions: ``app.feed.service``, ``app.list_memo``, ``app.feed.mirror``) turn over with the pages, so most of
what they hold is young, and a swap empties them: what refills them counts towards ``API_GC_THRESHOLD``, so under
load a collection follows each swap within seconds. This sets up the app of ``--users`` as a gunicorn worker sets
itself up (``benchmarks.page_cost.worker_app``: reloader thread, frozen heap, the collector's threshold),
asks it for ``--requests`` pages of random users and random pages (the plain feed, or the live one of
``serve.py`` with ``--live``), then collects the youngest generation itself (what a collection would walk
once the memories are full), has another process publish a new version of the same size, asks for as many
pages again, and collects again. It reports every collection (``gc.callbacks``), those the threshold started
and the two it asked for: when, its generation, the tracked objects of the generations it walked, and how
long it took. The requests are made one at a time in this process, with no other load, so the durations are
a floor of what a worker under load sees (on 2 busy cores, several times more). Usage, from the repository root::

    .venv/bin/python -m benchmarks.collector [--users 100000] [--requests 30000] [--live]

Prints a markdown table (docs/PERFORMANCE.md, "Page entries the collector does not walk").
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before anything imports prometheus_client: per-process metric files, as under gunicorn.
from benchmarks.page_cost import add_feed_arguments, call, clean_up, publish_feeds, requests_for, worker_app
from benchmarks.side_by_side import PUBLISH_RANDOM_MODEL
from common.redis_clients import worker_client
from testing.processes import REPO, RedisServer, poll

SWAP_TIMEOUT = 60  # seconds for the worker's reloader to swap the new version in


class Collections:
    """Every collection while installed: (seconds since start, generation, objects walked, milliseconds, asked)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int, int, float, bool]] = []
        self.started = time.perf_counter()
        self._walking: tuple[int, int, float] = (0, 0, 0.0)

    def ask(self) -> None:
        """Collect the youngest generation now."""
        gc.collect(0)
        at, generation, walked, ms, _ = self.seen[-1]
        self.seen[-1] = (at, generation, walked, ms, True)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            generation = info["generation"]
            walked = sum(len(gc.get_objects(g)) for g in range(generation + 1))
            self._walking = (generation, walked, time.perf_counter())  # timed after the count
        else:
            generation, walked, began = self._walking
            ended = time.perf_counter()
            self.seen.append((began - self.started, generation, walked, 1000 * (ended - began), False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_feed_arguments(parser)
    parser.add_argument("--requests", type=int, default=30_000, help="pages before the swap, and after (30000)")
    parser.add_argument("--live", action="store_true", help="the live feed (fresh posts, exclusions)")
    args = parser.parse_args(argv)
    if min(args.users, args.requests) < 1:
        parser.error("--users and --requests must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="recsvc-collector-"))
    redis_server = RedisServer("tcp").start()
    apps = []
    try:
        _, plain, live = publish_feeds(worker_client(redis_server.url), redis_server.url, work, args)
        settings = live if args.live else plain
        app = worker_app(settings)
        apps.append(app)
        holder = app.extensions["recsvc"].holder
        before, after = (requests_for(list(range(args.users)), 5, args.requests, seed) for seed in (1, 2))
        collections = Collections()
        gc.callbacks.append(collections)
        for environ in before:
            call(app, environ)
        collections.ask()
        published = time.perf_counter() - collections.started
        # In another process, so that making and publishing the new version adds nothing to this one's heap.
        sizes = [str(args.users), str(args.items), str(args.components)]
        where = [redis_server.url, settings.redis_prefix, settings.model_dir, "11"]
        command = [sys.executable, "-c", PUBLISH_RANDOM_MODEL, *sizes, *where]
        version = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        if not poll(lambda: holder.current.version == version, SWAP_TIMEOUT, 0.01):  # the reloader swaps it in
            sys.exit(f"the worker did not swap version {version} in within {SWAP_TIMEOUT} s")
        swapped = time.perf_counter() - collections.started
        for environ in after:
            call(app, environ)
        collections.ask()
        gc.callbacks.remove(collections)
    finally:
        clean_up(apps, redis_server, work)

    feed = "live feed" if args.live else "/recommendations"
    print(
        f"\n{feed}, {args.users} users x {args.items} posts, {args.requests} pages before the swap and after, "
        f"in process; the new version published at {published:.1f} s and swapped in at {swapped:.1f} s; "
        f"API_GC_THRESHOLD {gc.get_threshold()[0]}; load average {os.getloadavg()[0]:.1f} after\n"
    )
    print("| at, s | generation | objects walked | ms | started by |")
    print("|---:|---:|---:|---:|---|")
    for at, generation, walked, ms, asked in collections.seen:
        print(f"| {at:.1f} | {generation} | {walked} | {ms:.1f} | {'this benchmark' if asked else 'the threshold'} |")
    later = [ms for at, _, _, ms, _ in collections.seen if at >= published]
    print(f"\ncollections after the publish: {len(later)}, the longest {max(later, default=0.0):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
