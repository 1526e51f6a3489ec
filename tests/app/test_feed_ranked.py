"""The feed's lazy rankings: every prefix agrees with the whole, sizes and membership are exact."""

from __future__ import annotations

import numpy as np
import pytest

from app.feed.ranked import EMPTY, Chained, Extended, Filtered, Fixed, Merged


def fixed(ids, scores=None):
    scores = np.linspace(1, 0, len(ids)) if scores is None else scores
    return Fixed(np.array(ids), np.array(scores, dtype=np.float32))


def check_prefixes(ranked):
    """take(n) is the first n of the whole, for every n; the whole has ``size`` distinct entries."""
    whole_ids, whole_scores = ranked.take(ranked.size + 5)
    assert len(whole_ids) == ranked.size == len(set(whole_ids.tolist()))
    for n in range(ranked.size + 2):
        ids, scores = ranked.take(n)
        assert ids.tolist() == whole_ids[:n].tolist()
        assert scores.tolist() == whole_scores[:n].tolist()
    assert all(i in ranked for i in whole_ids.tolist())
    return whole_ids.tolist()


def test_merged_keeps_each_order_and_gives_ties_to_the_first():
    merged = Merged(fixed([1, 2, 3], [5.0, 3.0, 1.0]), fixed([10, 11], [3.0, 2.0]))
    assert check_prefixes(merged) == [1, 2, 10, 11, 3]
    assert 12 not in merged


def test_chained_and_empty():
    assert check_prefixes(Chained(fixed([1, 2]), fixed([7, 8, 9]))) == [1, 2, 7, 8, 9]
    assert check_prefixes(Chained(EMPTY, fixed([7]))) == [7]
    assert check_prefixes(Merged(EMPTY, fixed([7]))) == [7]


def test_extended_continues_its_head_once_and_without_repeating_it():
    calls = []

    def rest(depth):
        calls.append(depth)
        # A ranking that orders a near-tie of the head differently (3 before 2): the head must win.
        ids = [1, 3, 2, 4, 5, 6][:depth]
        return np.array(ids), np.linspace(1, 0, len(ids)).astype(np.float32)

    ranked = Extended((np.array([1, 2]), np.array([1.0, 0.9], dtype=np.float32)), rest, 6, 6, lambda i: 1 <= i <= 6)
    assert ranked.take(2)[0].tolist() == [1, 2] and calls == []  # the head alone costs no ranking
    assert check_prefixes(ranked) == [1, 2, 3, 4, 5, 6]
    assert calls == [6]  # ranked once, to the fixed depth, whatever the pages asked for
    assert 7 not in ranked


@pytest.mark.parametrize("seed", range(5))
def test_filtered_removes_and_demotes_over_any_combination(seed):
    rng = np.random.default_rng(seed)
    first = fixed(list(range(0, 20)), np.sort(rng.random(20))[::-1])
    second = fixed(list(range(100, 110)), np.sort(rng.random(10))[::-1])
    base = Chained(Merged(first, second), fixed([200, 201]))
    whole = check_prefixes(base)
    removed = {int(i) for i in rng.choice(whole, 5, replace=False)} | {999}
    demoted = [int(i) for i in rng.choice([i for i in whole if i not in removed], 4, replace=False)] + [998]
    filtered = Filtered(base, removed, demoted)
    expected = [i for i in whole if i not in removed and i not in demoted]
    expected += [i for i in whole if i in demoted]
    assert check_prefixes(filtered) == expected
    assert filtered.size == len(whole) - 5
    assert not any(i in filtered for i in removed)
