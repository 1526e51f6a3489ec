"""Benchmark the training pipeline stage by stage: seconds and peak memory at two sizes.

For each size it writes a demo dataset (``ml.demo``) and imports it into a scratch PostgreSQL database of
its own (``ml.db``; created, then dropped at the end), then times the stages of a retrain:

======================  =====================================================================
load                    read the five tables from PostgreSQL (``ml.db.read.read_dataset``)
features                ``ml.features.build_features``
fit                     interaction weights, LightFM fit, representations (``ml.training``)
precompute              the top-100 of every user (``RecModel.top_k``)
artifact write          ``ml.artifact.save`` (npz, json, fsync, ``os.replace``)
artifact load           ``ml.artifact.load`` (what a web worker does on every reload)
======================  =====================================================================

Each size runs in a fresh interpreter, so the peak resident memory (``ru_maxrss``, after each stage) is
that size's own. Usage, from the repository root::

    .venv/bin/python -m benchmarks.train [--size default|large|both] [--database-url URL]

``--database-url`` names the server (and credentials) to use; its database part is ignored. The default
size is the demo generator's default; large is 100k users, 20k posts, 2M interactions. Hyperparameters
come from the environment as for the service (``LIGHTFM_*``, ``TRAIN_THREADS``...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg2

import ml.db.connection
import ml.db.load
import ml.db.read
import ml.db.schema
import ml.demo
from common.config import load_settings
from ml import artifact
from ml.cpus import usable_cpus
from ml.features import build_features
from ml.training import fit, interaction_weights, to_rec_model

SIZES = {
    "default": (ml.demo.DEFAULT_USERS, ml.demo.DEFAULT_POSTS, ml.demo.DEFAULT_INTERACTIONS),
    "large": (100_000, 20_000, 2_000_000),
}
TOP_K = 100
PIPELINE_STAGES = ("load", "features", "fit", "precompute", "artifact write")


def run_size(size: str, server_url: str) -> dict:
    """Generate, import, then time every stage of one size; return the figures as a dict."""
    users, posts, interactions = SIZES[size]
    settings = load_settings()
    result: dict = {"size": size, "users": users, "posts": posts, "interactions": interactions, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="recsvc-bench-") as work, _scratch_database(server_url) as db_url:
        data_dir, model_dir = Path(work) / "data", Path(work) / "models"
        ml.demo.generate(data_dir, users=users, posts=posts, interactions=interactions, seed=ml.demo.DEFAULT_SEED)
        conn = ml.db.connection.connect(db_url)
        try:
            ml.db.schema.create_schema(conn)
            ml.db.load.load_dataset_dir(conn, data_dir)
            result["rss_before_mb"] = _peak_rss_mb()
            with _stage(result, "load"):
                dataset = ml.db.read.read_dataset(conn, settings.sql_queries)
        finally:
            conn.close()
        with _stage(result, "features"):
            features = build_features(dataset)
        with _stage(result, "fit"):
            estimator = fit(interaction_weights(dataset, settings.training), features, settings.training)
            model = to_rec_model(dataset, features, estimator)
        with _stage(result, "precompute"):
            model.top_k(np.arange(model.num_users), TOP_K)
        with _stage(result, "artifact write"):
            version = artifact.save(model, model_dir, {"benchmark": size})
        with _stage(result, "artifact load"):
            artifact.load(model_dir, version)
        result["artifact_mb"] = round((model_dir / f"{version}.npz").stat().st_size / 1e6, 1)
    result["pipeline_seconds"] = round(sum(result["stages"][s]["seconds"] for s in PIPELINE_STAGES), 2)
    result["pipeline_cpu_seconds"] = round(sum(result["stages"][s]["cpu_seconds"] for s in PIPELINE_STAGES), 2)
    result["load_average"] = os.getloadavg()[0]
    result["threads"] = settings.training.num_threads or usable_cpus()
    result["epochs"] = settings.training.epochs
    result["components"] = settings.training.components
    return result


@contextmanager
def _stage(result: dict, name: str) -> Iterator[None]:
    started, cpu_started = time.perf_counter(), time.process_time()
    yield
    result["stages"][name] = {
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu_started, 3),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


@contextmanager
def _scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url`` for this run; dropped afterwards."""
    parts = urlsplit(server_url)
    name = f"recsvc_bench_{os.getpid()}"
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(parts._replace(path=f"/{name}"))
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def markdown_table(results: list[dict]) -> str:
    """The figures of each size side by side, as a markdown table."""
    header = "| stage | " + " | ".join(f"{r['size']}: wall s | CPU s | peak RSS MB" for r in results) + " |"
    lines = [header, "|---|" + "---:|---:|---:|" * len(results)]
    for stage in (*PIPELINE_STAGES, "artifact load"):
        cells = " | ".join(
            "{seconds:.2f} | {cpu_seconds:.2f} | {peak_rss_mb:.0f}".format(**r["stages"][stage]) for r in results
        )
        lines.append(f"| {stage} | {cells} |")
    totals = " | ".join(f"**{r['pipeline_seconds']:.2f}** | {r['pipeline_cpu_seconds']:.2f} | " for r in results)
    lines.append(f"| **pipeline total** | {totals} |")
    sizes = "; ".join(
        f"{r['size']} = {r['users']:,} users, {r['posts']:,} posts, {r['interactions']:,} interactions "
        f"(artifact {r['artifact_mb']} MB)"
        for r in results
    )
    first = results[0]
    params = f"{first['components']} components, {first['epochs']} epochs, {first['threads']} threads"
    load = ", ".join(f"{r['load_average']:.1f}" for r in results)
    return "\n".join(lines) + f"\n\n{sizes}; {params}; 1-minute load average at the end: {load}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=[*SIZES, "both"], default="both")
    parser.add_argument("--database-url", help="the PostgreSQL server to use (default DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    args = parser.parse_args(argv)
    server_url = args.database_url or load_settings().database_url
    if args.size != "both":
        results = [run_size(args.size, server_url)]
    else:
        # One interpreter per size, so each peak memory figure is that size's own.
        results = []
        for size in SIZES:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.train", "--size", size, "--database-url", server_url, "--json"],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("\n".join(json.dumps(r) for r in results) if args.json else markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
