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
builds the same one and a scroll's pages agree whichever worker answers.

Most similar pages start with a post of the model, so the training run precomputes every post's first
:data:`NEIGHBOURS` once per version (:func:`neighbour_table`, :func:`save_neighbours`: exact matrix products
in blocks up to :data:`EXACT_ITEMS` posts, the cell index's queries batched cell by cell past it) and the web
workers map that table (:func:`load_neighbours`) instead of querying per page. Both ways give the same rows:
the order is never taken from a float32 BLAS product, whose rounding differs between a matrix-vector and a
matrix-matrix product, but from :func:`exact_cosines` of the candidates within :func:`margin` of the k-th
(:func:`_best`). The baselines of ``python -m ml.evaluate --similar`` (item co-occurrence counts, popularity
within the community) are here too, next to what they are compared with.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

import ml.artifact
from ml.model import RecModel

logger = logging.getLogger(__name__)


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
# The neighbours precomputed per post and version (the head of its similar pages: app.feed.similar's
# RERANK_DEPTH is this), and the file they are kept in beside the version's artifact.
NEIGHBOURS = 100
TABLE_SUFFIX = ".similar.npz"
# Scores held at once while the table is built: queries per block × the items they are scored against (16 MiB).
_BLOCK_SCORES = 1 << 22
# Queries scored together past EXACT_ITEMS (a block holds about PROBE × CELL_ITEMS scores of each).
_CELL_QUERIES = 2048


@dataclass(frozen=True, eq=False)
class UnitItems:
    """The normalised item embeddings of one model: ``cosines(v)`` scores every item against a unit vector.

    ``cells`` is the version's :class:`CellIndex` when the catalogue is larger than ``EXACT_ITEMS``, else None.
    """

    unit: np.ndarray  # (I, d) float32
    usable: np.ndarray  # (I,) bool: the item has a direction (a zero embedding has none)
    all_usable: bool
    cells: CellIndex | None = None
    table: NeighbourTable | None = None  # the version's precomputed neighbours, when it has them

    @classmethod
    def of(cls, model: RecModel, exact_items: int | None = None, table: NeighbourTable | None = None) -> UnitItems:
        """The version's unit vectors, its cell index past ``exact_items`` (default :data:`EXACT_ITEMS`) and
        its ``table`` (:func:`load_neighbours`) if given."""
        unit, usable = unit_rows(model.item_embeddings)
        limit = EXACT_ITEMS if exact_items is None else exact_items
        cells = CellIndex.build(unit, usable, CELL_ITEMS, PROBE) if int(usable.sum()) > limit else None
        return cls(unit, usable, bool(usable.all()), cells, table)

    def nearest(self, vector: np.ndarray, k: int, skip: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(item indices int64, cosines float32) of the ``k`` items nearest the unit ``vector``, best first
        (ties: smaller item first; the cosines are :func:`exact_cosines`).

        Item ``skip`` is left out. Through the cell index when there is one (approximate), else exact. A row
        of the version's :class:`NeighbourTable` is this for its item (``skip`` the item itself).
        """
        if self.cells is not None:
            return self.cells.nearest(vector, k, skip)
        cosines = self.cosines(vector)
        if 0 <= skip < len(cosines):
            cosines[skip] = -np.inf
        items, exact = _best(vector[None], cosines[None], self.unit, k)
        return _row(items[0], exact[0])

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
            cells = self.probed(vector[None], self.centroids @ vector, k)[0]
            spans = list(zip(self.starts[cells].tolist(), self.starts[cells + 1].tolist(), strict=True))
            items = np.concatenate([self.items[a:b] for a, b in spans])
            vectors = np.concatenate([self.vectors[a:b] for a, b in spans])
            cosines = vectors @ vector
        if skip >= 0:
            cosines[items == skip] = -np.inf
        found, exact = _best(vector[None], cosines[None], vectors, k, items)
        return _row(found[0], exact[0])

    def probed(self, queries: np.ndarray, by_cell: np.ndarray, k: int) -> list[np.ndarray]:
        """The cells each query scores: its :attr:`probe` nearest centroids (``by_cell``: their float32 products,
        one row per query), and the next ones in order while those hold ``k`` items or fewer (tiny cells)."""
        by_cell = by_cell.reshape(len(queries), -1)
        nearest, _ = _best(queries, by_cell, self.centroids, self.probe)
        found = list(nearest)
        for row in np.flatnonzero(self.sizes[nearest].sum(axis=1) <= k).tolist():
            ranked = _best(queries[row : row + 1], by_cell[row : row + 1], self.centroids, len(self.sizes))[0][0]
            needed = int(np.searchsorted(np.cumsum(self.sizes[ranked]), k + 1)) + 1
            found[row] = ranked[: max(self.probe, needed)]
        return found

    def neighbours(self, k: int, items: np.ndarray, cosines: np.ndarray) -> None:
        """Fill rows of ``items`` and ``cosines`` (I × ``k``) with every usable item's :meth:`nearest` without itself.

        A block of :data:`_CELL_QUERIES` items (in cell order) is queried at once: each cell any of them
        probes is scored against those that probe it (one matrix product per cell), and each query's scores
        are laid side by side on its row (-inf past them), so no query is scored against a cell it does not
        probe, however little the queries' cells overlap. Which item a column is follows from where each of
        the row's cells starts on it.
        """
        by_item = np.zeros((int(self.items.max(initial=-1)) + 1, self.vectors.shape[1]), dtype=np.float64)
        by_item[self.items] = self.vectors
        cell_of = np.repeat(np.arange(len(self.sizes)), self.sizes)  # of each position of self.items
        for start in range(0, len(self.items), _CELL_QUERIES):
            queries = self.vectors[start : start + _CELL_QUERIES]
            rows_count = len(queries)
            probed = self.probed(queries, queries @ self.centroids.T, k)
            rows = np.repeat(np.arange(rows_count), [len(cells) for cells in probed])
            by_cell = np.concatenate(probed)
            order = np.lexsort((rows, by_cell))
            order = order[self.sizes[by_cell[order]] > 0]  # an empty cell takes no column
            rows, by_cell = rows[order], by_cell[order]  # by cell, then row: a cell's queries are one block
            width = int(np.bincount(rows, weights=self.sizes[by_cell], minlength=rows_count).max())
            scores = np.full((rows_count, width), -np.inf, dtype=np.float32)
            offsets = np.empty(len(rows), dtype=np.int64)  # where each (row, cell) starts on the row
            filled = np.zeros(rows_count, dtype=np.int64)
            bounds = np.flatnonzero(np.diff(by_cell, prepend=-1, append=len(self.sizes)))
            for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                cell, at = int(by_cell[first]), rows[first:last]
                a, b = int(self.starts[cell]), int(self.starts[cell + 1])
                offsets[first:last] = filled[at]
                scores[at[:, None], filled[at, None] + np.arange(b - a)] = queries[at] @ self.vectors[a:b].T
                filled[at] += b - a
            # Each query's own item, where its row holds its cell (pairs sorted by cell, then row).
            own = np.arange(start, start + rows_count)
            pair = np.searchsorted(by_cell * rows_count + rows, cell_of[own] * rows_count + np.arange(rows_count))
            pair = np.minimum(pair, len(rows) - 1)
            held = (by_cell[pair] == cell_of[own]) & (rows[pair] == np.arange(rows_count))
            scores[held.nonzero()[0], (offsets[pair] + own - self.starts[cell_of[own]])[held]] = -np.inf
            # A column's item: the row's cell that starts last at or before it (pairs sorted by row, then start).
            layout = np.argsort(rows * (width + 1) + offsets)
            keys = (rows * (width + 1) + offsets)[layout]
            item_at = partial(self._item_at, keys, width + 1, by_cell[layout], offsets[layout])
            owners = self.items[own]
            items[owners], cosines[owners] = _best(by_item[owners], scores, by_item, k, item_at)

    def _item_at(
        self,
        keys: np.ndarray,
        stride: int,
        cells: np.ndarray,
        offsets: np.ndarray,
        rows: np.ndarray,
        columns: np.ndarray,
    ) -> np.ndarray:
        """The items at ``columns`` of ``rows`` of a block of :meth:`neighbours`, whose (row, cell) pairs start at
        ``offsets`` on their rows (``keys``: row × ``stride`` + offset, ascending)."""
        found = np.searchsorted(keys, rows * stride + columns, side="right") - 1
        return self.items[self.starts[cells[found]] + columns - offsets[found]]


def _nearest_cells(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The index of the centroid of largest dot product with each row (ties: the smaller index)."""
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _BLOCK_ROWS):
        out[start : start + _BLOCK_ROWS] = np.argmax(rows[start : start + _BLOCK_ROWS] @ centroids.T, axis=1)
    return out


def exact_cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two float32 arrays (one per row), in float64 and rounded to float32.

    The products of two float32 are exact in float64 and each row is summed in one fixed order, so a row's
    value never depends on how many rows are computed with it, unlike a BLAS product's.
    """
    return np.einsum("ij,ij->i", left.astype(np.float64, copy=False), right.astype(np.float64, copy=False)).astype(
        np.float32
    )


def margin(dim: int) -> float:
    """A bound (with room) on how far a float32 BLAS dot product of two unit vectors of ``dim`` components
    is from :func:`exact_cosines`, whatever its summation order (about ``dim`` × 2**-24)."""
    return 8 * dim * float(np.finfo(np.float32).eps)


def _best(
    queries: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray,
    k: int,
    ids: np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best candidates by :func:`exact_cosines`, best first (ties: smaller id first).

    ``scores`` (rows × N float32) are BLAS products of the rows' ``queries`` with the N ``vectors`` (``-inf``:
    not a candidate); ``ids`` name the candidates (default: their positions). When each row has candidates of
    its own, ``ids(rows, columns)`` names them and ``vectors`` are indexed by those names. Returns (ids int64, cosines
    float32), rows × ``k``, a row padded with -1 and ``-inf`` past its finite candidates. Every candidate
    within :func:`margin` of a row's k-th score is rescored exactly, which includes the exact k best: the
    answer is the same whichever product (matrix-vector or in blocks) gave ``scores``. A sampled threshold
    that about ``2k`` scores pass keeps the pass over a row to one comparison (as :func:`top`).
    """
    rows_count, n = scores.shape
    if rows_count == 1:
        return _best_of_one(queries[0], scores[0], vectors, k, ids)
    lowest = np.finfo(np.float32).min  # -inf never passes it
    threshold = np.full(rows_count, lowest, dtype=np.float32)
    if n > 16 * k:
        sample = scores[:, :: max(1, n // 4096)]
        at = max(0, sample.shape[1] - 1 - (2 * k * sample.shape[1]) // n)
        threshold = np.maximum(np.partition(sample, at, axis=1)[:, at], lowest)
    rows, columns = np.divmod(np.flatnonzero(scores >= threshold[:, None]), n)  # faster than a 2-d nonzero
    spread = _spread(rows, scores[rows, columns], rows_count, -np.inf)
    width = spread.shape[1]
    kth = np.partition(spread, width - k, axis=1)[:, width - k] if width >= k else np.full(rows_count, -np.inf)
    # Within the margin of the k-th; every finite score in a row of fewer than k above its threshold.
    bound = np.where(np.isfinite(kth), kth - np.float32(margin(queries.shape[1])), lowest).astype(np.float32)
    short = np.flatnonzero(bound < threshold)  # the threshold left some of those out: the row again
    if len(short):
        again, more = np.divmod(np.flatnonzero(scores[short] >= bound[short, None]), n)
        kept = ~np.isin(rows, short)
        rows, columns = np.concatenate([rows[kept], short[again]]), np.concatenate([columns[kept], more])
        order = np.argsort(rows, kind="stable")
        rows, columns = rows[order], columns[order]
    kept = scores[rows, columns] >= bound[rows]
    rows, columns = rows[kept], columns[kept]
    if ids is None or not callable(ids):
        named, candidates = (columns if ids is None else ids[columns]), vectors[columns]
    else:
        named = ids(rows, columns)
        candidates = vectors[named]
    exact = _spread(rows, exact_cosines(queries[rows], candidates), rows_count, -np.inf)
    named = _spread(rows, named, rows_count, -1)
    order = np.lexsort((named, -exact), axis=-1)[:, :k]
    found = np.full((rows_count, k), -1, dtype=np.int64)
    cosines = np.full((rows_count, k), -np.inf, dtype=np.float32)
    found[:, : order.shape[1]] = np.take_along_axis(named, order, axis=1)
    cosines[:, : order.shape[1]] = np.take_along_axis(exact, order, axis=1)
    return found, cosines


def _best_of_one(
    query: np.ndarray, scores: np.ndarray, vectors: np.ndarray, k: int, ids
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_best` of one row (a page's query): the same candidates' rule, with fewer calls than a block's."""
    kth = np.partition(scores, len(scores) - k)[len(scores) - k] if len(scores) >= k else -np.inf
    lowest = np.finfo(np.float32).min  # -inf never passes it
    columns = np.flatnonzero(scores >= (kth - np.float32(margin(len(query))) if np.isfinite(kth) else lowest))
    if ids is None or not callable(ids):
        named, candidates = (columns if ids is None else ids[columns]), vectors[columns]
    else:
        named = ids(np.zeros(len(columns), dtype=np.int64), columns)
        candidates = vectors[named]
    exact = exact_cosines(candidates, np.broadcast_to(query, candidates.shape))
    order = np.lexsort((named, -exact))[:k]
    found = np.full((1, k), -1, dtype=np.int64)
    cosines = np.full((1, k), -np.inf, dtype=np.float32)
    found[0, : len(order)], cosines[0, : len(order)] = named[order], exact[order]
    return found, cosines


def _spread(rows: np.ndarray, values: np.ndarray, rows_count: int, fill: float) -> np.ndarray:
    """``values`` grouped by their ascending ``rows`` as a ``rows_count`` × (longest group) array, each group
    in its order on its row, the rest ``fill``."""
    counts = np.bincount(rows, minlength=rows_count)
    at = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    out = np.full((rows_count, max(int(counts.max(initial=0)), 1)), fill, dtype=values.dtype)
    out[rows, at] = values
    return out


def _row(items: np.ndarray, cosines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row of :func:`_best` without its padding."""
    count = int(np.count_nonzero(items >= 0))
    return items[:count], cosines[:count]


@dataclass(frozen=True, eq=False)
class NeighbourTable:
    """A version's precomputed neighbours (:func:`neighbour_table`), mapped read-only from its file.

    Row ``i`` is ``UnitItems.nearest(unit[i], NEIGHBOURS, skip=i)``, padded with -1 (and ``-inf``) when the
    catalogue has fewer; an item without a direction has only padding.
    """

    items: np.ndarray  # (I, NEIGHBOURS) int32
    cosines: np.ndarray  # (I, NEIGHBOURS) float32

    def row(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices int64, cosines float32) of ``item``'s neighbours, best first: copies, not the mapping."""
        return _row(self.items[item].astype(np.int64), np.array(self.cosines[item], dtype=np.float32))


def neighbour_table(units: UnitItems, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Every item's ``units.nearest(units.unit[i], k, skip=i)``: (items int32, cosines float32), I × ``k``.

    Without a cell index, exact: blocks of items against every item, :data:`_BLOCK_SCORES` scores at a time;
    else through the index (:meth:`CellIndex.neighbours`). Rows of items without a direction are padding.
    """
    count = len(units.unit)
    items = np.full((count, k), -1, dtype=np.int32)
    cosines = np.full((count, k), -np.inf, dtype=np.float32)
    with one_blas_thread():  # many small products: BLAS threads only wait for each other
        if units.cells is not None:
            units.cells.neighbours(k, items, cosines)
        else:
            queries = np.flatnonzero(units.usable)
            block = max(1, _BLOCK_SCORES // max(count, 1))
            for start in range(0, len(queries), block):
                rows = queries[start : start + block]
                scores = units.unit[rows] @ units.unit.T
                if not units.all_usable:
                    scores[:, ~units.usable] = -np.inf
                scores[np.arange(len(rows)), rows] = -np.inf
                items[rows], cosines[rows] = _best(units.unit[rows], scores, units.unit, k)
    return items, cosines


def save_neighbours(model_dir: str | os.PathLike, version: str, model: RecModel, keep: Sequence[str] = ()) -> Path:
    """Write ``version``'s :func:`neighbour_table` beside its artifact (``<version>.similar.npz``): what the web
    workers map at the swap (:func:`load_neighbours`). Tables of versions other than it and ``keep`` go."""
    items, cosines = neighbour_table(UnitItems.of(model))
    arrays = {"items": items, "cosines": cosines}
    return ml.artifact.save_beside(model_dir, version, TABLE_SUFFIX, arrays, keep, mappable=True)


def load_neighbours(model_dir: str | os.PathLike, version: str, num_items: int) -> NeighbourTable | None:
    """``version``'s table, its arrays mapped read-only (the web workers of a host share one copy), or None
    when it has none (written before tables existed, or its write failed) or it is unreadable, damaged (a zip
    CRC does not match) or not of this model's shape: the neighbours are then computed per page, as before.
    """
    path = Path(model_dir) / f"{version}{TABLE_SUFFIX}"
    try:
        arrays = ml.artifact.map_beside(model_dir, version, TABLE_SUFFIX)
        items, cosines = arrays["items"], arrays["cosines"]
        shapes = {(items.dtype.str, items.shape), (cosines.dtype.str, cosines.shape)}
        if shapes != {("<i4", (num_items, NEIGHBOURS)), ("<f4", (num_items, NEIGHBOURS))}:
            raise ValueError(f"arrays {sorted(shapes)}, not int32 and float32 of ({num_items}, {NEIGHBOURS})")
        if items.size and not -1 <= int(items.min()) <= int(items.max()) < num_items:
            raise ValueError("an item is out of range")
    except FileNotFoundError:
        logger.info("version %s has no similar-post table (%s): neighbours are computed per page", version, path)
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.error("the similar-post table %s is unusable, neighbours are computed per page: %s", path, exc)
        return None
    return NeighbourTable(items, cosines)


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
