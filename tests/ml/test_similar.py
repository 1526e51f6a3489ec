"""ml.similar: exact top-k of cosines (the sampled threshold never changes the answer), and the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.similar import UnitItems, community_popularity, cooccurrence, top, unit_rows


def reference(scores: np.ndarray, k: int) -> list[int]:
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.lexsort((finite, -scores[finite]))][:k].tolist()


@pytest.mark.parametrize("n", [1, 50, 3000, 40000])
@pytest.mark.parametrize("k", [1, 7, 100, 1100])
def test_top_is_the_exact_best_first_order_ties_by_index(n, k):
    rng = np.random.default_rng(n + k)
    scores = rng.standard_normal(n).astype(np.float32)
    scores[rng.integers(0, n, max(1, n // 10))] = -np.inf  # items without a direction
    assert top(scores, k).tolist() == reference(scores, k)
    tied = np.round(scores, 1)  # many ties, at the k-th too
    assert top(tied, k).tolist() == reference(tied, k)


def test_cosines_of_unit_items_and_zero_embeddings():
    embeddings = np.array([[3, 4], [0, 0], [-3, -4], [4, 3]], dtype=np.float32)
    units = UnitItems(*unit_rows(embeddings), all_usable=False)
    cosines = units.cosines(units.unit[0])
    assert cosines[0] == pytest.approx(1) and cosines[2] == pytest.approx(-1) and cosines[3] == pytest.approx(0.96)
    assert cosines[1] == -np.inf


def test_cooccurrence_counts_users_of_both_and_community_popularity_orders_each_community():
    user_items = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=np.float32))
    counts = cooccurrence(user_items).toarray()
    assert counts.tolist() == [[0, 2, 1], [2, 0, 2], [1, 2, 0]]
    ranked = community_popularity(np.array([1.0, 5.0, 5.0, 2.0]), [0, 1, 1, 0])
    assert ranked[0].tolist() == [3, 0] and ranked[1].tolist() == [1, 2]
