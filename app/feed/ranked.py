"""Rankings that are computed only as far as a page needs: the building blocks of the feed's stages.

A feed can run to ``MAX_FEED_POSTS`` posts, but most pages are near its top: ranking every post the model
knows for each of them would cost a full scoring. A :class:`Ranked` gives its first ``n`` entries on
demand (:meth:`Ranked.take`) and knows its length and (vectorised) membership without computing the order,
so a page's ``total`` is exact while only the head is ever sorted.

Entries are feed ids (``int64``): ``0 .. num_items - 1`` are the model's item indices, ``num_items + j``
the ``j``-th post of the live pool (see :class:`app.feed.live.LivePool`). Every ranking is deterministic
(ties broken by position, then id) and prefix-consistent: ``take(m)[:n] == take(n)`` for ``m >= n``, so
the pages of a pinned scroll fit together whichever pages were asked for.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np

Entries = tuple[np.ndarray, np.ndarray]  # (feed ids int64, scores float32), best first

_NO_IDS = np.zeros(0, dtype=np.int64)


def isin(ids: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin(ids, of)``; for the few ids a page checks, a set of Python ints is cheaper on a page (numpy's
    machinery, cold between pages, cost more than the comparisons: docs/PERFORMANCE.md, "The plain feed at a
    million users")."""
    if not len(ids) or not len(of):
        return np.zeros(len(ids), dtype=bool)
    if len(ids) * len(of) > 65536:
        return np.isin(ids, of)
    members = set(of.tolist())
    return np.fromiter([i in members for i in ids.tolist()], dtype=bool, count=len(ids))


_NO_SCORES = np.zeros(0, dtype=np.float32)


class Ranked(Protocol):
    """A ranked sequence of distinct feed ids."""

    size: int  # how many entries the whole sequence has
    # How many leading entries take() gives without computing more: a hint, never a change in the result.
    # Merged takes its first ranking only this deep while the page allows (a precomputed head, not its
    # continuation); a combined ranking says its size (it takes as far as asked).
    held: int
    # A lower bound of size known without a membership pass: a page whose total is capped below it
    # (MAX_FEED_POSTS) needs no exact size.
    size_floor: int

    def take(self, n: int) -> Entries:
        """The first ``min(n, size)`` entries."""

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        """Which of ``feed_ids`` (int64) are in the sequence, as a bool array."""


class Sorted(Ranked, Protocol):
    """A ranking sorted by score, best first: what :class:`Merged` merges into another."""

    def take_from(self, n: int, floor: float) -> Entries:
        """The first ``min(n, size)`` entries without those scoring below ``floor`` (a prefix: they are sorted)."""


def _entries(ids: np.ndarray, scores: np.ndarray) -> Entries:
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


Membership = Callable[[np.ndarray], np.ndarray]  # feed ids -> bool array


class Fixed:
    """A ranking held in full (the popularity list, the live pool's posts).

    ``universe`` answers membership faster than a lookup in the ids when the caller knows a rule for it.
    """

    def __init__(self, ids: np.ndarray, scores: np.ndarray, universe: Membership | None = None):
        self._ids, self._scores = _entries(ids, scores)
        self.size = self.held = self.size_floor = len(self._ids)
        self._universe = universe

    def take(self, n: int) -> Entries:
        return self._ids[:n], self._scores[:n]

    def take_from(self, n: int, floor: float) -> Entries:
        """As :meth:`Sorted.take_from`, for a Fixed ranking sorted by score."""
        ids, scores = self.take(n)
        above = int(np.count_nonzero(scores >= floor))
        return ids[:above], scores[:above]

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._universe(feed_ids) if self._universe is not None else isin(feed_ids, self._ids)


class Scored:
    """Entries ranked by score, best first (ties: smaller id first); only as many sorted as are taken."""

    def __init__(self, ids: np.ndarray, scores: np.ndarray, universe: Membership | None = None):
        self._ids, self._scores = _entries(ids, scores)
        self.size = self.held = self.size_floor = len(self._ids)
        self._universe = universe
        self._order = np.zeros(0, dtype=np.int64)  # a sorted prefix of the whole order

    def take(self, n: int) -> Entries:
        n = min(n, self.size)
        if n > len(self._order):
            candidates = np.arange(self.size)
            if n < self.size:  # the n best, and every entry tied with the n-th (ties are cut by id below)
                threshold = np.partition(self._scores, self.size - n)[self.size - n]
                candidates = np.flatnonzero(self._scores >= threshold)
            order = candidates[np.lexsort((self._ids[candidates], -self._scores[candidates]))]
            self._order = order[:n]
        picks = self._order[:n]
        return self._ids[picks], self._scores[picks]

    def take_from(self, n: int, floor: float) -> Entries:
        """As :meth:`Sorted.take_from`. The entries scoring at least ``floor`` are the order's first ones; when
        fewer than ``n``, only they are sorted (a merge into a precomputed list lets few fresh posts through)."""
        above = np.flatnonzero(self._scores >= floor)
        if len(self._order) < len(above) < min(n, self.size):
            self._order = above[np.lexsort((self._ids[above], -self._scores[above]))]
        return self.take(min(n, len(above)))

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._universe(feed_ids) if self._universe is not None else isin(feed_ids, self._ids)


EMPTY = Fixed(_NO_IDS, _NO_SCORES)


class Extended:
    """A known head (a precomputed list) continued by a ranking computed only when a page goes past it.

    ``rest(k)`` ranks the whole universe (``size`` entries, vectorised membership ``universe``) to ``k``
    entries (the model's ``top_k``), and must be prefix-consistent: ``rest(m)[:k] == rest(k)`` for ``m >= k``
    (ties broken by index, :func:`ml.model.best_first`). It is asked for twice what the page needs, up to
    ``depth`` (the deepest page: ``MAX_FEED_POSTS`` plus what later stages may drop), and deeper only when a
    later page goes further: most pages past the head need a few dozen more entries, not ``depth``. The
    head's entries are dropped from it, so the head stays a prefix even where the two rankings order
    near-ties differently, and nothing appears twice.
    """

    def __init__(
        self,
        head: Entries,
        rest: Callable[[int], Entries],
        depth: int,
        size: int,
        universe: Membership,
    ):
        self._head_ids, self._head_scores = _entries(*head)
        self._rest = rest
        self._depth = depth
        self.size = self.size_floor = size
        self._universe = universe
        # What take() gives, and how deep rest was asked for to make it (0: the head alone). One attribute,
        # replaced whole: kept feeds are shared by a worker's threads, which may take from one at once.
        self._full: tuple[np.ndarray, np.ndarray, int] = (self._head_ids, self._head_scores, 0)

    @property
    def held(self) -> int:
        return len(self._full[0])

    def take(self, n: int) -> Entries:
        full = self._full
        if len(full[0]) < n and full[2] < self._depth:
            ranked = min(self._depth, 2 * n)
            ids, scores = _entries(*self._rest(ranked))
            if len(ids) < ranked:  # the universe ran out: nothing deeper to rank
                ranked = self._depth
            beyond = ~isin(ids, self._head_ids)
            full = (
                np.concatenate([self._head_ids, ids[beyond]]),
                np.concatenate([self._head_scores, scores[beyond]]),
                ranked,
            )
            if ranked > self._full[2]:  # another thread may have ranked deeper meanwhile
                self._full = full
        return full[0][:n], full[1][:n]

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._universe(feed_ids)


class _Remembered:
    """A combined ranking that keeps its longest result, so the next pages of a kept feed only slice it."""

    size: int
    size_floor: int
    _taken: Entries | None = None
    _complete = False  # the whole sequence has been taken

    @property
    def held(self) -> int:
        return self.size_floor  # it takes as far as asked

    def take(self, n: int) -> Entries:
        taken = self._taken
        if taken is None or (n > len(taken[0]) and not self._complete):
            taken = self._take(n)
            self._taken, self._complete = taken, len(taken[0]) < n
        return taken[0][:n], taken[1][:n]

    def _take(self, n: int) -> Entries:
        raise NotImplementedError


class Merged(_Remembered):
    """Two disjoint rankings merged by score, each keeping its own order; ties go to the first.

    The second is sorted by score (the first need not be: a precomputed head continued by the model may
    order near-ties differently at the seam), and only its entries that can reach the page are taken. The
    first is taken only as deep as it holds (:attr:`Ranked.held`: a precomputed list, not its continuation)
    unless the merge gets through all of it.
    """

    def __init__(self, first: Ranked, second: Sorted):
        self._first, self._second = first, second
        self.size = first.size + second.size
        self.size_floor = first.size_floor + second.size_floor

    def _take(self, n: int) -> Entries:
        held = min(n, self._first.held)
        ids, scores, from_first = self._merged(*self._first.take(held), n)
        if from_first == held < min(n, self._first.size):  # its next entry might come before some of the second's
            ids, scores, _ = self._merged(*self._first.take(n), n)
        return ids, scores

    def _merged(self, a_ids: np.ndarray, a_scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        a = a_scores.tolist()  # the floor below and _merge's order check take Python floats
        if 0 < n <= len(a):
            # The walk takes all of a's first n before any entry of the second scoring below every one of them.
            b_ids, b_scores = self._second.take_from(n, min(a[:n]))
        else:
            b_ids, b_scores = self._second.take(n)
        return _merge(a_ids, a_scores, a, b_ids, b_scores, n)

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._first.contains(feed_ids) | self._second.contains(feed_ids)


def _merge(
    a_ids: np.ndarray, a_scores: np.ndarray, a: list[float], b_ids: np.ndarray, b_scores: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The first ``n`` of ``a`` and ``b`` merged by score (ties to ``a``), and how many of them come from ``a``.

    ``a`` is ``a_scores`` as Python floats: its order is checked with Python's comparisons, which cost a page
    less than numpy's reduction machinery (docs/PERFORMANCE.md, "The plain feed at a million users"). The result
    is that of walking both from their start and taking the better each time, so it does not depend on how much
    of ``a`` is given beyond what the walk used.
    """
    if not len(b_ids):
        return a_ids[:n], a_scores[:n], min(n, len(a_ids))
    if not len(a_ids):
        return b_ids[:n], b_scores[:n], 0
    if all(map(operator.ge, a, a[1:])):
        if len(a_ids) >= n and b_scores[0] < a_scores[n - 1]:
            return a_ids[:n], a_scores[:n], n  # nothing of ``b`` reaches the first n
        # Both sorted: a stable sort by score is the walk (each keeps its order, a's entries first on ties).
        ids, scores = np.concatenate([a_ids, b_ids]), np.concatenate([a_scores, b_scores])
        picks = np.argsort(-scores, kind="stable")[:n]
        return ids[picks], scores[picks], int(np.count_nonzero(picks < len(a_ids)))
    b = b_scores.tolist()  # near-ties out of order in ``a`` (a head continued): merge one by one
    order, i, j = [], 0, 0
    while len(order) < n and (i < len(a) or j < len(b)):
        if j >= len(b) or (i < len(a) and a[i] >= b[j]):
            order.append(i)
            i += 1
        else:
            order.append(len(a) + j)
            j += 1
    picks = np.asarray(order, dtype=np.int64)
    return np.concatenate([a_ids, b_ids])[picks], np.concatenate([a_scores, b_scores])[picks], i


class Chained(_Remembered):
    """One ranking, then another (disjoint) once the first runs out."""

    def __init__(self, first: Ranked, second: Ranked):
        self._first, self._second = first, second
        self.size = first.size + second.size
        self.size_floor = first.size_floor + second.size_floor

    def _take(self, n: int) -> Entries:
        ids, scores = self._first.take(n)
        if len(ids) >= n or not self._second.size:
            return ids, scores
        more_ids, more_scores = self._second.take(n - len(ids))
        return np.concatenate([ids, more_ids]), np.concatenate([scores, more_scores])

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._first.contains(feed_ids) | self._second.contains(feed_ids)


class Filtered(_Remembered):
    """A ranking without ``removed`` ids and with ``demoted`` ids moved after every other entry.

    Demoted entries keep their relative order. Ids that are not in the ranking change nothing, so none
    is looked up in it until the exact :attr:`size` is asked for (a page capped below :attr:`size_floor`
    never asks).
    """

    def __init__(self, base: Ranked, removed: Collection[int], demoted: Sequence[int]):
        self._base = base
        removed = set(removed)
        demoted = [i for i in demoted if i not in removed]  # a page's few: one array made of them all
        self._dropped = np.array([*removed, *demoted], dtype=np.int64)
        self._removed, self._demoted = self._dropped[: len(removed)], self._dropped[len(removed) :]
        self.size_floor = max(0, base.size_floor - len(self._removed))
        self._size: int | None = None

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._base.size - int(self._base.contains(self._removed).sum())
        return self._size

    def _take(self, n: int) -> Entries:
        if not len(self._dropped):
            return self._base.take(n)
        want = n + len(self._dropped)
        ids, scores = self._base.take(want)
        kept = ~isin(ids, self._dropped)
        out_ids, out_scores = ids[kept][:n], scores[kept][:n]
        if len(out_ids) < n and len(ids) < want and len(self._demoted):  # the base ran out: the demoted follow
            last = isin(ids, self._demoted)
            out_ids = np.concatenate([out_ids, ids[last]])[:n]
            out_scores = np.concatenate([out_scores, scores[last]])[:n]
        return out_ids, out_scores

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._base.contains(feed_ids) & ~isin(feed_ids, self._removed)
