"""Benchmark the live refresh: seconds of one ``tasks.refresh`` run, and the Redis memory the live feed adds.

It writes a demo dataset (``ml.demo``), imports it into PostgreSQL (``ml.db``), fits a model (one epoch:
the refresh only needs the model's ids and data snapshot, not a good ranking) and saves it as the current
version, then

1. runs a first refresh (it loads the new model's artifact and starts from its data snapshot: nothing new);
2. INSERTs, in one transaction, ``--new-posts`` posts, ``--new-users`` users with one to three follows each
   and ``--new-interactions`` interactions (views, likes, comments of existing users on old and new posts),
   all created now, as one refresh interval of a busy site would;
3. times the refresh that finds them (the body of ``tasks.refresh``: :func:`tasks.refresh_pipeline.refresh`
   with the service's default settings), then an idle refresh that finds nothing new;
4. reads what the live keys occupy in Redis (``MEMORY USAGE`` of the pool, the live users and every
   ``seen:`` set the refresh wrote).

Usage, from the repository root::

    .venv/bin/python -m benchmarks.refresh [--size large]
        [--database-url postgresql://postgres@127.0.0.1:5432/recsvc_bench] [--redis-url redis://127.0.0.1:6379/0]

The database is created if missing and its tables are replaced; the Redis keys live under their own prefix
and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

import ml.artifact
import ml.db.connection
import ml.db.load
import ml.db.schema
import ml.demo
import ml.training
from common.config import load_settings
from common.recs_cache import RecsCache
from tasks import data_checks, outcomes, pipeline, refresh_pipeline

log = logging.getLogger("benchmarks.refresh")

# (users, posts, interactions): "large" is the scale (100k users, 20k posts; 2M interactions).
SIZES = {
    "default": (500, 2_016, 50_000),
    "large": (100_000, 20_000, 2_000_000),
}
BENCH_PREFIX = "recsvc-bench-refresh:"


def load(name: str, database_url: str, work_dir: Path) -> None:
    users, posts, interactions = SIZES[name]
    data_dir = work_dir / f"data-{name}"
    ml.demo.generate(data_dir, users=users, posts=posts, interactions=interactions, seed=1)
    conn = ml.db.connection.connect(database_url)
    try:
        ml.db.schema.create_schema(conn)
        ml.db.load.load_dataset_dir(conn, data_dir, replace=True)
    finally:
        conn.close()


def publish_model(settings, cache: RecsCache) -> tuple[str, float]:
    """Fit one epoch, save the artifact with its data snapshot and point Redis at it; returns (version, s)."""
    started = time.perf_counter()
    dataset = pipeline.load_dataset(settings)
    model = ml.training.train(dataset, dataclasses.replace(settings.training, epochs=1))
    metadata = {"data_snapshot": data_checks.data_snapshot(dataset)}
    version = ml.artifact.save(model, settings.model_dir, metadata)
    candidate = outcomes.Candidate(
        version, version, model.num_users, model.num_items, dataset.num_interactions, metrics=None
    )
    # The refresh reads only the version pointer and the artifact: the users' lists are not needed here.
    pipeline.stage_version(settings, cache, candidate, model)
    cache.publish_version(version, candidate.update_message(), settings.recs_retain_seconds)
    return version, time.perf_counter() - started


def insert_interval(database_url: str, new_posts: int, new_users: int, new_interactions: int, seed: int = 3) -> float:
    """INSERT one interval's worth of new rows in one transaction; returns its seconds."""
    rng = np.random.default_rng(seed)
    conn = ml.db.connection.connect(database_url)
    started = time.perf_counter()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM communities ORDER BY id")
            communities = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT DISTINCT unnest(tags) FROM posts ORDER BY 1")
            tags = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT id FROM users ORDER BY id")
            users = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT id FROM posts ORDER BY id")
            posts = [row[0] for row in cur.fetchall()]
            post_rows = [
                (f"bench-post-{i}", communities[rng.integers(len(communities))], users[rng.integers(len(users))],
                 list(rng.choice(tags, size=rng.integers(1, 4), replace=False)))
                for i in range(new_posts)
            ]  # fmt: skip
            cur.executemany(
                "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES (%s, %s, %s, %s, now())",
                post_rows,
            )
            cur.executemany(
                "INSERT INTO users (id, role, created_at) VALUES (%s, 'fan', now())",
                [(f"bench-user-{i}",) for i in range(new_users)],
            )
            follow_rows = [
                (f"bench-user-{i}", community)
                for i in range(new_users)
                for community in rng.choice(communities, size=rng.integers(1, 4), replace=False)
            ]
            cur.executemany(
                "INSERT INTO follows (user_id, community_id, created_at) VALUES (%s, %s, now())", follow_rows
            )
            every_post = posts + [row[0] for row in post_rows]
            kinds = rng.choice(["view", "like", "comment"], size=new_interactions, p=[0.7, 0.2, 0.1])
            cur.executemany(
                "INSERT INTO interactions (user_id, post_id, type, created_at) VALUES (%s, %s, %s, now())",
                [
                    (users[rng.integers(len(users))], every_post[rng.integers(len(every_post))], str(kind))
                    for kind in kinds
                ],
            )
    finally:
        conn.close()
    return time.perf_counter() - started


def timed_refresh(settings, cache: RecsCache) -> tuple[dict, float]:
    conn = ml.db.connection.connect(settings.database_url)
    try:
        started = time.perf_counter()
        result = refresh_pipeline.refresh(settings, cache, conn)
        return result, time.perf_counter() - started
    finally:
        conn.close()


def live_memory(client: redis.Redis, cache: RecsCache) -> dict[str, int]:
    """Bytes of the live keys under the benchmark's prefix: the pool, the live users, the seen sets."""
    state = cache.live_state()
    pool = client.memory_usage(cache.live_pool_key(state.generation), samples=0) or 0
    users = sum(
        client.memory_usage(key, samples=0) or 0
        for key in (cache.live_users_key, cache.live_users_order_key, cache.live_users_dropped_key)
    )
    seen_keys = list(client.scan_iter(cache.seen_pattern, count=10_000))
    seen = sum(client.memory_usage(key, samples=0) or 0 for key in seen_keys)
    return {"pool": pool, "users": users, "seen": seen, "seen_keys": len(seen_keys)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=sorted(SIZES))
    parser.add_argument("--new-posts", type=int, default=1_000)
    parser.add_argument("--new-users", type=int, default=1_000)
    parser.add_argument("--new-interactions", type=int, default=20_000)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/recsvc_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ml.db.connection.create_database(args.database_url)
    client = redis.Redis.from_url(args.redis_url)
    cache = RecsCache(client, BENCH_PREFIX)
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-refresh-") as work_dir:
        env = {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "REDIS_PREFIX": BENCH_PREFIX,
            "MODEL_DIR": str(Path(work_dir) / "models"),
        }
        settings = load_settings(env, dotenv=False)
        try:
            load(args.size, args.database_url, Path(work_dir))
            version, fit_seconds = publish_model(settings, cache)
            log.info("model %s ready in %.1f s", version, fit_seconds)
            first, first_seconds = timed_refresh(settings, cache)
            insert_seconds = insert_interval(args.database_url, args.new_posts, args.new_users, args.new_interactions)
            busy, busy_seconds = timed_refresh(settings, cache)
            idle, idle_seconds = timed_refresh(settings, cache)
            memory = live_memory(client, cache)
        finally:
            doomed = list(client.scan_iter(f"{BENCH_PREFIX}*", count=10_000))
            for start in range(0, len(doomed), 10_000):
                client.delete(*doomed[start : start + 10_000])
    users, posts, interactions = SIZES[args.size]
    total = memory["pool"] + memory["users"] + memory["seen"]
    rows = [
        ("first refresh after a publish (loads the artifact)", first_seconds, first),
        (
            f"{args.new_posts:,} new posts, {args.new_users:,} new users with follows, "
            f"{args.new_interactions:,} new interactions",
            busy_seconds,
            busy,
        ),
        ("idle refresh (nothing new)", idle_seconds, idle),
    ]
    sys.stdout.write(
        f"data: {users:,} users, {posts:,} posts, {interactions:,} interactions; INSERT of the interval "
        f"{insert_seconds:.1f} s\n\n"
    )
    sys.stdout.write(
        "| refresh | seconds | rows read (posts, users, follows, interactions) | new posts | changed users |\n"
    )
    sys.stdout.write("|---|---:|---|---:|---:|\n")
    for label, seconds, result in rows:
        read = result["read"]
        sys.stdout.write(
            f"| {label} | {seconds:.2f} | {read['posts']:,}, {read['users']:,}, {read['follows']:,}, "
            f"{read['interactions']:,} | {result['new_posts']:,} | {result['changed_users']:,} |\n"
        )
    sys.stdout.write(
        f"\nRedis memory added by the live feed: pool {memory['pool'] / 1e6:.2f} MB, live users "
        f"{memory['users'] / 1e6:.2f} MB, seen sets {memory['seen'] / 1e6:.2f} MB ({memory['seen_keys']:,} "
        f"users); total {total / 1e6:.2f} MB, {total / users * 100_000 / 1e6:.2f} MB per 100k users\n"
    )


if __name__ == "__main__":
    main()
