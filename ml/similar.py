"""Item-to-item similarity: cosine over the model's item representations, and the offline baselines.

Two posts are similar when LightFM placed them in the same direction: the cosine of their feature-combined
embeddings (:attr:`RecModel.item_embeddings`, or :meth:`RecModel.item_representations` for a post newer than
the model; a positive scale such as the fresh-post calibration leaves a cosine unchanged). The biases are
left out: they say how popular a post is, not what it is about.

:class:`UnitItems` holds the normalised embeddings of one model version (items × d float32, made once per
version), so the neighbours of a post cost one matrix-vector product and a partial sort. The baselines of
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


@dataclass(frozen=True, eq=False)
class UnitItems:
    """The normalised item embeddings of one model: ``cosines(v)`` scores every item against a unit vector."""

    unit: np.ndarray  # (I, d) float32
    usable: np.ndarray  # (I,) bool: the item has a direction (a zero embedding has none)
    all_usable: bool

    @classmethod
    def of(cls, model: RecModel) -> UnitItems:
        unit, usable = unit_rows(model.item_embeddings)
        return cls(unit, usable, bool(usable.all()))

    def cosines(self, vector: np.ndarray) -> np.ndarray:
        """Cosine of every item with the unit ``vector`` (float32, length I); items without a direction get -inf."""
        with _blas().limit(limits=1, user_api="blas"):  # see RecModel.top_k: BLAS threads slow small products
            scores = self.unit @ vector
        if not self.all_usable:
            scores[~self.usable] = -np.inf
        return scores


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
