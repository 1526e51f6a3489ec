"""Item-to-item similarity: cosine over the model's item representations, and the offline baselines.

Two posts are similar when LightFM placed them in the same direction: the cosine of their feature-combined
embeddings (:attr:`RecModel.item_embeddings`, or :meth:`RecModel.item_representations` for a post newer than
the model; a positive scale such as the fresh-post calibration leaves a cosine unchanged). The biases are
left out: they say how popular a post is, not what it is about.

:class:`UnitItems` holds the normalised embeddings of one model version (items × d float32, made once per
version), so the neighbours of a post cost one matrix-vector product and a partial sort. Past
:data:`EXACT_ITEMS` posts that product is most of a page's cost, so the version also gets a
:class:`CellIndex` (an inverted file: spherical k-means cells, a query scores the items of the few cells
nearest to it), built once per version off the request path and deterministic, so every web worker
builds the same one and a scroll's pages agree whichever worker answers. The baselines of
``python -m ml.evaluate --similar`` (item co-occurrence counts, popularity within the community) are here
too, next to what they are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from ml.model import RecModel


def unit_rows(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows scaled to length 1 as C-contiguous float32, usable)``; a zero row stays zero and is not usable."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    usable = norms > 0
    unit = np.zeros_like(vectors)
    unit[usable] = vectors[usable] / norms[usable, None]
    return np.ascontiguousarray(unit), usable


# Catalogues with at most this many posts with a direction are scanned exactly (see docs/PERFORMANCE.md,
# "Browsing": at 20,000 posts the scan is a small part of a page); larger ones get a CellIndex.
EXACT_ITEMS = 50_000
# Posts per k-means cell on average, and the cells a query scores: recall@100 against the exact scan is
# measured by ``python -m benchmarks.similar_index``.
CELL_ITEMS = 256
PROBE = 16
# k-means runs on a sample of this many posts per cell (the assignment then covers every post).
_SAMPLE_PER_CELL = 32
_ITERATIONS = 8
_BLOCK_ROWS = 8192  # rows per product while assigning: 8192 × cells float32 at a time


@dataclass(frozen=True, eq=False)
class UnitItems:
    """The normalised item embeddings of one model: ``cosines(v)`` scores every item against a unit vector.

    ``cells`` is the version's :class:`CellIndex` when the catalogue is larger than ``EXACT_ITEMS``, else None.
    """

    unit: np.ndarray  # (I, d) float32
    usable: np.ndarray  # (I,) bool: the item has a direction (a zero embedding has none)
    all_usable: bool
    cells: CellIndex | None = None

    @classmethod
    def of(cls, model: RecModel, exact_items: int | None = None) -> UnitItems:
        """The version's unit vectors, and its cell index past ``exact_items`` (default :data:`EXACT_ITEMS`)."""
        unit, usable = unit_rows(model.item_embeddings)
        limit = EXACT_ITEMS if exact_items is None else exact_items
        cells = CellIndex.build(unit, usable, CELL_ITEMS, PROBE) if int(usable.sum()) > limit else None
        return cls(unit, usable, bool(usable.all()), cells)

    def nearest(self, vector: np.ndarray, k: int, skip: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(item indices int64, cosines float32) of the ``k`` items nearest the unit ``vector``, best first.

        Item ``skip`` is left out. Through the cell index when there is one (approximate), else exact.
        """
        if self.cells is not None:
            return self.cells.nearest(vector, k, skip)
        cosines = self.cosines(vector)
        if 0 <= skip < len(cosines):
            cosines[skip] = -np.inf
        best = top(cosines, k)
        return best.astype(np.int64), cosines[best]

    def cosines(self, vector: np.ndarray) -> np.ndarray:
        """Cosine of every item with the unit ``vector`` (float32, length I); items without a direction get -inf."""
        with one_blas_thread():  # see RecModel.top_k: BLAS threads slow small products
            scores = self.unit @ vector
        if not self.all_usable:
            scores[~self.usable] = -np.inf
        return scores


@dataclass(frozen=True, eq=False)
class CellIndex:
    """An inverted file over unit item vectors: spherical k-means cells, each cell's items contiguous.

    A query scores the centroids, then only the items of its :data:`PROBE` nearest cells (and of further
    ones while those hold too few items): about ``PROBE * CELL_ITEMS`` products instead of one per item.
    Built deterministically (a fixed seed, BLAS on one thread), so two processes build the same index.
    """

    centroids: np.ndarray  # (C, d) float32, unit rows
    items: np.ndarray  # (U,) int64: the usable items, cell by cell (ascending within a cell)
    starts: np.ndarray  # (C + 1,) int64: cell c holds items[starts[c] : starts[c + 1]]
    vectors: np.ndarray  # (U, d) float32: the unit vectors of ``items``, contiguous
    probe: int
    sizes: np.ndarray  # (C,) int64: items per cell

    @classmethod
    def build(
        cls, unit: np.ndarray, usable: np.ndarray, cell_items: int = CELL_ITEMS, probe: int = PROBE, seed: int = 0
    ) -> CellIndex:
        """k-means (cosine) on a sample of the usable rows of ``unit``, then every usable row to its nearest cell."""
        items = np.flatnonzero(usable).astype(np.int64)
        data = np.ascontiguousarray(unit[items])
        cells = max(1, len(items) // cell_items)
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(items), min(len(items), cells * _SAMPLE_PER_CELL), replace=False)
        sample = data[np.sort(picked)]
        centroids = sample[np.sort(rng.choice(len(sample), cells, replace=False))].copy()
        with one_blas_thread():
            for _ in range(_ITERATIONS):
                assigned = _nearest_cells(sample, centroids)
                one_hot = sp.csr_matrix(
                    (np.ones(len(sample), dtype=np.float32), (assigned, np.arange(len(sample)))),
                    shape=(cells, len(sample)),
                )
                sums = np.asarray(one_hot @ sample, dtype=np.float32)
                norms = np.linalg.norm(sums, axis=1)
                moved = norms > 0  # an empty cell keeps its centroid
                centroids[moved] = sums[moved] / norms[moved, None]
            assigned = _nearest_cells(data, centroids)
        order = np.argsort(assigned, kind="stable")
        starts = np.searchsorted(assigned[order], np.arange(cells + 1)).astype(np.int64)
        vectors = np.ascontiguousarray(data[order])
        return cls(centroids, items[order], starts, vectors, min(probe, cells), np.diff(starts))

    def nearest(self, vector: np.ndarray, k: int, skip: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(items, cosines) of the ``k`` best items of the probed cells, best first (ties: smaller item first)."""
        with one_blas_thread():  # one limit for both products (entering one costs about 13 µs)
            by_cell = self.centroids @ vector
            cells = top(by_cell, self.probe)
            if int(self.sizes[cells].sum()) <= k:  # too few items there (tiny cells): the next cells in order too
                ranked = top(by_cell, len(by_cell))
                cells = ranked[: max(len(cells), int(np.searchsorted(np.cumsum(self.sizes[ranked]), k + 1)) + 1)]
            spans = list(zip(self.starts[cells].tolist(), self.starts[cells + 1].tolist(), strict=True))
            items = np.concatenate([self.items[a:b] for a, b in spans])
            cosines = np.concatenate([self.vectors[a:b] for a, b in spans]) @ vector
        if skip >= 0:
            cosines[items == skip] = -np.inf
        best = np.argpartition(-cosines, k - 1)[:k] if len(cosines) > k else np.arange(len(cosines))
        best = best[np.isfinite(cosines[best])]
        best = best[np.lexsort((items[best], -cosines[best]))]
        return items[best], cosines[best]


def _nearest_cells(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The index of the centroid of largest dot product with each row (ties: the smaller index)."""
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _BLOCK_ROWS):
        out[start : start + _BLOCK_ROWS] = np.argmax(rows[start : start + _BLOCK_ROWS] @ centroids.T, axis=1)
    return out


def one_blas_thread():
    """A context in which BLAS runs on one thread: its threads slow a web worker's small products."""
    return _blas().limit(limits=1, user_api="blas")


@cache
def _blas() -> ThreadpoolController:
    """The process's thread pools, found once: finding them costs about a millisecond, a request's whole budget."""
    return ThreadpoolController()


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores, best first (ties: smaller index first; scores are never NaN).

    A strided sample's quantile gives a threshold that about ``2k`` scores pass; when at least ``k`` do, the k
    best are among them (exact), so only those are partitioned and sorted: one comparison over the whole
    array instead of a partition of it (a few times cheaper at 200,000 items). Otherwise the whole array.
    """
    n = len(scores)
    candidates = np.arange(n)
    if n > 16 * k:
        sample = np.sort(scores[:: max(1, n // 4096)])
        threshold = sample[max(0, len(sample) - 1 - (2 * k * len(sample)) // n)]
        passed = np.flatnonzero(scores >= threshold)
        if len(passed) >= k:
            candidates = passed
    if len(candidates) > k:
        values = scores[candidates]
        kth = np.partition(values, len(values) - k)[len(values) - k]
        candidates = candidates[values >= kth]  # the k best, and every entry tied with the k-th
    candidates = candidates[np.isfinite(scores[candidates])]
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


def cooccurrence(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """Items × items: how many users interacted with both (the diagonal zeroed). A baseline, not served."""
    binary = user_items.copy().tocsr()
    binary.data[:] = 1
    counts = (binary.T @ binary).tocsr().astype(np.float32)
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts


def community_popularity(popularity: np.ndarray, community_of: Sequence[int] | np.ndarray) -> dict[int, np.ndarray]:
    """Community index -> its items by descending ``popularity`` (ties: smaller index first). A baseline."""
    communities = np.asarray(community_of, dtype=np.int64)
    order = np.lexsort((np.arange(len(popularity)), -np.asarray(popularity)))
    ranked: dict[int, list[int]] = {}
    for item in order.tolist():
        ranked.setdefault(int(communities[item]), []).append(item)
    return {community: np.asarray(items, dtype=np.int64) for community, items in ranked.items()}
