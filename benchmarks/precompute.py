"""Benchmark how the precompute's run time falls with worker processes (issue 14 item 5).

Above ``PRECOMPUTE_CHUNK_USERS`` users a training run's precompute is a chord of ``tasks.precompute_chunk``
tasks that every worker process takes from the queue: each loads the version's artifact once, ranks its chunks'
users and writes their lists (:func:`tasks.pipeline.precompute_users`). This runs exactly that body in 1, 2, ...
processes, the chunks dealt out as a queue deals them, and times the whole precompute (from the started, idle
processes being told to begin, to the last list written; the lists unpaced, ``PUBLISH_WRITE_RATE`` 0). The
model is synthesised with random arrays of the right shapes (what the precompute costs depends on the shapes,
not on what was learnt); the lists go to ``--redis-url`` under a prefix of their own, deleted afterwards.
Usage, from the repository root::

    .venv/bin/python -m benchmarks.precompute [--users 100000] [--items 20000] [--workers 1,2]
        [--chunk-users 10000] [--redis-url redis://127.0.0.1:6379/0]

Prints a markdown table (the figures of docs/PERFORMANCE.md) and the load average.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

import redis

import ml.artifact
from benchmarks.serve import random_model
from common.config import Settings
from common.recs_cache import RecsCache
from tasks import pipeline

PREFIX = "recsvc-bench-precompute:"


def _work(model_dir: str, version: str, redis_url: str, queue, results, ready, start) -> None:
    """One worker process (started and imported, as a Celery worker is): on ``start``, load the artifact once,
    then take chunks until the queue is empty."""
    ready.put(os.getpid())
    start.wait()
    settings = Settings(model_dir=model_dir, redis_url=redis_url, redis_prefix=PREFIX, publish_write_rate=0)
    cache = RecsCache(redis.Redis.from_url(redis_url), PREFIX)
    model, _ = ml.artifact.load(model_dir, version)
    written = 0
    while (chunk := queue.get()) is not None:
        written += pipeline.precompute_users(settings, cache, version, model, *chunk)
    results.put(written)


def run(model_dir: str, version: str, redis_url: str, num_users: int, chunk_users: int, workers: int) -> float:
    """Seconds for ``workers`` processes to precompute every user's list of ``version``."""
    context = multiprocessing.get_context("spawn")
    queue, results, ready, start = context.Queue(), context.Queue(), context.Queue(), context.Event()
    for chunk in pipeline.chunk_ranges(num_users, chunk_users):
        queue.put(chunk)
    for _ in range(workers):
        queue.put(None)
    args = (model_dir, version, redis_url, queue, results, ready, start)
    processes = [context.Process(target=_work, args=args) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    started = time.perf_counter()
    start.set()
    written = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    seconds = time.perf_counter() - started
    if written != num_users:
        raise SystemExit(f"wrote {written} of {num_users} lists")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="comma-separated process counts")
    parser.add_argument("--chunk-users", type=int, default=10_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    client = redis.Redis.from_url(args.redis_url)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-precompute-") as model_dir:
        model = random_model(args.users, args.items, args.components, seed=1)
        version = ml.artifact.save(model, model_dir, {}, make_current=False)
        del model
        try:
            for workers in counts:
                rows.append((workers, run(model_dir, version, args.redis_url, args.users, args.chunk_users, workers)))
        finally:
            keys = list(client.scan_iter(match=f"{PREFIX}*", count=10_000))
            for start in range(0, len(keys), 10_000):
                client.delete(*keys[start : start + 10_000])
    end = os.getloadavg()
    out = sys.stdout
    out.write(
        f"{args.users:,} users, {args.items:,} posts, {args.components} components, chunks of {args.chunk_users:,}\n\n"
    )
    out.write("| worker processes | precompute s | users/s | speed-up |\n|---|---|---|---|\n")
    for workers, seconds in rows:
        out.write(f"| {workers} | {seconds:.1f} | {args.users / seconds:,.0f} | {rows[0][1] / seconds:.2f}x |\n")
    out.write(
        f"\nload average (1, 5, 15 min) at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
        f"at end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}; {os.cpu_count()} CPUs\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
