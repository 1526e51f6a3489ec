"""The feed as a pipeline of named stages: candidates → fresh posts → exclusions → page.

:class:`app.feed.service.FeedService` resolves a request into a :class:`Feed` (the :class:`Scope`: which
model version, live generation and cutoff the page is pinned to, and everything read for it), then each
stage takes the feed and returns the next one, and :class:`Page` cuts the response out of the result:

- :class:`Candidates` ranks what the model knows for the user: its precomputed list continued by the
  model's ranking (``personalized``), a ranking from its features for a user the model does not know yet
  (``features``), or the popularity list (``popular``);
- :class:`FreshPosts` merges the live pool's posts by their score for the user, and puts those it cannot
  score after the model's ranking, newest first;
- :class:`Exclusions` removes what the user saw and demotes (or hides) what it was shown, as of the cutoff.

A stage is a callable ``Feed -> Feed`` that replaces :attr:`Feed.ranking` (a lazy :mod:`app.feed.ranked`
ranking) and what it describes; a new feature (the community and tag filter of :mod:`app.feed.filters`,
similar posts in :mod:`app.feed.similar`, an experiment's variant) is a new stage in the service's tuple,
not a new branch here. Stages do no I/O: what they need
is read into the scope first, in one Redis round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.feed.live import LivePool
from app.feed.lru import Lru
from app.feed.pin import UNPINNED, Pin
from app.feed.ranked import EMPTY, Chained, Extended, Filtered, Fixed, Merged, Ranked, isin
from app.feed.version_view import ItemEntry, VersionView
from app.list_memo import RankedList
from app.model_holder import LoadedModel


@dataclass(frozen=True)
class FeedRequest:
    """What a client asked for: a page of a user's feed, maybe pinned, maybe without some posts."""

    user_id: str
    limit: int
    offset: int
    pin: Pin = UNPINNED
    exclude: frozenset[str] = frozenset()  # posts the client already shows: skipped, positions kept
    communities: frozenset[str] = frozenset()  # only posts of these communities (none: any), see app.feed.filters
    tags: frozenset[str] = frozenset()  # only posts carrying one of these tags (none: any)
    similar_to: str | None = None  # a page of the posts similar to this one (see app.feed.similar)


@dataclass(frozen=True, eq=False)
class Scope:
    """What a page is computed against: its resolved pin and everything read for it."""

    loaded: LoadedModel  # the model of pin.version
    user: int | None  # the user's row in that model (None: it does not know the user), looked up once per page
    view: VersionView
    pin: Pin  # fully resolved: the response's token
    pool: LivePool  # the fresh posts of pin.generation unknown to the model
    cached_list: RankedList | None  # the user's precomputed list, if the model knows the user and Redis has it
    live_user: Mapping[str, Any] | None  # role and follows of a user the model does not know, at pin.generation
    seen: Mapping[str, int]  # post id -> arrival (us), arrived by pin.cutoff
    shown: Mapping[str, int]
    redis_answered: bool
    version_fallback: bool  # the request's pin could not be honoured: this is a fresh, unpinned scroll

    def entry(self, feed_id: int) -> ItemEntry:
        offset = self.pool.offset
        return self.view.entry(feed_id) if feed_id < offset else self.pool.entries[feed_id - offset]

    def community(self, feed_id: int) -> str:
        offset = self.pool.offset
        if feed_id < offset:
            return self.loaded.model.item_community_ids[feed_id]
        return self.pool.labels[feed_id - offset][1]

    def feed_id(self, post_id: str) -> int | None:
        index = self.view.item_index.get(post_id)
        return index if index is not None else self.pool.feed_id(post_id)


@dataclass(frozen=True, eq=False)
class Feed:
    """A feed on its way through the stages."""

    request: FeedRequest
    scope: Scope
    ranking: Ranked = EMPTY
    strategy: str = "popular"
    source: str = "model"
    # The user's representation (embedding, bias) when the model can score posts for it, else None.
    vector: tuple[np.ndarray, float] | None = field(default=None)

    def ranked(self, ranking: Ranked) -> Feed:
        """This feed with ``ranking`` instead of its own, as a stage returns it.

        Stages make their feeds with the constructor, not ``dataclasses.replace``: on a page that misses every
        memory of the worker, ``replace`` (a loop over the fields, then the constructor) cost more than the
        constructor alone (docs/PERFORMANCE.md, "The plain feed at a million users").
        """
        return Feed(self.request, self.scope, ranking, self.strategy, self.source, self.vector)


class Candidates:
    """What the model ranks for the user, to ``depth`` entries (enough for every later stage's drops)."""

    def __init__(self, top_k: int, max_feed_posts: int, rankings: Lru):
        self._top_k = top_k
        self._max_feed_posts = max_feed_posts
        self._rankings = rankings  # (kind, version, who, depth) -> the model's ranking, computed once

    def __call__(self, feed: Feed) -> Feed:
        scope = feed.scope
        model = scope.loaded.model
        depth = min(model.num_items, self._max_feed_posts + len(scope.seen) + len(scope.shown))
        user = scope.user
        if user is not None:
            return self._personalized(feed, user, depth)
        features = scope.live_user
        vector = model.user_representation(features.get("role"), features["follows"]) if features else None
        if vector is not None:
            embedding, bias = vector
            who = (features.get("role"), tuple(features["follows"]))  # the ranking depends on nothing else

            def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
                key = ("features", scope.loaded.version, who, k)
                return self._rankings.get_or_make(key, lambda: model.rank_representation(embedding, k, bias=bias))

            ranking = Extended((np.zeros(0), np.zeros(0)), rank, depth, model.num_items, _below(model.num_items))
            return Feed(feed.request, scope, ranking, strategy="features", source="model", vector=vector)
        source = "cache" if scope.redis_answered else "model"
        ranking = Fixed(model.popular_items, model.popular_scores, _below(model.num_items))
        return Feed(feed.request, scope, ranking, strategy="popular", source=source)

    def _personalized(self, feed: Feed, user: int, depth: int) -> Feed:
        model = feed.scope.loaded.model

        def compute(k: int) -> tuple[np.ndarray, np.ndarray]:  # only for a page past the list, or without one
            items, scores = model.top_k(np.array([user], dtype=np.int64), max(k, 1))
            valid = items[0] >= 0
            return items[0][valid], scores[0][valid]

        def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
            key = ("user", feed.scope.loaded.version, user, k)
            return self._rankings.get_or_make(key, lambda: compute(k))

        cached = feed.scope.cached_list  # valid post indices only (the service checked them)
        if cached is not None:
            head, source = cached, "cache"
        else:
            head, source = compute(self._top_k), "model"
        excluded = model.excluded_items(user)

        def universe(feed_ids: np.ndarray) -> np.ndarray:
            inside = (feed_ids >= 0) & (feed_ids < model.num_items)
            return inside & ~isin(feed_ids, excluded) if len(excluded) else inside

        size = model.num_items - len(excluded)
        ranking = Extended(head, rank, depth, size, universe)
        vector = (model.user_embeddings[user], float(model.user_biases[user]))
        return Feed(feed.request, feed.scope, ranking, strategy="personalized", source=source, vector=vector)


def _below(limit: int):
    return lambda feed_ids: (feed_ids >= 0) & (feed_ids < limit)


class FreshPosts:
    """The live pool merged in: scored posts by score among the model's, the others after it, newest first."""

    def __call__(self, feed: Feed) -> Feed:
        pool = feed.scope.pool
        if not pool.size:
            return feed
        if feed.vector is None:
            return feed.ranked(Chained(feed.ranking, pool.unscored(everything=True)))
        merged = Merged(feed.ranking, pool.scored(*feed.vector))
        return feed.ranked(Chained(merged, pool.unscored(everything=False)))


class Exclusions:
    """Posts seen by the cutoff removed; posts shown demoted to the end, hidden or left, per ``IMPRESSIONS``."""

    def __init__(self, impressions: str):
        self._impressions = impressions

    def __call__(self, feed: Feed) -> Feed:
        scope = feed.scope
        removed = _feed_ids(scope, scope.seen)
        shown = _feed_ids(scope, scope.shown) if self._impressions != "ignore" else []
        if self._impressions == "hide":
            removed, shown = removed + shown, []
        if not removed and not shown:
            return feed
        return feed.ranked(Filtered(feed.ranking, set(removed), shown))


def _feed_ids(scope: Scope, posts: Mapping[str, int]) -> list[int]:
    return [i for i in map(scope.feed_id, posts) if i is not None]


class Rendered:
    """The response entries of the positions a kept feed's pages showed: a page shown again renders nothing.

    ``entries[i]`` is position ``i + 1``'s entry, or None where no page reached it yet. A page's entries
    replace the list with a copy (a thread reading meanwhile keeps a consistent list); the response dicts
    are shared by the pages that show them and never modified.
    """

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[dict[str, Any] | None] = []


class Page:
    """The response: the feed (at most ``MAX_FEED_POSTS``) from ``offset``, ``limit`` posts, client exclusions skipped.

    Positions are those of the whole feed, so a post skipped because the client excludes it still takes
    its position: ``next_offset`` continues exactly where this page stopped whatever ``exclude`` said.
    """

    def __init__(self, max_feed_posts: int):
        self._max_feed_posts = max_feed_posts

    def __call__(self, feed: Feed, rendered: Rendered) -> dict[str, Any]:
        request, scope, ranking = feed.request, feed.scope, feed.ranking
        cap = self._max_feed_posts
        total = cap if ranking.size_floor >= cap else min(cap, ranking.size)
        start = min(request.offset, total)
        want = min(total, request.offset + request.limit + len(request.exclude))
        page = rendered.entries[start:want]
        if len(page) < want - start or None in page:
            page = _render(feed, rendered, start, want)
        if request.exclude:  # skip them, keeping positions: stop after the page's last position
            shown = len(page)
            page = [r for r in page if r["post_id"] not in request.exclude][: request.limit]
            stop = page[-1]["rank"] if len(page) == request.limit else start + shown
        else:
            stop = start + len(page)
        has_more = stop < total
        return {
            "user_id": request.user_id,
            "model_version": scope.loaded.version,
            "model_family": scope.loaded.family,
            "token": scope.pin.token,
            "strategy": feed.strategy,
            "source": feed.source,
            "version_fallback": scope.version_fallback,
            "recommendations": page,
            "pagination": {
                "total": total,
                "limit": request.limit,
                "offset": request.offset,
                "has_more": has_more,
                "next_offset": stop if has_more else None,
            },
        }


def _render(feed: Feed, rendered: Rendered, start: int, want: int) -> list[dict[str, Any]]:
    """The response entries of positions ``start + 1 .. want`` (fewer if the feed is shorter), kept in ``rendered``."""
    ids, scores = feed.ranking.take(want)
    # Scores to 6 decimals in one vectorised call: Python's round() per entry was half of a page's rendering.
    ids, scores = ids[start:].tolist(), np.round(scores[start:].astype(np.float64), 6).tolist()
    scope = feed.scope
    offset = scope.pool.offset
    # Entries without fresh posts (the most) are looked up in the version's list directly.
    entry = scope.view.entry if not ids or max(ids) < offset else scope.entry
    page = [
        {"post_id": post_id, "score": score, "rank": rank, "fresh": feed_id >= offset, "metadata": meta}
        for rank, feed_id, (post_id, meta), score in zip(
            range(start + 1, start + len(ids) + 1), ids, map(entry, ids), scores, strict=True
        )
    ]
    entries = rendered.entries[:]
    entries.extend([None] * (start + len(page) - len(entries)))
    entries[start : start + len(page)] = page
    rendered.entries = entries
    return page
