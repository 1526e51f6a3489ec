"""Similar posts' cell index (``ml.similar.CellIndex``) against the exact scan: recall@100, query and build time.

For each ``--items`` size, the serving benchmark's model (``benchmarks.serve.featured_model``: random item
embeddings, no cluster structure, so the hardest case for an inverted file), or with ``--trained`` a LightFM
model trained (default settings) on demo data of that many posts (``ml.demo``: ``--users``,
``--interactions``), whose embeddings carry their communities and tags as real ones do: builds the version's
:class:`ml.similar.UnitItems` with its cell index (timed: what a web worker does at a swap), then for
``--queries`` random posts compares the index's
first 100 neighbours with the exact scan's (recall@100: the share of the exact 100 the index finds) and
times both, in one process, BLAS on one thread as a web worker runs them. Usage, from the repository root::

    .venv/bin/python -m benchmarks.similar_index [--items 20000 200000] [--queries 500] [--probe 24]
        [--trained [--users 20000] [--interactions 400000]] [--all-pairs] [--table]

``--all-pairs`` also times the alternative, every post's exact 100 neighbours precomputed: one block of
2,048 posts against all (the product, and the selection's threshold), extrapolated: a lower bound.

``--table`` also builds the table a training run writes beside its version (``ml.similar.neighbour_table``
of ``UnitItems.of(model)``: exact up to ``EXACT_ITEMS`` posts, through the cell index past it), timed, and
measures the recall@100 of its rows for the same posts against the exact scan.

Prints a markdown table (the figures of docs/PERFORMANCE.md, "Browsing").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.serve import featured_model
from ml.csv_files import read_dataset_dir
from ml.model import RecModel
from ml.settings import TrainingSettings
from ml.similar import CELL_ITEMS, PROBE, UnitItems, neighbour_table, top
from ml.training import train
from testing.service import write_demo

K = 100


def measure(model: RecModel, queries: int, probe: int, seed: int = 3, table: bool = False) -> dict:
    """Build time, recall@K and per-query times of the cell index against the exact scan; with ``table``, the
    neighbour table's build time and its rows' recall@K too."""
    started = time.perf_counter()
    units = UnitItems.of(model, exact_items=0)
    build = time.perf_counter() - started
    assert units.cells is not None
    cells = replace(units.cells, probe=probe)
    rng = np.random.default_rng(seed)
    posts = rng.choice(np.flatnonzero(units.usable), min(queries, int(units.usable.sum())), replace=False)
    recalls, exact_ms, index_ms, table_recalls = [], [], [], []
    if table:
        started = time.perf_counter()
        rows, _ = neighbour_table(UnitItems.of(model))
        table_s = time.perf_counter() - started
    for post in posts.tolist():
        vector = units.unit[post]
        started = time.perf_counter()
        cosines = units.cosines(vector)
        cosines[post] = -np.inf
        exact = top(cosines, K)
        exact_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        found, _ = cells.nearest(vector, K, skip=post)
        index_ms.append(1000 * (time.perf_counter() - started))
        recalls.append(len(np.intersect1d(exact, found)) / len(exact))
        if table:
            table_recalls.append(len(np.intersect1d(exact, rows[post])) / len(exact))
    sizes = cells.sizes
    tabled = {"table_s": table_s, "table_mb": rows.nbytes * 2 / 1e6, "table_recall": table_recalls} if table else {}
    return {
        **tabled,
        "items": model.num_items,
        "cells": len(sizes),
        "probe": cells.probe,
        "scored": float(np.mean([sizes[top(cells.centroids @ units.unit[p], cells.probe)].sum() for p in posts])),
        "build_s": build,
        "recall": float(np.mean(recalls)),
        "recall_min": float(np.min(recalls)),
        "exact_ms": statistics.median(exact_ms),
        "index_ms": statistics.median(index_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[20_000, 200_000], help="catalogue sizes")
    parser.add_argument("--queries", type=int, default=500, help="random posts queried per size (default 500)")
    parser.add_argument("--probe", type=int, default=PROBE, help=f"cells scored per query (default {PROBE})")
    parser.add_argument("--all-pairs", action="store_true", help="also time an exact all-pairs top-100")
    parser.add_argument("--table", action="store_true", help="also build and measure the neighbour table")
    parser.add_argument("--trained", action="store_true", help="LightFM models trained on demo data instead")
    parser.add_argument("--users", type=int, default=20_000, help="demo users with --trained (default 20000)")
    parser.add_argument("--interactions", type=int, default=400_000, help="demo interactions (default 400000)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = []
    for posts in args.items:
        if args.trained:
            with tempfile.TemporaryDirectory(prefix="recsvc-similar-") as work:
                dataset = read_dataset_dir(write_demo(Path(work), args.users, posts, args.interactions))
            model = train(dataset, TrainingSettings())
        else:
            model = featured_model(500, posts, TrainingSettings().components, seed=1, communities=32)
        rows.append(measure(model, args.queries, args.probe, table=args.table))
        if args.all_pairs:
            rows[-1]["all_pairs_s"] = all_pairs_seconds(model)
    kind = "LightFM trained on demo data" if args.trained else "random embeddings (benchmarks.serve)"
    print(
        f"\n{kind}; {CELL_ITEMS} posts per cell on average, recall@{K} over {args.queries} random posts; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print("| posts | cells | probed | posts scored | build s | recall@100 mean (min) | exact ms | index ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['items']:,} | {r['cells']} | {r['probe']} | {r['scored']:.0f} | {r['build_s']:.2f} | "
            f"{r['recall']:.3f} ({r['recall_min']:.2f}) | {r['exact_ms']:.3f} | {r['index_ms']:.3f} |"
        )
    if args.table:
        print("\n| posts | table build s | table MB | table recall@100 mean (min) |\n|---:|---:|---:|---:|")
        for r in rows:
            recall = r["table_recall"]
            print(
                f"| {r['items']:,} | {r['table_s']:.1f} | {r['table_mb']:.0f} | "
                f"{np.mean(recall):.3f} ({np.min(recall):.2f}) |"
            )
    for r in rows:
        if "all_pairs_s" in r:
            print(
                f"exact top-{K} of every post at {r['items']:,} posts, extrapolated: at least {r['all_pairs_s']:.0f} s"
            )
    return 0


def all_pairs_seconds(model: RecModel, block: int = 2048) -> float:
    """A lower bound of the seconds an exact top-K of every item takes, from one block of ``block`` items.

    Counted: the block's product with every unit vector and the per-row sampled threshold that leaves about
    ``2 K`` candidates a row (as :func:`ml.similar.top` does); not counted: sorting those candidates.
    """
    unit = UnitItems.of(model, exact_items=len(model.item_ids)).unit
    started = time.perf_counter()
    scores = unit[:block] @ unit.T
    sample = np.sort(scores[:, :: max(1, len(unit) // 4096)], axis=1)
    threshold = sample[:, max(0, sample.shape[1] - 1 - (2 * K * sample.shape[1]) // len(unit))]
    np.nonzero(scores >= threshold[:, None])
    return (time.perf_counter() - started) * len(unit) / block


if __name__ == "__main__":
    sys.exit(main())
