"""A simulated A/B experiment: does the online report find what is true, and nothing when nothing is?

The demo generator plants each user's taste over eight topics and each post's topic mix (``ml.demo.plant``).
A model is trained on the demo data; then a simulated day runs: every user opens the feed of the variant the
experiment assigns it (:meth:`common.experiments.Experiment.assign`), scrolls pages of 10 (a next page
with probability 0.7, at most 5 pages) and clicks each shown post with probability
``0.01 + 0.25 * taste . topics`` (clicks arrive minutes after the page). The pages are recorded as rows of
recsvc's impressions table and the clicks as ``view`` interactions in a scratch PostgreSQL database, and
the report is computed by the service's own code (``ml.online.day_counts``, ``ml.abtest.report``).

- A/B: variant ``model`` (the trained model's feed) against the control ``popular`` (the popularity feed).
  The report must find the model better (p < 0.05), and the true relative difference (from the click
  probabilities of the impressions actually shown) must lie inside its 95% interval.
- A/A: both variants serve the model; over ``--seeds`` simulated days (other assignments and clicks) the
  report should find a difference (p < 0.05) in at most one of 20.

Usage, from the repository root::

    .venv/bin/python -m benchmarks.experiment [--users 2000] [--seeds 20] [--database-url URL] [--json PATH]

``--database-url`` names the server; a scratch database of its own is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg2
from psycopg2.extras import execute_values

from common.experiments import parse_experiment
from ml import abtest, demo, online
from ml.csv_files import read_dataset_dir
from ml.model import RecModel
from ml.settings import TrainingSettings
from ml.training import train

SCHEMA = "recsvc_online"
DAY = datetime(2026, 11, 2, tzinfo=UTC)
PAGE = 10
NEXT_PAGE = 0.7
MAX_PAGES = 5
WINDOW = timedelta(hours=24)
QUERY = "SELECT user_id, post_id, type, created_at FROM interactions"


@dataclass
class World:
    planted: demo.Planted
    model: RecModel
    user_ids: list[str]  # by planted index
    item_index: np.ndarray  # the model's item index -> planted post index


def build_world(users: int, posts: int, interactions: int, seed: int) -> World:
    """The demo data of ``seed``, its planted structure, and a model trained on it (default settings, one thread)."""
    with tempfile.TemporaryDirectory() as out:
        demo.generate(out, users=users, posts=posts, interactions=interactions, seed=seed)
        dataset = read_dataset_dir(Path(out))
    # One thread: LightFM's threads update the model without locks, so two runs would train different models
    # and the A/A's p-values would change from run to run.
    model = train(dataset, TrainingSettings(num_threads=1))
    planted = demo.plant(users, posts, seed)
    user_ids = sorted(dataset.user_ids, key=_number)
    item_index = np.array([_number(i) for i in model.item_ids])
    return World(planted, model, user_ids, item_index)


def _number(demo_id: str) -> int:
    return int(demo_id.rsplit("-", 1)[1]) - 1


def feed(model: RecModel, user_id: str, ranking: str, depth: int) -> np.ndarray:
    """The model's item indices a user's feed shows first: the model's ranking or the popularity list."""
    user = model.user_index(user_id)
    if ranking == "production" and user is not None:
        items, _ = model.top_k(np.array([user]), depth)
        return items[0][items[0] >= 0]
    excluded = model.excluded_items(user) if user is not None else np.zeros(0, dtype=np.int32)
    popular = model.popular_items[~np.isin(model.popular_items, excluded)]
    return popular[:depth]


def simulate_day(world: World, experiment_json: str, seed: int) -> tuple[list, list, dict[str, list[float]]]:
    """One day of every user's scroll: impression rows, click rows, and each variant's click probabilities."""
    experiment = parse_experiment(experiment_json)
    rng = np.random.default_rng(seed)
    taste, topics = world.planted.taste, world.planted.post_topic_mix
    impressions, clicks, probabilities = [], [], {v.name: [] for v in experiment.variants}
    for u, user_id in enumerate(world.user_ids):
        variant = experiment.assign(user_id)
        pages = 1
        while pages < MAX_PAGES and rng.random() < NEXT_PAGE:
            pages += 1
        shown = feed(world.model, user_id, variant.ranking, pages * PAGE)
        affinity = topics[world.item_index[shown]] @ taste[u]
        p = 0.01 + 0.25 * affinity
        probabilities[variant.name].extend(p.tolist())
        clicked = rng.random(len(shown)) < p
        at = DAY + timedelta(seconds=float(rng.uniform(0, 20 * 3600)))
        entry = f"{int(at.timestamp() * 1000)}-{u}"
        for position, item in enumerate(shown):
            post_id = world.model.item_ids[item]
            impressions.append(
                (
                    entry,
                    position,
                    user_id,
                    post_id,
                    position + 1,
                    experiment.name,
                    variant.name,
                    variant.ranking,
                    "v1",
                    at,
                )
            )
            if clicked[position]:
                clicks.append((user_id, post_id, "view", at + timedelta(minutes=float(rng.uniform(1, 30)))))
    return impressions, clicks, probabilities


def measure(conn, world: World, experiment_json: str, seed: int) -> dict[str, Any]:
    """Simulate a day, store it, and compare the report's answer with the truth."""
    impressions, clicks, probabilities = simulate_day(world, experiment_json, seed)
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {SCHEMA}.impressions, interactions")
        execute_values(cur, f"INSERT INTO {SCHEMA}.impressions VALUES %s", impressions, page_size=5000)
        execute_values(cur, "INSERT INTO interactions VALUES %s", clicks, page_size=5000)
    conn.commit()
    spec = json.loads(experiment_json)
    counts = online.day_counts(conn, SCHEMA, QUERY, DAY, DAY + timedelta(days=1), WINDOW)
    names = [v["name"] for v in spec["variants"]]
    report = abtest.report(
        counts, DAY.date(), 0.2, {"name": spec["name"], "control": spec["control"], "variants": names}
    )
    (day,) = report["experiment"]["days"]
    rows = {row["variant"]: row for row in day["variants"]}
    control = spec["control"]
    (other,) = [n for n in names if n != control]
    vs = rows[other]["vs_control"]["any"]
    true_ctr = {name: float(np.mean(p)) for name, p in probabilities.items()}
    truth = true_ctr[other] / true_ctr[control] - 1
    return {
        "impressions": {n: rows[n]["impressions"] for n in names},
        "ctr": {n: rows[n]["ctr"]["any"] for n in names},
        "true_ctr": true_ctr,
        "relative_difference": vs["relative_difference"],
        "ci": [vs["ci_low"], vs["ci_high"]],
        "p_value": vs["p_value"],
        "p_value_pooled": vs["p_value_pooled"],
        "true_relative_difference": truth,
        "truth_inside_ci": vs["ci_low"] <= truth <= vs["ci_high"],
    }


def _experiment(name: str, second: str) -> str:
    variants = [{"name": "a", "share": 0.5, "ranking": "production"}, {"name": "b", "share": 0.5, "ranking": second}]
    return json.dumps({"name": name, "control": "b", "variants": variants})


def run(database_url: str, users: int, posts: int, interactions: int, seeds: int) -> dict[str, Any]:
    parts = urlsplit(database_url)
    name = f"recsvc_bench_experiment_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = psycopg2.connect(urlunsplit(parts._replace(path=f"/{name}")))
        try:
            started = time.monotonic()
            world = build_world(users, posts, interactions, seed=42)
            trained = time.monotonic() - started
            online.create_online_schema(conn, SCHEMA)
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE interactions (user_id text, post_id text, type text, created_at timestamptz)")
            conn.commit()
            ab = measure(conn, world, _experiment("model-vs-popular", "popular"), seed=1)
            aa = [measure(conn, world, _experiment(f"a-a-{s}", "production"), seed=100 + s) for s in range(seeds)]
        finally:
            conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return {
        "users": users,
        "posts": posts,
        "interactions": interactions,
        "train_seconds": round(trained, 1),
        "seconds": round(time.monotonic() - started, 1),
        "a_b": ab,
        "a_a": {
            "seeds": seeds,
            "differences_found": sum(r["p_value"] < 0.05 for r in aa),
            "p_values": [round(r["p_value"], 4) for r in aa],
            "differences_found_pooled": sum(r["p_value_pooled"] < 0.05 for r in aa),
            "p_values_pooled": [round(r["p_value_pooled"], 4) for r in aa],
            "truth_inside_ci": sum(r["truth_inside_ci"] for r in aa),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--posts", type=int, default=2016)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.database_url, args.users, args.posts, args.interactions, args.seeds)
    ab, aa = result["a_b"], result["a_a"]
    print(f"A/B ({result['users']} users, model vs popularity): impressions {ab['impressions']}")
    print(f"  CTR {ab['ctr']} (true {ab['true_ctr']})")
    print(
        f"  relative difference {ab['relative_difference']:+.3f}, 95% CI [{ab['ci'][0]:+.3f}, {ab['ci'][1]:+.3f}], "
        f"p = {ab['p_value']:.2g} (pooled {ab['p_value_pooled']:.2g}); true {ab['true_relative_difference']:+.3f} "
        f"inside: {ab['truth_inside_ci']}"
    )
    print(
        f"A/A: a difference (p < 0.05) in {aa['differences_found']} of {aa['seeds']} seeds; p-values {aa['p_values']}"
    )
    print(
        f"  (the pooled per-impression test: {aa['differences_found_pooled']} of {aa['seeds']}; "
        f"{aa['p_values_pooled']})"
    )
    print(f"  the true difference inside the 95% interval in {aa['truth_inside_ci']} of {aa['seeds']}")
    print(f"total {result['seconds']} s (training {result['train_seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
