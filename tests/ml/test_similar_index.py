"""ml.similar: the approximate neighbours of a large catalogue (CellIndex), when the scan stays exact, and the
table of every post's neighbours a training run writes beside its version."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile

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


# --- the neighbour table a training run writes beside its version ---


def ties(n: int, seed: int) -> np.ndarray:
    """Clustered vectors, and a twentieth of them copies of one row: exact ties the order must break by item."""
    vectors = clustered(n, seed=seed)
    vectors[np.random.default_rng(seed).integers(0, n, n // 20)] = vectors[7]
    return vectors


@pytest.mark.parametrize(("n", "cell_items", "probe"), [(2_500, None, 0), (5_000, 64, 4), (1_500, 8, 1)])
def test_every_row_of_the_table_is_what_nearest_gives_for_that_post(n, cell_items, probe):
    """Blocked products round differently from a query's own: the rows must still equal nearest, bit for bit
    (pages of one scroll may come from a worker with the table and one without). Exact, through an index,
    and through tiny cells that a query widens."""
    unit, usable = unit_rows(ties(n, seed=n))
    cells = CellIndex.build(unit, usable, cell_items=cell_items, probe=probe) if cell_items else None
    units = UnitItems(unit, usable, False, cells)
    items, cosines = ml.similar.neighbour_table(units, k=60)
    assert items.dtype == np.int32 and items.shape == cosines.shape == (n, 60)
    for post in range(n):
        if not usable[post]:
            assert (items[post] == -1).all() and (cosines[post] == -np.inf).all()
            continue
        found, exact = units.nearest(unit[post], 60, skip=post)
        assert items[post].tolist() == found.tolist() and cosines[post].tobytes() == exact.tobytes()


def test_neighbours_are_ordered_by_their_exact_cosine_whichever_product_scored_them():
    unit, usable = unit_rows(ties(3_000, seed=5))
    units = UnitItems(unit, usable, False)
    found, cosines = units.nearest(unit[11], 100, skip=11)
    assert cosines.tobytes() == ml.similar.exact_cosines(unit[found], np.repeat(unit[11:12], 100, axis=0)).tobytes()
    assert (np.lexsort((found, -cosines)) == np.arange(100)).all()  # best first, ties by the smaller item
    blas = units.cosines(unit[11])
    assert np.abs(blas[found] - cosines).max() <= ml.similar.margin(unit.shape[1]) / 4


def test_a_table_saved_beside_a_version_maps_back_and_older_tables_go(tmp_path):
    model = random_model(num_users=3, num_items=300, dim=8, seed=6)
    first = ml.similar.save_neighbours(tmp_path, "20261129T000000Z-00000001", model)
    path = ml.similar.save_neighbours(tmp_path, "20261129T000001Z-00000002", model, keep=["20261129T000000Z-00000001"])
    ml.similar.save_neighbours(tmp_path, "20261129T000002Z-00000003", model, keep=["20261129T000001Z-00000002"])
    assert not first.exists() and path.exists()
    table = ml.similar.load_neighbours(tmp_path, "20261129T000001Z-00000002", model.num_items)
    assert table is not None and not table.items.flags.writeable and not table.items.flags.owndata
    units = UnitItems.of(model)
    for post in (0, 17, 299):
        found, cosines = units.nearest(units.unit[post], ml.similar.NEIGHBOURS, skip=post)
        items, exact = table.row(post)
        assert items.dtype == np.int64 and items.tolist() == found.tolist() and exact.tobytes() == cosines.tobytes()


def test_a_missing_damaged_or_foreign_table_is_none_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ml.similar")
    model = random_model(num_users=3, num_items=300, dim=8, seed=6)
    version = "20261129T000000Z-00000001"
    assert ml.similar.load_neighbours(tmp_path, version, model.num_items) is None  # an older version: none
    path = ml.similar.save_neighbours(tmp_path, version, model)
    assert ml.similar.load_neighbours(tmp_path, version, model.num_items + 1) is None  # another model's shape
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("cosines.npy")
    data[member.header_offset + member.compress_size // 2] ^= 0xFF  # a flipped byte inside that array's data
    path.write_bytes(bytes(data))
    assert ml.similar.load_neighbours(tmp_path, version, model.num_items) is None
    path.write_bytes(b"not a zip")
    assert ml.similar.load_neighbours(tmp_path, version, model.num_items) is None
    path.write_bytes(data[: len(data) // 3])  # truncated
    assert ml.similar.load_neighbours(tmp_path, version, model.num_items) is None
    logged = [r.getMessage() for r in caplog.records if r.name == "ml.similar"]
    assert len(logged) == 5 and "has no similar-post table" in logged[0]
    assert all("is unusable, neighbours are computed per page" in m for m in logged[1:]), logged
    assert "CRC mismatch" in logged[2]
