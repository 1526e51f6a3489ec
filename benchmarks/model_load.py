"""Benchmark a web worker's load of a new model version: its time, and how long it makes the worker's requests wait.

A worker loads each published version in its reloader thread while its request threads serve. The load maps
the artifact's arrays and checks them (``ml.artifact.load``: the user ids' offsets, sorted order and UTF-8);
a step that holds the GIL for long is a pause of every request of that worker, which the p99 while versions
are published shows (``benchmarks/serve.py``; docs/PERFORMANCE.md). Here a thread that sleeps 0.2 ms at a time
stands in for the requests: its longest wait during each load is reported beside its longest wait over as
long a time while the process does nothing else (the scheduler's own granularity).

The model is random with ``--users`` users (1,000,000 by default) and the demo's posts; ``--ids uuid`` gives
the users 36-character ids instead of ``user-<n>``. It is saved once to a temporary directory and loaded
``--loads`` times. Usage, from the repository root::

    .venv/bin/python -m benchmarks.model_load [--users 1000000] [--ids numbered|uuid] [--loads 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import replace

import numpy as np

import ml.artifact
from ml.demo import DEFAULT_POSTS
from ml.settings import TrainingSettings
from testing.factories import random_model

TICK_SECONDS = 0.0002


class Waiter:
    """A thread that sleeps :data:`TICK_SECONDS` at a time and remembers when each of its wake-ups came."""

    def __init__(self):
        self._wakeups: list[float] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Waiter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            time.sleep(TICK_SECONDS)
            self._wakeups.append(time.perf_counter())

    def longest_wait(self, start: float, end: float) -> float:
        """The longest time between two wake-ups from ``start`` to ``end`` (perf_counter seconds)."""
        times = [start, *(t for t in self._wakeups if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="model users (default 1,000,000)")
    parser.add_argument("--items", type=int, default=DEFAULT_POSTS, help=f"model posts (default {DEFAULT_POSTS})")
    parser.add_argument("--ids", choices=["numbered", "uuid"], default="numbered", help="user-<n> or UUIDs")
    parser.add_argument("--loads", type=int, default=5, help="loads measured (default 5)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.loads < 1:
        parser.error("--users and --loads must be at least 1")

    model = random_model(args.users, args.items, TrainingSettings().components, seed=1)
    if args.ids == "uuid":
        rng = np.random.default_rng(1)
        model = replace(model, user_ids=[str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(args.users)])
    work = tempfile.mkdtemp(prefix="recsvc-model-load-")
    load_before = os.getloadavg()[0]
    try:
        version = ml.artifact.save(model, work, {})
        del model
        ml.artifact.load(work, version)  # the file in the page cache, as a worker finds a version just written
        seconds, waits, idle = [], [], []
        with Waiter() as waiter:
            for _ in range(args.loads):
                started = time.perf_counter()
                ml.artifact.load(work, version)
                ended = time.perf_counter()
                seconds.append(ended - started)
                waits.append(waiter.longest_wait(started, ended))
                time.sleep(ended - started)  # as long with nothing else running
                idle.append(waiter.longest_wait(ended, time.perf_counter()))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nmodel {args.users} users ({args.ids} ids) x {args.items} posts, {args.loads} loads, {os.cpu_count()} "
        f"cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(f"load of a version: median {1000 * statistics.median(seconds):.0f} ms")
    print(
        f"longest wait of another thread during a load: {1000 * max(waits):.1f} ms (median over the loads "
        f"{1000 * statistics.median(waits):.1f} ms); over as long idle: {1000 * max(idle):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
