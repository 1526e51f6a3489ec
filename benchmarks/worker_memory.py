"""Benchmark the memory of the web workers of one host at a million users (issue 14, "one model per host").

The workers map the model artifact's arrays read-only (:mod:`ml.artifact`), so the embeddings and user ids
are in the page cache once per host, not once per worker. This measures what each worker holds on its own:
its USS (unique set size, ``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup``: what killing it
would free), beside its PSS and RSS, after it served pages of random users.

The model is synthesised with random arrays of the right shapes (``--users`` 1,000,000 by default): what a
worker holds depends on the shapes, not on what was learnt, and training a million users takes most of an
hour on the 2-core machine. The artifact is saved and published through the training pipeline's own stages
with the precomputed lists of only ``--listed-users`` users (writing a million lists takes minutes and a
gigabyte of Redis, which a worker's memory does not depend on): the other users' pages are ranked by the
worker's mapped model, the path that touches the most of it. A private redis-server and a temporary model
directory are used. Usage, from the repository root::

    .venv/bin/python -m benchmarks.worker_memory [--users 1000000] [--items 2016] [--workers 4] [--requests 4000]

Prints a markdown table (the figures of docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

from benchmarks.serve import featured_model
from common.config import load_settings
from common.recs_cache import RecsCache
from testing.processes import GunicornServer, RedisServer
from testing.service import publish


def smaps_mb(pid: int) -> dict[str, float]:
    """USS, PSS, RSS and anonymous memory of a process in MB, from ``/proc/<pid>/smaps_rollup``."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) / 1024
    return {
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
        "pss": fields["Pss"],
        "rss": fields["Rss"],
        "anonymous": fields["Anonymous"],
    }


def serve_pages(url: str, users: int, count: int) -> tuple[int, float]:
    """``count`` first pages of random users from 8 threads; returns (failed requests, seconds)."""
    session = requests.Session()
    started = time.perf_counter()

    def one(_: int) -> bool:
        user = random.randrange(users)
        return session.get(f"{url}/recommendations/user-{user}?limit=20", timeout=30).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        failed = sum(not ok for ok in pool.map(one, range(count)))
    return failed, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=2016)
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4000, help="pages served before measuring (default 4000)")
    parser.add_argument("--listed-users", type=int, default=20_000, help="users given a precomputed list")
    args = parser.parse_args(argv)
    settings = load_settings({})
    work = Path(tempfile.mkdtemp(prefix="recsvc-memory-"))
    private_redis = RedisServer().start()
    server = None
    try:
        started = time.perf_counter()
        model = featured_model(args.users, args.items, args.components, seed=1)
        unlisted = tuple(model.user_ids[args.listed_users :])
        client = redis.Redis.from_url(private_redis.url)
        publish(RecsCache(client, settings.redis_prefix), work / "models", model, skip_users=unlisted)
        artifact_mb = sum(p.stat().st_size for p in (work / "models").glob("*.npz")) / 1e6
        elapsed = time.perf_counter() - started
        print(f"model synthesised and published in {elapsed:.0f} s; artifact {artifact_mb:.0f} MB")
        del model, unlisted
        env = {"REDIS_URL": private_redis.url, "MODEL_DIR": str(work / "models"), "LOG_LEVEL": "warning"}
        server = GunicornServer(env, args.workers, work / "app.log").start(ready_timeout=300)
        failed, seconds = serve_pages(server.url, args.users, args.requests)
        per_worker = [smaps_mb(pid) for pid in server.worker_pids()]
        load = os.getloadavg()
        print(
            f"\n{args.users:,} users, {args.items:,} items, {args.components} components, {args.workers} workers; "
            f"{args.requests} pages in {seconds:.1f} s, {failed} failed; load average {load[0]:.1f}\n"
        )
        print("| worker | USS MB | PSS MB | RSS MB | anonymous MB |")
        print("|---|---|---|---|---|")
        for number, memory in enumerate(per_worker, 1):
            print(
                f"| {number} | {memory['uss']:.0f} | {memory['pss']:.0f} | {memory['rss']:.0f} "
                f"| {memory['anonymous']:.0f} |"
            )
        return 0 if failed == 0 and max(m["uss"] for m in per_worker) < 100 else 1
    finally:
        if server is not None:
            server.stop()
        private_redis.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
