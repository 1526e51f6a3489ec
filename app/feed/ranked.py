"""Rankings that are computed only as far as a page needs: the building blocks of the feed's stages.

A feed can run to ``MAX_FEED_POSTS`` posts, but most pages are near its top: ranking every post the model
knows for each of them would cost a full scoring. A :class:`Ranked` gives its first ``n`` entries on
demand (:meth:`Ranked.take`) and knows its length and membership without computing the order, so a
page's ``total`` is exact while only the head is ever sorted.

Entries are feed ids (``int64``): ``0 .. num_items - 1`` are the model's item indices, ``num_items + j``
the ``j``-th post of the live pool (see :class:`app.feed.live.LivePool`). Every ranking is deterministic
(ties broken by position, then id) and prefix-consistent: ``take(m)[:n] == take(n)`` for ``m >= n``, so
the pages of a pinned scroll fit together whichever pages were asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

import numpy as np

Entries = tuple[np.ndarray, np.ndarray]  # (feed ids int64, scores float32), best first

_NO_IDS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)


class Ranked(Protocol):
    """A ranked sequence of distinct feed ids."""

    size: int  # how many entries the whole sequence has

    def take(self, n: int) -> Entries:
        """The first ``min(n, size)`` entries."""

    def __contains__(self, feed_id: int) -> bool: ...


def _entries(ids: np.ndarray, scores: np.ndarray) -> Entries:
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


class Fixed:
    """A ranking held in full (the popularity list, the live pool's posts)."""

    def __init__(self, ids: np.ndarray, scores: np.ndarray):
        self._ids, self._scores = _entries(ids, scores)
        self.size = len(self._ids)
        self._members: frozenset[int] | None = None

    def take(self, n: int) -> Entries:
        return self._ids[:n], self._scores[:n]

    def __contains__(self, feed_id: int) -> bool:
        if self._members is None:
            self._members = frozenset(self._ids.tolist())
        return feed_id in self._members


EMPTY = Fixed(_NO_IDS, _NO_SCORES)


class Extended:
    """A known head (a precomputed list) continued by a ranking computed only when a page goes past it.

    ``rest(depth)`` ranks the whole universe (``size`` entries, membership ``universe``) to ``depth``
    entries (the model's ``top_k``); the head's entries are dropped from it, so the head stays a prefix
    even where the two rankings order near-ties differently, and nothing appears twice. ``depth`` is
    fixed per ranking, not per page, so every page of a scroll sees the same continuation; it must cover
    the deepest page (``MAX_FEED_POSTS`` plus what later stages may drop).
    """

    def __init__(
        self,
        head: Entries,
        rest: Callable[[int], Entries],
        depth: int,
        size: int,
        universe: Callable[[int], bool],
    ):
        self._head_ids, self._head_scores = _entries(*head)
        self._rest = rest
        self._depth = depth
        self.size = size
        self._universe = universe
        self._full: Entries | None = None

    def take(self, n: int) -> Entries:
        if n <= len(self._head_ids):
            return self._head_ids[:n], self._head_scores[:n]
        if self._full is None:
            ids, scores = _entries(*self._rest(self._depth))
            beyond = ~np.isin(ids, self._head_ids)
            self._full = (
                np.concatenate([self._head_ids, ids[beyond]]),
                np.concatenate([self._head_scores, scores[beyond]]),
            )
        return self._full[0][:n], self._full[1][:n]

    def __contains__(self, feed_id: int) -> bool:
        return self._universe(feed_id)


class Merged:
    """Two disjoint rankings merged by score, each keeping its own order; ties go to the first."""

    def __init__(self, first: Ranked, second: Ranked):
        self._first, self._second = first, second
        self.size = first.size + second.size

    def take(self, n: int) -> Entries:
        a_ids, a_scores = self._first.take(n)
        b_ids, b_scores = self._second.take(n)
        if not len(b_ids):
            return a_ids, a_scores
        if not len(a_ids):
            return b_ids, b_scores
        a, b = a_scores.tolist(), b_scores.tolist()
        order, i, j = [], 0, 0
        while len(order) < n and (i < len(a) or j < len(b)):
            if j >= len(b) or (i < len(a) and a[i] >= b[j]):
                order.append(i)
                i += 1
            else:
                order.append(len(a) + j)
                j += 1
        picks = np.asarray(order, dtype=np.int64)
        return np.concatenate([a_ids, b_ids])[picks], np.concatenate([a_scores, b_scores])[picks]

    def __contains__(self, feed_id: int) -> bool:
        return feed_id in self._first or feed_id in self._second


class Chained:
    """One ranking, then another (disjoint) once the first runs out."""

    def __init__(self, first: Ranked, second: Ranked):
        self._first, self._second = first, second
        self.size = first.size + second.size

    def take(self, n: int) -> Entries:
        ids, scores = self._first.take(n)
        if len(ids) >= n or not self._second.size:
            return ids, scores
        more_ids, more_scores = self._second.take(n - len(ids))
        return np.concatenate([ids, more_ids]), np.concatenate([scores, more_scores])

    def __contains__(self, feed_id: int) -> bool:
        return feed_id in self._first or feed_id in self._second


class Filtered:
    """A ranking without ``removed`` ids and with ``demoted`` ids moved after every other entry.

    Demoted entries keep their relative order. Ids that are not in the ranking change nothing.
    """

    def __init__(self, base: Ranked, removed: Collection[int], demoted: Collection[int]):
        self._base = base
        self._removed = {i for i in removed if i in base}
        self._demoted = np.fromiter((i for i in demoted if i in base and i not in self._removed), dtype=np.int64)
        self._dropped = np.concatenate([np.fromiter(self._removed, dtype=np.int64), self._demoted])
        self.size = base.size - len(self._removed)

    def take(self, n: int) -> Entries:
        if not len(self._dropped):
            return self._base.take(n)
        want = n + len(self._dropped)
        ids, scores = self._base.take(want)
        kept = ~np.isin(ids, self._dropped)
        out_ids, out_scores = ids[kept][:n], scores[kept][:n]
        if len(out_ids) < n and len(ids) < want and len(self._demoted):  # the base ran out: the demoted follow
            last = np.isin(ids, self._demoted)
            out_ids = np.concatenate([out_ids, ids[last]])[:n]
            out_scores = np.concatenate([out_scores, scores[last]])[:n]
        return out_ids, out_scores

    def __contains__(self, feed_id: int) -> bool:
        return feed_id in self._base and feed_id not in self._removed
