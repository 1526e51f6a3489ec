"""ml.similar.CellIndex: the approximate neighbours of a large catalogue, and when the scan stays exact."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

import ml.similar
from ml.similar import CellIndex, UnitItems, top, unit_rows
from testing.factories import random_model
from testing.processes import REPO


def clustered(n: int, d: int = 16, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """``n`` vectors around ``clusters`` directions (as trained embeddings are), a few of them zero."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    vectors = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    vectors[rng.integers(0, n, n // 50)] = 0
    return vectors.astype(np.float32)


def exact(units: UnitItems, post: int, k: int) -> np.ndarray:
    cosines = units.cosines(units.unit[post])
    cosines[post] = -np.inf
    return top(cosines, k)


def test_the_index_finds_nearly_all_of_the_exact_hundred_best_first_without_the_post():
    unit, usable = unit_rows(clustered(12_000))
    units = UnitItems(unit, usable, False, CellIndex.build(unit, usable, cell_items=64, probe=16))
    recalls = []
    for post in np.flatnonzero(usable)[::97].tolist():
        items, cosines = units.nearest(units.unit[post], 100, skip=post)
        assert len(items) == 100 == len(set(items.tolist())) and post not in items
        assert usable[items].all()
        assert cosines == pytest.approx(unit[items] @ unit[post], abs=1e-5)
        order = np.lexsort((items, -cosines))
        assert (order == np.arange(100)).all()  # best first, ties by the smaller item
        recalls.append(len(np.intersect1d(items, exact(units, post, 100))) / 100)
    assert np.mean(recalls) >= 0.95


def test_cells_partition_the_usable_items_and_tiny_cells_are_probed_until_k_are_found():
    unit, usable = unit_rows(clustered(3_000, seed=1))
    index = CellIndex.build(unit, usable, cell_items=8, probe=1)  # 1 cell of about 8 items
    assert sorted(index.items.tolist()) == np.flatnonzero(usable).tolist()
    assert index.starts[0] == 0 and index.starts[-1] == len(index.items) and (np.diff(index.starts) >= 0).all()
    assert np.array_equal(index.vectors, unit[index.items])
    items, _ = index.nearest(unit[5], 50, skip=5)
    assert len(items) == 50 and 5 not in items
    everything, _ = index.nearest(unit[5], len(index.items), skip=5)  # every cell: the exact order
    units = UnitItems(unit, usable, False)
    assert everything.tolist() == exact(units, 5, len(index.items)).tolist()


def test_small_catalogues_stay_exact_and_large_ones_get_an_index(monkeypatch):
    model = random_model(num_users=2, num_items=600, dim=8, seed=4)
    small = UnitItems.of(model)
    assert small.cells is None
    items, cosines = small.nearest(small.unit[9], 30, skip=9)
    assert items.tolist() == exact(small, 9, 30).tolist()
    monkeypatch.setattr(ml.similar, "EXACT_ITEMS", 500)
    large = UnitItems.of(model)
    assert large.cells is not None and len(large.cells.items) == 600


def fingerprint() -> str:
    """The sha256 of every array of the index of a fixed catalogue, built in this process."""
    index = CellIndex.build(*unit_rows(clustered(20_000, seed=2)), cell_items=64)
    digest = hashlib.sha256()
    for array in (index.centroids, index.items, index.starts, index.vectors):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


BUILD = "from tests.ml.test_similar_index import fingerprint; print(fingerprint())"


def test_two_processes_build_the_same_index():
    """Each web worker builds its own: a scroll's pages must agree whichever worker answers."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", BUILD],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        for _ in range(2)
    }
    assert digests == {fingerprint()}
