"""Benchmark the live feed's freshness: seconds from a write to its effect in a live gunicorn's feed.

It loads the demo data (``ml.demo``, default size) into PostgreSQL, starts its own redis-server, a Celery
worker (which trains one model), beat (which sends ``tasks.refresh`` every ``--interval`` seconds) and
gunicorn, all as in production, and then measures, ``--trials`` times each:

- ``post``: INSERT of a post of a user's favourite community with its favourite tags → the post is on the
  user's first page (100 posts);
- ``user``: INSERT of a user and two follows → its feed has the ``features`` strategy;
- ``like``: INSERT of a like of the first post of a user's first page → the post is gone from that page;
- ``event``: the same like through ``POST /events`` → the post is gone (target: within 1 s).

The INSERT trials start ``--spacing`` seconds apart (plus jitter, so they meet the refresh at every phase
of its interval) and run side by side on distinct users; each is polled every 0.1 s. The event trials run
one after the other, polled every 10 ms. No model is trained after the first. Usage, from the repository
root::

    .venv/bin/python -m benchmarks.freshness [--interval 30] [--trials 20]
        [--database-url postgresql://postgres@127.0.0.1:5432/recsvc_bench]

The database is created if missing and its tables are replaced. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis
import requests
from celery import Celery

import ml.db.connection
import ml.db.load
import ml.demo
from common.recs_cache import RecsCache
from testing.polling import poll
from testing.processes import CeleryProcess, GunicornServer, RedisServer
from testing.service import favourite_taste, most_active_users

PAGE = 100
PREFIX = "recsvc-bench-freshness:"


def active_users(conn, count: int) -> list[tuple[str, str, list[str]]]:
    """The ``count`` most active users, each with its favourite community and its two favourite tags there."""
    return [(user, *favourite_taste(conn, user)) for user in most_active_users(conn, count)]


class Trials:
    """INSERT trials running side by side: each has a start time and a condition polled until it holds."""

    def __init__(self, server: GunicornServer, timeout: float):
        self.server, self.timeout = server, timeout
        self.pending: list[tuple[str, float, object]] = []
        self.done: dict[str, list[float]] = {"post": [], "user": [], "like": []}
        self.failed: Counter = Counter()

    def feed(self, user: str, limit: int = PAGE) -> dict:
        return requests.get(f"{self.server.url}/recommendations/{user}", params={"limit": limit}, timeout=10).json()

    def add(self, kind: str, started: float, condition) -> None:
        self.pending.append((kind, started, condition))

    def poll(self) -> None:
        still = []
        for kind, started, condition in self.pending:
            if condition():
                self.done[kind].append(time.monotonic() - started)
            elif time.monotonic() - started > self.timeout:
                self.failed[kind] += 1
            else:
                still.append((kind, started, condition))
        self.pending = still


def run_insert_trials(conn, trials: Trials, tastes, count: int, spacing: float) -> None:
    """Start ``count`` trials of each INSERT kind about ``spacing`` seconds apart, and poll them to the end."""
    rng = random.Random(7)
    next_start = time.monotonic()
    started = 0
    with conn.cursor() as cur:
        while started < count or trials.pending:
            if started < count and time.monotonic() >= next_start:
                i = started
                fan, community, tags = tastes[i]
                post = f"fresh-{secrets.token_hex(4)}"
                cur.execute(
                    "INSERT INTO posts (id, community_id, author_id, tags, created_at)"
                    " VALUES (%s, %s, NULL, %s, now())",
                    (post, community, tags),
                )
                trials.add("post", time.monotonic(), lambda u=fan, p=post: p in posts_of(trials.feed(u)))

                newbie = f"newbie-{secrets.token_hex(4)}"
                cur.execute("INSERT INTO users (id, role, created_at) VALUES (%s, 'fan', now())", (newbie,))
                for followed in {community, tastes[(i + 1) % count][1]}:  # two follows, or one if they coincide
                    cur.execute(
                        "INSERT INTO follows (user_id, community_id, created_at) VALUES (%s, %s, now())",
                        (newbie, followed),
                    )
                trials.add("user", time.monotonic(), lambda u=newbie: trials.feed(u)["strategy"] == "features")

                liker = tastes[count + i][0]
                top = posts_of(trials.feed(liker, limit=20))[0]
                cur.execute(
                    "INSERT INTO interactions (user_id, post_id, type, created_at) VALUES (%s, %s, 'like', now())",
                    (liker, top),
                )
                trials.add("like", time.monotonic(), lambda u=liker, p=top: p not in posts_of(trials.feed(u, 20)))
                started += 1
                next_start += spacing * rng.uniform(0.5, 1.5)
            trials.poll()
            time.sleep(0.1)


def run_event_trials(server: GunicornServer, token: str, tastes, count: int) -> list[float]:
    """``count`` likes through POST /events, one after the other: seconds until the post left the first page."""
    latencies = []
    for fan, _, _ in tastes[:count]:
        page = requests.get(f"{server.url}/recommendations/{fan}", params={"limit": 20}, timeout=10).json()
        top = posts_of(page)[0]
        event = {"user_id": fan, "post_id": top, "type": "like", "created_at": "2026-01-01T00:00:00Z"}
        started = time.monotonic()
        answer = requests.post(
            f"{server.url}/events", json={"events": [event]}, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        answer.raise_for_status()
        while top in posts_of(
            requests.get(f"{server.url}/recommendations/{fan}", params={"limit": 20}, timeout=10).json()
        ):
            time.sleep(0.01)
        latencies.append(time.monotonic() - started)
    return latencies


def posts_of(page: dict) -> list[str]:
    return [entry["post_id"] for entry in page.get("recommendations", [])]


def summary(label: str, latencies: list[float], failed: int, target: float) -> str:
    if not latencies:
        return f"| {label} | 0 | – | – | {target:g} | {failed} |"
    return (
        f"| {label} | {len(latencies)} | {statistics.median(latencies):.2f} | {max(latencies):.2f} | {target:g} "
        f"| {failed} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=30.0, help="REFRESH_INTERVAL_SECONDS (default 30)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=None, help="seconds between INSERT trials (interval/10)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/recsvc_bench")
    args = parser.parse_args(argv)
    spacing = args.spacing if args.spacing is not None else args.interval / 10
    ml.db.connection.create_database(args.database_url)
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-freshness-") as work:
        work_dir = Path(work)
        ml.demo.generate(work_dir / "data", seed=1)
        conn = ml.db.connection.connect(args.database_url)
        ml.db.load.load_dataset_dir(conn, work_dir / "data", replace=True)
        conn.autocommit = True
        redis_server = RedisServer().start()
        env = {
            **os.environ,
            "DATABASE_URL": args.database_url,
            "REDIS_URL": redis_server.url,
            "REDIS_PREFIX": PREFIX,
            "MODEL_DIR": str(work_dir / "models"),
            "REFRESH_INTERVAL_SECONDS": str(args.interval),
            "ADMIN_TOKEN": token,
            "EVENTS_RATE_LIMIT": "1000/second",
            "LOG_LEVEL": "warning",
        }
        celeries: list[CeleryProcess] = []
        server = None
        try:
            worker = ["worker", "--concurrency=2", "--without-gossip", "--without-mingle"]
            celeries.append(CeleryProcess("worker", worker, env, work_dir / "worker.log"))
            client = Celery("bench", broker=redis_server.url, backend=redis_server.url)
            client.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
            trained = client.send_task("tasks.train", kwargs={"force": True}).get(timeout=300)
            if trained["status"] != "published":
                raise SystemExit(f"training did not publish: {trained}")
            beat = ["beat", "--schedule", str(work_dir / "beat-schedule")]
            celeries.append(CeleryProcess("beat", beat, env, work_dir / "beat.log"))
            server = GunicornServer(env, workers=2, log_path=work_dir / "gunicorn.log").start()
            tastes = active_users(conn, 3 * args.trials)
            cache = RecsCache(redis.Redis.from_url(redis_server.url), PREFIX)
            if not poll(cache.live_state, args.interval + 30):
                raise SystemExit("no refresh ran after the model was published")
            trials = Trials(server, timeout=args.interval + 30)
            run_insert_trials(conn, trials, tastes, args.trials, spacing)
            events = run_event_trials(server, token, tastes[2 * args.trials :], args.trials)
        finally:
            if server is not None:
                server.stop()
            for process in celeries:
                process.stop()
            redis_server.close()
            conn.close()
    bound = args.interval + 5
    sys.stdout.write(
        f"REFRESH_INTERVAL_SECONDS={args.interval:g}, {args.trials} trials each (INSERTs about {spacing:g} s apart)\n\n"
        "| write | trials | median s | max s | target s | timed out |\n|---|---:|---:|---:|---:|---:|\n"
    )
    for label, kind in (("INSERT post → on the fan's first page", "post"),
                        ("INSERT user + follows → `features` strategy", "user"),
                        ("INSERT like → post gone", "like")):  # fmt: skip
        sys.stdout.write(summary(label, trials.done[kind], trials.failed[kind], bound) + "\n")
    sys.stdout.write(summary("POST /events like → post gone", events, 0, 1) + "\n")


if __name__ == "__main__":
    main()
