"""Benchmark a training run: seconds from task start to published version, and Redis memory per 100k users.

For each size it writes a demo dataset (``ml.demo``), imports it into PostgreSQL (``ml.db``), then runs the
train task's body in this process (lock, load, evaluate, fit, artifact, precompute, publish: the same
functions ``tasks.train`` calls when the users fit in one chunk) and reads what the published version
occupies in Redis (``MEMORY USAGE``). Usage, from the repository root::

    .venv/bin/python -m benchmarks.retrain [--sizes default,large]
        [--database-url postgresql://postgres@127.0.0.1:5432/recsvc_bench] [--redis-url redis://127.0.0.1:6379/0]

The database is created if missing and its tables are replaced; the Redis keys live under their own prefix
and are deleted afterwards. LightFM hyperparameters come from the environment as for the service.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import redis

import ml.db.connection
import ml.db.load
import ml.db.schema
import ml.demo
from common.config import load_settings
from common.recs_cache import RecsCache, release_lock
from tasks import limits, outcomes, pipeline

log = logging.getLogger("benchmarks.retrain")

# (users, posts, interactions): "default" is the demo generator's default size, "large" the scale target of
# the ML core (100k users, 20k posts, 2M interactions).
SIZES = {
    "default": (500, 2_016, 50_000),
    "large": (100_000, 20_000, 2_000_000),
}
BENCH_PREFIX = "recsvc-bench:"


def run_size(name: str, args: argparse.Namespace, work_dir: Path) -> dict:
    users, posts, interactions = SIZES[name]
    data_dir = work_dir / f"data-{name}"
    ml.demo.generate(data_dir, users=users, posts=posts, interactions=interactions, seed=1)
    conn = ml.db.connection.connect(args.database_url)
    try:
        ml.db.schema.create_schema(conn)
        ml.db.load.load_dataset_dir(conn, data_dir, replace=True)
        conn.commit()
    finally:
        conn.close()

    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": BENCH_PREFIX,
        "MODEL_DIR": str(work_dir / f"models-{name}"),
        "QUALITY_GATE_MARGIN": "1",
    }
    settings = load_settings(env, dotenv=False)
    client = redis.Redis.from_url(args.redis_url)
    cache = RecsCache(client, BENCH_PREFIX)
    lock = cache.training_lock(limits.lock_ttl(settings))
    if not lock.acquire():
        raise SystemExit(f"the benchmark's training lock {cache.lock_key} is held; is another benchmark running?")
    stages = outcomes.Stages()
    started = time.perf_counter()
    try:
        candidate, model = pipeline.build_candidate(settings, cache, stages)
        pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    finally:
        release_lock(lock)
    total = time.perf_counter() - started

    recs_bytes = sum(client.memory_usage(key, samples=0) or 0 for key in cache.recs_keys(candidate.version))
    meta_bytes = client.memory_usage(cache.meta_key(candidate.version), samples=0) or 0
    client.delete(*cache.recs_keys(candidate.version), cache.meta_key(candidate.version), cache.current_key)
    client.delete(cache.outcome_key)
    client.close()
    return {
        "size": name,
        "users": candidate.num_users,
        "posts": candidate.num_items,
        "interactions": candidate.num_interactions,
        "total_s": total,
        "stages": stages.durations,
        "precision@10": candidate.metrics["model"]["precision@10"],
        "popularity_precision@10": candidate.metrics["popularity"]["precision@10"],
        "recs_mb": recs_bytes / 1e6,
        "meta_mb": meta_bytes / 1e6,
        "mb_per_100k_users": recs_bytes / candidate.num_users * 100_000 / 1e6,
    }


def print_table(rows: list[dict]) -> None:
    stage_names = ["load", "evaluate", "fit", "artifact", "precompute", "publish"]
    header = ["size", "users", "posts", "interactions", "start→published s", *stage_names, "p@10 (pop)",
              "Redis lists MB", "Redis MB / 100k users"]  # fmt: skip
    sys.stdout.write("| " + " | ".join(header) + " |\n")
    sys.stdout.write("|" + "---|" * len(header) + "\n")
    for row in rows:
        cells = [
            row["size"],
            f"{row['users']:,}",
            f"{row['posts']:,}",
            f"{row['interactions']:,}",
            f"{row['total_s']:.1f}",
            *(f"{row['stages'].get(stage, 0.0):.1f}" for stage in stage_names),
            f"{row['precision@10']:.3f} ({row['popularity_precision@10']:.3f})",
            f"{row['recs_mb'] + row['meta_mb']:.1f}",
            f"{row['mb_per_100k_users']:.1f}",
        ]
        sys.stdout.write("| " + " | ".join(cells) + " |\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="default,large", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/recsvc_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    unknown = [size for size in sizes if size not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ml.db.connection.create_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-") as work_dir:
        rows = []
        for size in sizes:
            rows.append(run_size(size, args, Path(work_dir)))
            log.info("%s: %.1f s from task start to published version", size, rows[-1]["total_s"])
    print_table(rows)


if __name__ == "__main__":
    main()
