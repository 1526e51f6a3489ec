"""The feed's lazy rankings: every prefix agrees with the whole, sizes and membership are exact."""

from __future__ import annotations

import numpy as np
import pytest

from app.feed.ranked import EMPTY, Chained, Extended, Filtered, Fixed, Merged, Scored


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
    assert ranked.contains(whole_ids).all()
    return whole_ids.tolist()


def has(ranked, *ids):
    return ranked.contains(np.array(ids, dtype=np.int64)).tolist()


def test_merged_keeps_each_order_and_gives_ties_to_the_first():
    merged = Merged(fixed([1, 2, 3], [5.0, 3.0, 1.0]), fixed([10, 11], [3.0, 2.0]))
    assert check_prefixes(merged) == [1, 2, 10, 11, 3]
    assert has(merged, 12, 10) == [False, True]


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

    ranked = Extended(
        (np.array([1, 2]), np.array([1.0, 0.9], dtype=np.float32)), rest, 6, 6, lambda ids: (ids >= 1) & (ids <= 6)
    )
    assert ranked.take(2)[0].tolist() == [1, 2] and calls == []  # the head alone costs no ranking
    assert check_prefixes(ranked) == [1, 2, 3, 4, 5, 6]
    assert calls == [6]  # ranked once, to the fixed depth, whatever the pages asked for
    assert has(ranked, 7, 6) == [False, True]


def test_extended_ranks_its_continuation_only_as_deep_as_the_pages_go():
    """A page just past the head ranks twice its depth, not the whole feed's; a deeper page ranks deeper, and
    every page agrees with a continuation ranked to the full depth at once."""
    order = np.random.default_rng(3).permutation(5000)
    scores = np.linspace(1, 0, 5000).astype(np.float32)
    calls = []

    def rest(k):
        calls.append(k)
        return order[:k], scores[:k]

    def extended():
        head = (order[[0, 1, 2, 4, 3]], scores[:5])  # a head that orders a near-tie differently
        return Extended(head, rest, 1015, 5000, lambda ids: (ids >= 0) & (ids < 5000))

    whole = extended().take(1015)
    calls.clear()
    ranked = extended()
    assert ranked.take(5)[0].tolist() == whole[0][:5].tolist() and calls == []
    assert ranked.take(35)[0].tolist() == whole[0][:35].tolist() and calls == [70]
    assert ranked.take(70)[0].tolist() == whole[0][:70].tolist() and calls == [70]  # held: nothing ranked
    assert ranked.take(300)[0].tolist() == whole[0][:300].tolist() and calls == [70, 600]
    assert ranked.take(2000)[0].tolist() == whole[0].tolist() and calls == [70, 600, 1015]  # the depth bounds it
    assert ranked.take(1015)[1].tolist() == whole[1].tolist() and calls == [70, 600, 1015]


def test_extended_gives_a_whole_page_while_another_thread_ranks_it():
    """Kept feeds are shared by a worker's threads: a page taken while another thread's ranking is under way
    (here, from inside that ranking) still gets all its entries, and a shallower ranking made meanwhile does
    not replace the deeper one."""
    order = np.random.default_rng(4).permutation(5000)
    scores = np.linspace(1, 0, 5000).astype(np.float32)
    calls, meanwhile = [], []

    def rest(k):
        calls.append(k)
        if len(calls) == 1:
            meanwhile.append(ranked.take(150)[0])  # another thread's page, while this ranking runs
        return order[:k], scores[:k]

    ranked = Extended((order[:5], scores[:5]), rest, 1015, 5000, lambda ids: (ids >= 0) & (ids < 5000))
    ids = ranked.take(600)[0]
    assert calls == [1015, 300] and meanwhile[0].tolist() == ids[:150].tolist() == order[:150].tolist()
    assert ranked.held == 1015 and ranked.take(1015)[0].tolist() == order[:1015].tolist() and len(calls) == 2


def test_extended_ranks_a_universe_it_has_run_through_only_once():
    calls = []

    def rest(k):
        calls.append(k)
        return np.arange(min(k, 30)), np.linspace(1, 0, min(k, 30)).astype(np.float32)

    ranked = Extended((np.arange(5), np.linspace(1, 0.9, 5).astype(np.float32)), rest, 1015, 30, lambda ids: ids < 30)
    assert ranked.take(40)[0].tolist() == list(range(30)) and ranked.take(60)[0].tolist() == list(range(30))
    assert calls == [80]  # 30 posts were all there was: the deeper page ranks nothing again


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
    assert not any(has(filtered, *removed))


def test_scored_sorts_only_what_is_taken_and_breaks_ties_by_id():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.5], dtype=np.float32)
    scored = Scored(np.array([15, 11, 14, 12, 10, 13]), scores)
    assert scored.take(2)[0].tolist() == [10, 11]  # three tied at 3.0: the smallest ids first
    assert check_prefixes(scored) == [10, 11, 14, 12, 15, 13]
    assert has(scored, 13, 16) == [True, False]


@pytest.mark.parametrize("seed", range(10))
def test_take_from_is_the_taken_entries_scoring_at_least_the_floor(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, 40).astype(np.float32)
    ids = rng.permutation(40) + 100
    for n in (0, 1, 5, 39, 40, 45):
        for floor in (-1.0, 0.0, 3.0, 7.0, 8.0):
            expected_ids, expected_scores = Scored(ids, scores).take(n)
            keep = expected_scores >= floor
            for ranked in (Scored(ids, scores), Fixed(expected_ids, expected_scores)):
                got_ids, got_scores = ranked.take_from(n, floor)
                assert got_ids.tolist() == expected_ids[keep].tolist()
                assert got_scores.tolist() == expected_scores[keep].tolist()


def test_a_merge_sorts_only_the_entries_of_the_second_that_can_reach_the_page():
    """Fresh posts merged into a precomputed list: those scoring below all of the page's list entries stay unsorted."""
    scores = np.full(1000, 0.5, dtype=np.float32)
    scores[[7, 300]] = [9.5, 1.0]
    second = Scored(np.arange(100, 1100), scores)
    merged = Merged(fixed(list(range(10)), np.linspace(10, 1, 10)), second)
    assert merged.take(5)[0].tolist() == [0, 107, 1, 2, 3]
    assert len(second._order) == 1  # the page's floor is 6.0: only post 107 reaches it
    assert merged.take(12)[0].tolist() == [0, 107, 1, 2, 3, 4, 5, 6, 7, 8, 9, 400]
    fresh = Merged(fixed(list(range(10)), np.linspace(10, 1, 10)), Scored(np.arange(100, 1100), scores))
    assert check_prefixes(fresh)[:13] == [0, 107, 1, 2, 3, 4, 5, 6, 7, 8, 9, 400, 100]


def test_merged_agrees_with_a_merge_one_by_one_whether_or_not_the_first_is_sorted():
    rng = np.random.default_rng(3)
    for _ in range(50):
        first_scores = np.sort(rng.integers(0, 6, 12).astype(np.float32))[::-1].copy()
        if rng.random() < 0.5:  # a near-tie out of order, as at the seam of a continued head
            first_scores[3], first_scores[4] = first_scores[4], first_scores[3] + 0.5
        second = Scored(np.arange(100, 108), rng.integers(0, 6, 8).astype(np.float32))
        merged = Merged(fixed(list(range(12)), first_scores), second)
        a, b = first_scores.tolist(), second.take(8)[1].tolist()
        b_ids = second.take(8)[0].tolist()
        expected, i, j = [], 0, 0
        while i < len(a) or j < len(b):
            if j >= len(b) or (i < len(a) and a[i] >= b[j]):
                expected.append(i)
                i += 1
            else:
                expected.append(b_ids[j])
                j += 1
        assert check_prefixes(merged) == expected


@pytest.mark.parametrize("seed", range(20))
def test_merged_takes_a_continued_head_only_as_deep_as_the_merge_needs(seed):
    """A page the precomputed head and the fresh posts fill costs no continuation; every page is the whole's prefix."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.integers(0, 30, 40).astype(np.float32))[::-1].copy()
    if seed % 2:  # the continuation orders a near-tie at the seam differently, as a recomputed ranking may
        scores[10], scores[11] = scores[11], scores[10] + 0.5
    head = (np.arange(10), scores[:10])
    calls = []

    def rest(depth):
        calls.append(depth)
        return np.arange(40)[:depth], scores[:depth]

    fresh_scores = rng.integers(0, 30, 30).astype(np.float32)

    def merged():
        extended = Extended(head, rest, 40, 40, lambda ids: (ids >= 0) & (ids < 40))
        return Merged(extended, Scored(np.arange(100, 130), fresh_scores))

    whole = Merged(Fixed(np.arange(40), scores), Scored(np.arange(100, 130), fresh_scores)).take(70)
    for n in range(72):
        calls.clear()
        ids, got = merged().take(n)
        assert ids.tolist() == whole[0][:n].tolist() and got.tolist() == whole[1][:n].tolist()
        head_used = sum(1 for i in whole[0][:n].tolist() if i < 10)
        # The continuation is ranked only when the page's merge got through the whole head.
        assert bool(calls) == (n > 10 and head_used == 10)


class CountingBase:
    """A ranking that counts its membership passes."""

    def __init__(self, ranked):
        self._ranked, self.size, self.held, self.size_floor = ranked, ranked.size, ranked.held, ranked.size_floor
        self.lookups = 0

    def take(self, n):
        return self._ranked.take(n)

    def contains(self, feed_ids):
        self.lookups += 1
        return self._ranked.contains(feed_ids)


def test_filtered_looks_nothing_up_until_its_exact_size_is_asked_for():
    base = CountingBase(fixed(list(range(50))))
    filtered = Filtered(base, {3, 7, 999}, [1, 998])
    assert filtered.size_floor == 47  # 50 less every removed id, whether or not the base holds it
    assert filtered.take(5)[0].tolist() == [0, 2, 4, 5, 6] and base.lookups == 0
    assert filtered.size == 48 and base.lookups == 1  # 999 is not in the base
    assert filtered.size == 48 and base.lookups == 1
