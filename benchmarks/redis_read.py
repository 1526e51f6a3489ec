"""Benchmark the feed's one Redis read per page (``RecsCache.user_reads``): client and redis-server CPU per call.

Side by side in one run, alternating ``--rounds`` times, on a redis-server of its own holding ``--users``
users' lists (a real packed list of 100 posts each) and, per user, 10 reported views and 5 impressions:

1. the read as a web worker makes it: ``MULTI``, the commands and ``EXEC`` packed by hiredis and sent and read
   on the connection its thread holds, by the connection's own methods;
2. the same reads as one Lua script, as a cluster's shard is read (and, until 2026-11-30, one server too),
   through redis-py's ``Script`` and pool;
3. a plain ``HGET`` of the user's list through the pool, the whole read of the feed before issue #11, for scale.

CPU is read from ``/proc`` for this process (the client) and for redis-server; the figures are medians over
the rounds. Usage, from the repository root::

    .venv/bin/python -m benchmarks.redis_read [--users 20000] [--calls 20000] [--rounds 3]

Prints a markdown table (the figures of docs/PERFORMANCE.md, "The Redis read").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import redis

from common.recs_cache import RecsCache
from common.redis_clients import request_client
from testing.processes import RedisServer

VERSION = "20261129T000000Z-00000001"


class ScriptedReads(RecsCache):
    """``RecsCache`` reading a page's user as on a cluster: one script on the user's slot (redis-py's ``Script``)."""

    def __init__(self, client: redis.Redis, prefix: str):
        super().__init__(client, prefix)
        self.cluster = True  # only user_reads asks: what the benchmark reads is on this one server


def process_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far: its own code's, and the kernel's on its behalf."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    return sum(process_cpu_times(pid))


def fill(cache: RecsCache, users: int) -> None:
    """Every user's list of ``VERSION`` and its seen and shown posts."""
    rng = np.random.default_rng(7)
    items = np.tile(rng.permutation(2016)[:100].astype(np.int32), (users, 1))
    scores = np.tile(np.sort(rng.random(100, dtype=np.float32))[::-1], (users, 1))
    cache.write_user_lists(VERSION, [f"user-{user}" for user in range(users)], items, scores, ttl=3600)
    events = [(f"user-{u}", f"post-{p}", "view" if p < 10 else "impression") for u in range(users) for p in range(15)]
    for start in range(0, len(events), 1000):
        cache.record_events(events[start : start + 1000], cap=1000, ttl=3600)


def measure(call, user_ids: list[str], redis_pid: int) -> tuple[float, float, float]:
    """(client, redis-server, wall) microseconds per call over ``user_ids``."""
    me, server, wall = process_cpu(os.getpid()), process_cpu(redis_pid), time.perf_counter()
    for user_id in user_ids:
        call(user_id)
    n = len(user_ids)
    return (
        1e6 * (process_cpu(os.getpid()) - me) / n,
        1e6 * (process_cpu(redis_pid) - server) / n,
        1e6 * (time.perf_counter() - wall) / n,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20000, help="users with a list and exclusions (default 20000)")
    parser.add_argument("--calls", type=int, default=20000, help="reads per variant and round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians (default 3)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.calls < 1 or args.rounds < 1:
        parser.error("--users, --calls and --rounds must be at least 1")

    load_before = os.getloadavg()[0]
    server = RedisServer().start()
    try:
        client = request_client(server.url)  # the web's own client: short timeouts, one retry
        held, scripted = RecsCache(client, "bench:"), ScriptedReads(client, "bench:")
        fill(held, args.users)
        redis_pid = server.pid
        rng = np.random.default_rng(11)
        variants = {
            "`user_reads`, one transaction on the held connection (now)": lambda u: held.user_reads(
                u, list_version=VERSION, generation=False
            ),
            "`user_reads`, one script through redis-py (a cluster's shard; before)": lambda u: scripted.user_reads(
                u, list_version=VERSION, generation=False
            ),
            "`HGET` of the list through the pool (the feed before #11)": lambda u: client.hget(
                held.recs_key(VERSION, u), u
            ),
        }
        for call in variants.values():  # connections made, script loaded
            call("user-0")
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            user_ids = [f"user-{u}" for u in rng.integers(0, args.users, args.calls)]
            for name, call in variants.items():
                figures[name].append(measure(call, user_ids, redis_pid))
    finally:
        server.close()

    print(
        f"\n{args.users} users, {args.calls} reads per variant and round, median of {args.rounds} alternating "
        f"rounds, {os.cpu_count()} cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print("| read | client CPU us/call | redis-server CPU us/call | wall us/call |")
    print("|---|---:|---:|---:|")
    for name, runs in figures.items():
        client_us, server_us, wall_us = (statistics.median(run[i] for run in runs) for i in range(3))
        print(f"| {name} | {client_us:.0f} | {server_us:.0f} | {wall_us:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
