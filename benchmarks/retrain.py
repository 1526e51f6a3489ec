"""Benchmark training runs: each stage from task start to published version, peak memory, Redis per version.

For each size it writes a demo dataset (``python -m ml.demo``), imports it (``python -m ml.db load``, timed),
measures the training-data reader alone (seconds, peak RSS), then runs the train task's body (lock, load,
evaluate, fit, artifact, similar, precompute, publish: the functions ``tasks.train`` calls when the users fit in
one chunk), each cycle in a process of its own so that its peak RSS is its own:

1. ``full``: the first model, on the data without its newest 10% of interactions;
2. ``warm``: the first half of those arrives (or, with ``--arrival-minutes``, what a scheduled run finds: the
   interactions of that many minutes after the first run's data) and the next run continues the first one's
   fit (``ml.warm``), gated progressively, reading only the interactions since the first run's data
   (``ml.incremental``);
3. ``full, same data``: a full retrain on the warm run's data, reading everything;

then the second half arrives, and both the warm and the full model are measured on it alike (the posts users
went to next, which neither learnt: :func:`ml.warm.progressive_metrics`), their figures side by side. Last,
``MAX_POST_AGE_DAYS`` (``--max-post-age-days``, 30 by default): the precompute of the warm version's lists
(``tasks.pipeline.precompute_users``, unpaced) with every post and with only the posts of the last N days
(``ml.post_age``), side by side in one process.

Usage, from the repository root::

    .venv/bin/python -m benchmarks.retrain [--sizes default,large,xl] [--import-only] [--quick-start EPOCHS]
        [--arrival-minutes MINUTES] [--max-post-age-days 30]
        [--database-url postgresql://postgres@127.0.0.1:5432/recsvc_bench] [--redis-url redis://127.0.0.1:6379/0]

``--import-only`` stops after the import and the reader (the xl size's full fits take far longer).
``--quick-start EPOCHS`` measures the warm cycle alone: the first run fits only ``EPOCHS`` epochs, a start for
the warm run made quickly (its time and figures are not a production full run's), and the full run on the same
data, the figures on the future and the ``MAX_POST_AGE_DAYS`` comparison are skipped (at xl a full run takes
most of an hour). The
database is created if missing and its tables are replaced; the Redis keys live under their own prefix and
are deleted afterwards. LightFM hyperparameters and ``MAX_POST_AGE_DAYS`` come from the environment as for the
service, and so does ``TRAIN_TIME_LIMIT_SECONDS``, four hours unless set (a run is measured to its end).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

import ml.db.connection
import ml.db.read
from common.config import load_settings
from common.recs_cache import RecsCache, release_lock
from ml import post_age
from tasks import limits, outcomes, pipeline

log = logging.getLogger("benchmarks.retrain")

# (users, posts, interactions): "default" is the demo generator's default size, "large" the scale target of
# the ML core (100k users, 20k posts, 2M interactions), "xl" issue 14's (1M users, 100k posts, 20M);
# "medium" is a fifth of "large", for a loaded machine.
SIZES = {
    "default": (500, 2_016, 50_000),
    "medium": (20_000, 4_000, 400_000),
    "large": (100_000, 20_000, 2_000_000),
    "xl": (1_000_000, 100_000, 20_000_000),
}
BENCH_PREFIX = "recsvc-bench:"
BENCH_TIME_LIMIT_SECONDS = 4 * 3600  # TRAIN_TIME_LIMIT_SECONDS of the runs, unless the environment sets it
# The newest tenth of the interactions is held back: its first half arrives between the first (full) run and
# the warm one; its second half, which neither the warm nor the full run on the same data learnt from, is the
# future both are measured on alike (ml.warm.progressive_metrics).
HOLD_BACK = """
DROP TABLE IF EXISTS bench_later;
CREATE TABLE bench_later AS SELECT user_id, post_id, type, created_at FROM interactions
    WHERE created_at > (SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY created_at) FROM interactions);
DELETE FROM interactions WHERE created_at > (SELECT min(created_at) FROM bench_later) - interval '1 microsecond';
"""
ARRIVE = """
INSERT INTO interactions (user_id, post_id, type, created_at) SELECT * FROM bench_later
    WHERE created_at <= (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at) FROM bench_later);
DELETE FROM bench_later WHERE created_at <= (SELECT max(created_at) FROM interactions);
"""
# ``--arrival-minutes``: a scheduled run's arrival instead, the interactions of the minutes after the first run's data.
ARRIVE_MINUTES = """
INSERT INTO interactions (user_id, post_id, type, created_at) SELECT * FROM bench_later
    WHERE created_at < (SELECT min(created_at) FROM bench_later) + make_interval(secs => %(seconds)s);
DELETE FROM bench_later WHERE created_at <= (SELECT max(created_at) FROM interactions);
"""
FUTURE = """
INSERT INTO interactions (user_id, post_id, type, created_at) SELECT * FROM bench_later;
DROP TABLE bench_later;
"""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _read_only(database_url: str) -> dict:
    """In a fresh process: read the training data as a full load stage does, then as an incremental one does when
    nothing arrived (``ml.incremental``: the other tables whole, the count check, the snapshot merged); seconds
    and peak RSS."""
    import ml.incremental
    from ml.settings import DEFAULT_QUERIES

    started = time.perf_counter()
    conn = ml.db.connection.connect(database_url)
    try:
        dataset = ml.db.read.read_dataset(conn, DEFAULT_QUERIES)
        seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="recsvc-bench-snapshot-") as snapshot_dir:
            started = time.perf_counter()
            ml.incremental.save(snapshot_dir, "bench", dataset, DEFAULT_QUERIES)
            saved = time.perf_counter() - started
            started = time.perf_counter()
            snapshot = ml.incremental.load(snapshot_dir, "bench")
            merged, read = ml.incremental.read(conn, DEFAULT_QUERIES, snapshot, lookback_seconds=60)
            incremental = time.perf_counter() - started
    finally:
        conn.close()
    if read.mode != "incremental" or merged.num_interactions != dataset.num_interactions:
        raise SystemExit(f"the incremental read did not merge: {read}")
    return {
        "seconds": seconds,
        "interactions": dataset.num_interactions,
        "peak_mb": _peak_rss_mb(),
        "incremental_s": incremental,
        "snapshot_save_s": saved,
    }


def _cycle(env: dict[str, str]) -> dict:
    """In a fresh process: one training run, forced, start to published; stages, figures and peak RSS."""
    settings = load_settings(env, dotenv=False)
    client = redis.Redis.from_url(settings.redis_url)
    cache = RecsCache(client, settings.redis_prefix)
    lock = cache.training_lock(limits.lock_ttl(settings))
    if not lock.acquire():
        raise SystemExit(f"the benchmark's training lock {cache.lock_key} is held; is another benchmark running?")
    stages = outcomes.Stages()
    started = time.perf_counter()
    try:
        candidate, model = pipeline.build_candidate(settings, cache, stages, force=True)
        pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    finally:
        release_lock(lock)
    total = time.perf_counter() - started
    recs_bytes = sum(client.memory_usage(key, samples=0) or 0 for key in cache.recs_keys(candidate.version))
    meta_bytes = client.memory_usage(cache.meta_key(candidate.version), samples=0) or 0
    client.close()
    metadata = json.loads((Path(settings.model_dir) / f"{candidate.version}.json").read_text())
    metrics = candidate.metrics or {}
    return {
        "version": candidate.version,
        "fit": metadata.get("fit", "full"),
        "read": metadata.get("fit_read") or {"mode": "full", "rows_read": candidate.num_interactions},
        "users": candidate.num_users,
        "posts": candidate.num_items,
        "interactions": candidate.num_interactions,
        "total_s": total,
        "stages": stages.durations,
        "protocol": metrics.get("protocol", "temporal"),
        "precision@10": metrics.get("model", {}).get("precision@10", float("nan")),
        "popularity_precision@10": metrics.get("popularity", {}).get("precision@10", float("nan")),
        "recs_mb": (recs_bytes + meta_bytes) / 1e6,
        "mb_per_100k_users": recs_bytes / candidate.num_users * 100_000 / 1e6,
        "peak_mb": _peak_rss_mb(),
        "max_post_age_days": settings.max_post_age_days,
    }


def _in_child(function, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def _sql(database_url: str, statement: str, params: dict | None = None) -> None:
    conn = ml.db.connection.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


def run_size(name: str, args: argparse.Namespace, work_dir: Path) -> dict:
    users, posts, interactions = SIZES[name]
    data_dir = work_dir / f"data-{name}"
    result: dict = {"size": name, "cycles": []}
    minutes = args.arrival_minutes
    result["arrival"] = "half the held-back tenth" if minutes is None else f"the {minutes:g} minutes after its data"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ml.demo", "--out", str(data_dir), "--users", str(users), "--posts", str(posts),
         "--interactions", str(interactions), "--seed", "1"],
        check=True,
    )  # fmt: skip
    result["generate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ml.db", "load", str(data_dir), "--replace", "--database-url", args.database_url],
        check=True,
    )
    result["import_s"] = time.perf_counter() - started
    result["read"] = _in_child(_read_only, args.database_url)
    log.info("%s: generated in %.1f s, imported in %.1f s, read %s", name, result["generate_s"], result["import_s"],
             result["read"])  # fmt: skip
    if args.import_only:
        return result

    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": BENCH_PREFIX,
        "MODEL_DIR": str(work_dir / f"models-{name}"),
        "FULL_RETRAIN_INTERVAL_SECONDS": "86400",
        "PRECOMPUTE_CHUNK_USERS": str(10_000_000),
        # A run is measured to its end: at xl a full run outlasts the default limit (1,440 s), which would abort
        # it unpublished (docs/OPERATIONS.md, "Sizing for a million users and more").
        "TRAIN_TIME_LIMIT_SECONDS": os.environ.get("TRAIN_TIME_LIMIT_SECONDS", str(BENCH_TIME_LIMIT_SECONDS)),
    }
    _sql(args.database_url, HOLD_BACK)
    _delete_keys(args.redis_url)  # the prefix is the benchmark's own: a killed run's lock and lists go
    cycles = [
        ("full", env, False),
        ("warm", env, True),
        ("full, same data", {**env, "FULL_RETRAIN_INTERVAL_SECONDS": "0"}, False),
    ]
    if args.quick_start:
        quick = {**env, "LIGHTFM_EPOCHS": str(args.quick_start)}
        cycles = [(f"full, LIGHTFM_EPOCHS={args.quick_start} (a quick start)", quick, False), cycles[1]]
    try:
        for label, cycle_env, arrive in cycles:
            if arrive and args.arrival_minutes is not None:
                _sql(args.database_url, ARRIVE_MINUTES, {"seconds": args.arrival_minutes * 60})
            elif arrive:
                _sql(args.database_url, ARRIVE)
            cycle = _in_child(_cycle, cycle_env)
            cycle["label"] = label
            result["cycles"].append(cycle)
            log.info("%s %s: %.1f s from task start to published version: %s", name, label, cycle["total_s"],
                     json.dumps(cycle))  # fmt: skip
        if args.quick_start:
            return result
        _sql(args.database_url, FUTURE)
        result["future"] = _in_child(
            _future_figures, args.database_url, env["MODEL_DIR"], [c["version"] for c in result["cycles"][1:]]
        )
        log.info("%s on the future: %s", name, json.dumps(result["future"]))
        result["post_age"] = _in_child(
            _post_age_precompute, {**env, "PUBLISH_WRITE_RATE": "0"}, result["cycles"][1]["version"],
            args.max_post_age_days,
        )  # fmt: skip
        log.info("%s, MAX_POST_AGE_DAYS: %s", name, json.dumps(result["post_age"]))
    finally:
        _delete_keys(args.redis_url)
    return result


def _future_figures(database_url: str, model_dir: str, versions: list[str]) -> list[dict]:
    """In a fresh process: each version's progressive figures on the interactions newer than any it learnt."""
    import ml.artifact
    import ml.warm
    from ml.settings import DEFAULT_QUERIES
    from ml.timestamps import parse_timestamps

    conn = ml.db.connection.connect(database_url)
    try:
        dataset = ml.db.read.read_dataset(conn, DEFAULT_QUERIES)
    finally:
        conn.close()
    figures = []
    for version in versions:
        model, metadata = ml.artifact.load(model_dir, version)
        if model.item_ids != dataset.item_ids or model.user_ids != dataset.user_ids:
            raise SystemExit(f"version {version} does not have the data's users and posts")
        (until,), _ = parse_timestamps([metadata["data_window"]["last_interaction"]])
        learned, newer = ml.warm.split_at(dataset, float(until))
        metrics = ml.warm.progressive_metrics(model, learned, ml.warm.only(dataset, newer))
        figures.append({"version": version, "fit": metadata.get("fit"), **metrics})
    return figures


def _post_age_precompute(env: dict[str, str], version: str, days: float) -> dict:
    """In a fresh process: the precompute of ``version``'s lists with every post, then with the recent ones only."""
    import ml.artifact
    from ml.settings import DEFAULT_QUERIES

    settings = load_settings(env, dotenv=False)
    client = redis.Redis.from_url(settings.redis_url)
    cache = RecsCache(client, settings.redis_prefix)
    conn = ml.db.connection.connect(settings.database_url)
    try:
        dataset = ml.db.read.read_dataset(conn, DEFAULT_QUERIES)
    finally:
        conn.close()
    model, _ = ml.artifact.load(settings.model_dir, version)
    # The version learnt the data before the future arrived: the posts are the same, the limit is the data's.
    recent = post_age.recent_posts_only(model, dataset, days)
    figures = {"days": days}
    for label, ranked in (("all", model), ("recent", recent)):
        started = time.perf_counter()
        pipeline.precompute_users(settings, cache, f"{version}-{label}", ranked, 0, ranked.num_users)
        figures[label] = {"posts": ranked.num_items, "seconds": time.perf_counter() - started}
    client.close()
    return figures


def _delete_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{BENCH_PREFIX}*", count=10_000))
    for chunk in range(0, len(keys), 10_000):
        client.delete(*keys[chunk : chunk + 10_000])
    client.close()


def print_table(rows: list[dict]) -> None:
    out = sys.stdout
    out.write(
        "| size | users | posts | interactions | generate s | import s | read s | incremental read s (nothing new)"
        " | snapshot save s | read peak RSS MB |\n"
    )
    out.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for row in rows:
        users, posts, interactions = SIZES[row["size"]]
        out.write(
            f"| {row['size']} | {users:,} | {posts:,} | {interactions:,} | {row['generate_s']:.1f} | "
            f"{row['import_s']:.1f} | {row['read']['seconds']:.1f} | {row['read']['incremental_s']:.1f} | "
            f"{row['read']['snapshot_save_s']:.1f} | {row['read']['peak_mb']:.0f} |\n"
        )
    stage_names = ["load", "warm_evaluate", "warm_fit", "evaluate", "fit", "artifact", "similar", "precompute",
                   "publish"]  # fmt: skip
    header = ["size", "run", "interactions", "read (rows from PostgreSQL)", "start→published s", *stage_names,
              "p@10 (pop), protocol",
              "peak RSS MB", "Redis MB / version", "Redis MB / 100k users"]  # fmt: skip
    out.write("\n| " + " | ".join(header) + " |\n")
    out.write("|" + "---|" * len(header) + "\n")
    for row in rows:
        for cycle in row["cycles"]:
            cells = [
                row["size"],
                f"{cycle['label']} ({cycle['fit']})",
                f"{cycle['interactions']:,}",
                f"{cycle['read']['mode']} ({cycle['read']['rows_read']:,})",
                f"{cycle['total_s']:.1f}",
                *(f"{cycle['stages'][stage]:.1f}" if stage in cycle["stages"] else "–" for stage in stage_names),
                f"{cycle['precision@10']:.3f} ({cycle['popularity_precision@10']:.3f}), {cycle['protocol']}",
                f"{cycle['peak_mb']:.0f}",
                f"{cycle['recs_mb']:.1f}",
                f"{cycle['mb_per_100k_users']:.1f}",
            ]
            out.write("| " + " | ".join(cells) + " |\n")
    for row in rows:
        if row["cycles"]:
            days = row["cycles"][0]["max_post_age_days"]
            out.write(
                f"\n{row['size']}: the warm run's arrival {row['arrival']}; MAX_POST_AGE_DAYS of the runs "
                f"{f'{days:g}' if days else 'off (every post ranked)'}\n"
            )
    if not any(row.get("future") for row in rows):  # --import-only or --quick-start: nothing more was measured
        return
    out.write("\nOn the future (the newest 5% of interactions, learnt by neither run; progressive protocol):\n\n")
    out.write(
        "| size | run | users | pairs | p@10 | recall@10 | ndcg@10 | popularity p@10 |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for row in rows:
        for figures in row.get("future", []):
            model = figures["model"]
            out.write(
                f"| {row['size']} | {figures['fit']} | {figures['users']:,} | {figures['test_pairs']:,} | "
                f"{model['precision@10']:.4f} | {model['recall@10']:.4f} | {model['ndcg@10']:.4f} | "
                f"{figures['popularity']['precision@10']:.4f} |\n"
            )
    out.write(
        "\nMAX_POST_AGE_DAYS: the precompute of every user's list (unpaced), every post against the recent ones:\n\n"
    )
    out.write("| size | days | posts ranked | precompute s | recent posts ranked | precompute s | saved |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    for row in rows:
        if "post_age" in row:
            figures = row["post_age"]
            every, recent = figures["all"], figures["recent"]
            out.write(
                f"| {row['size']} | {figures['days']:g} | {every['posts']:,} | {every['seconds']:.1f} | "
                f"{recent['posts']:,} | {recent['seconds']:.1f} | {1 - recent['seconds'] / every['seconds']:.0%} |\n"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="default,large", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--import-only", action="store_true", help="only generate, import and read")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/recsvc_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--quick-start", type=int, metavar="EPOCHS", help="the warm cycle alone, after a first fit of EPOCHS epochs"
    )
    parser.add_argument("--max-post-age-days", type=float, default=30.0, help="the MAX_POST_AGE_DAYS compared")
    parser.add_argument(
        "--arrival-minutes",
        type=float,
        metavar="MINUTES",
        help="the warm run's arrival: the MINUTES after the first run's data (default: half the held-back tenth)",
    )
    args = parser.parse_args(argv)
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    unknown = [size for size in sizes if size not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    if args.quick_start is not None and args.quick_start < 1:
        parser.error("--quick-start takes a number of epochs, at least 1")
    if args.arrival_minutes is not None and args.arrival_minutes <= 0:
        parser.error("--arrival-minutes takes a positive number of minutes")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ml.db.connection.create_database(args.database_url)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-") as work_dir:
        rows = [run_size(size, args, Path(work_dir)) for size in sizes]
    print_table(rows)
    end_load = os.getloadavg()
    sys.stdout.write(
        f"\nload average (1, 5, 15 min) at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
        f"at end {end_load[0]:.1f} {end_load[1]:.1f} {end_load[2]:.1f}; {os.cpu_count()} CPUs\n"
    )


if __name__ == "__main__":
    main()
