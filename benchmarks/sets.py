"""Benchmark :mod:`ml.sets` against numpy: distinct keys and membership at a million users' scale.

Side by side in one run, alternating ``--rounds`` times, on ``--keys`` random user × post pair keys (int64,
nearly all distinct, as the training data's pairs at a million users and 100,000 posts), then on the same
number of user ids with ``--users`` distinct values:

1. ``np.unique(keys)`` against ``ml.sets.unique(keys)``;
2. ``np.isin(few, keys)`` (1,000 keys looked up: numpy makes the distinct set of ``keys`` first) against
   ``ml.sets.isin``.

Usage, from the repository root::

    .venv/bin/python -m benchmarks.sets [--keys 18000000] [--users 1000000] [--rounds 3]

Prints a markdown table of the median seconds (the figures of docs/PERFORMANCE.md, "Distinct keys").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from ml import sets

POSTS = 100_000


def _seconds(work: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=18_000_000, help="pair keys (default 18,000,000)")
    parser.add_argument("--users", type=int, default=1_000_000, help="distinct user ids (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians (default 3)")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.users < 1 or args.rounds < 1:
        parser.error("--keys, --users and --rounds must be at least 1")
    rng = np.random.default_rng(1)
    keys = rng.integers(0, args.users, args.keys).astype(np.int64) * POSTS + rng.integers(0, POSTS, args.keys)
    users = rng.integers(0, args.users, args.keys).astype(np.int32)
    few = keys[rng.integers(0, args.keys, 1_000)]
    cases = {
        "distinct pair keys": (lambda: np.unique(keys), lambda: sets.unique(keys)),
        "distinct user ids": (lambda: np.unique(users), lambda: sets.unique(users)),
        "1,000 pair keys looked up": (lambda: np.isin(few, keys), lambda: sets.isin(few, keys)),
    }
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(args.rounds):
        for name, (numpy_way, ours) in cases.items():
            numpy_s, expected = _seconds(numpy_way)
            ours_s, found = _seconds(ours)
            if not np.array_equal(found, expected):
                raise SystemExit(f"ml.sets differs from numpy on {name}")
            times[name][0].append(numpy_s)
            times[name][1].append(ours_s)
    print(
        f"\n{args.keys:,} values, {args.users:,} users x {POSTS:,} posts, median of {args.rounds} alternating rounds, "
        f"numpy {np.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| case | numpy s | ml.sets s | numpy / ml.sets |")
    print("|---|---:|---:|---:|")
    for name, (numpy_times, our_times) in times.items():
        numpy_s, ours_s = statistics.median(numpy_times), statistics.median(our_times)
        print(f"| {name} | {numpy_s:.2f} | {ours_s:.2f} | {numpy_s / ours_s:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
