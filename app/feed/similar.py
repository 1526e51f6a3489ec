"""Posts similar to one post (``GET /posts/<post_id>/similar``): the stages that replace the user's candidates.

:class:`FeedService.similar <app.feed.service.FeedService.similar>` resolves the page like a feed's (same
pin, same live pool, same exclusions when a user is named) and runs these stages instead of the feed's:

- :class:`Neighbours`: every post with a direction, by the cosine of its representation with the post's
  (:mod:`ml.similar`): the model's items through the version's normalised embeddings (the first
  :data:`RERANK_DEPTH` of a model post read from the version's precomputed table, or computed, through its
  cell index when the catalogue is large, when the version has none or the post is fresh; the rest by an
  exact scan if a page goes past them), the live pool's posts through their feature-built representations
  (scanned: the pool is small), so a post written a minute ago has neighbours and is one. A post without a
  direction (a fresh post none of whose tags or community the model knows) gets the popular posts of its
  community instead (``strategy: community_popular``);
- :class:`ForUser`: with ``user_id=``, the best :data:`RERANK_DEPTH` neighbours re-ordered by the model's
  score for that user, and the posts it interacted with (the model's exclusions) dropped; the live seen and
  shown posts then go through the feed's own :class:`app.feed.stages.Exclusions`.

The post itself never appears. Scores are cosines in [-1, 1] (popularity for ``community_popular``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from app.feed.filters import CatalogueIndex, post_matches
from app.feed.lru import Lru
from app.feed.ranked import Chained, Entries, Extended, Filtered, Fixed, Merged, Ranked, Scored
from app.feed.stages import Feed, Scope
from app.model_holder import LoadedModel
from ml.similar import NEIGHBOURS, UnitItems, top

# The reader of a page without ``user_id``: a user id no client can send (``/`` is refused), so the page is
# resolved like a feed's while it has no exclusions and no features.
ANONYMOUS = "/"
# How many of the best neighbours ``user_id=`` re-orders for the user: past them, similarity alone. They are
# the head a page starts with, which the training run precomputes per post (ml.similar.NEIGHBOURS).
RERANK_DEPTH = NEIGHBOURS


class UnknownPost(LookupError):
    """The post is neither in the model nor in the live pool the page is pinned to."""


class Neighbours:
    """The posts by similarity to ``request.similar_to``, or its community's popular posts when it has no direction."""

    def __init__(self, max_feed_posts: int, units: Callable[[LoadedModel], UnitItems], catalogues: Lru):
        self._max_feed_posts = max_feed_posts
        self._units = units  # a version's UnitItems, made once (FeedService.unit_items)
        self._catalogues = catalogues  # version -> CatalogueIndex

    def __call__(self, feed: Feed) -> Feed:
        scope = feed.scope
        model, offset, pool = scope.loaded.model, scope.pool.offset, scope.pool
        post = scope.feed_id(feed.request.similar_to)
        if post is None:
            raise UnknownPost(feed.request.similar_to)
        units = self._units(scope.loaded)
        if post < offset:
            vector = units.unit[post] if units.usable[post] else None
        else:
            row = np.searchsorted(pool.scorable, post - offset)
            found = row < len(pool.scorable) and pool.scorable[row] == post - offset
            vector = pool.unit_embeddings[row] if found else None
        if vector is None or (post >= offset and not vector.any()):  # a model post with a direction has one
            return self._community_popular(feed, post)
        # Deep enough for ForUser's re-ordering and every later drop: the live exclusions, and the model's of
        # a user it knows.
        reader = feed.request.user_id
        user = scope.user if reader != ANONYMOUS else None
        excluded = len(model.excluded_items(user)) if user is not None else 0
        depth = max(self._max_feed_posts, RERANK_DEPTH) + len(scope.seen) + len(scope.shown) + excluded
        usable = units.usable

        def rank(k: int) -> tuple[np.ndarray, np.ndarray]:  # exact: a page past the head
            cosines = units.cosines(vector)
            if post < offset:
                cosines[post] = -np.inf
            best = top(cosines, k)
            return best.astype(np.int64), cosines[best]

        def trained(feed_ids: np.ndarray) -> np.ndarray:
            inside = (feed_ids >= 0) & (feed_ids < offset) & (feed_ids != post)
            return inside & usable[np.where(inside, feed_ids, 0)]

        size = (len(usable) if units.all_usable else int(usable.sum())) - int(post < offset)
        # Most pages are near the top: the first RERANK_DEPTH now (a model post's from the version's table, which
        # holds what nearest computes: through the version's cell index in a large catalogue), the rest (an exact
        # scan) only when a page goes past them; Extended keeps the head a prefix. The lists of a kept feed hold
        # no per-item array, only these entries.
        if post < offset and units.table is not None:
            head = units.table.row(post)
        else:
            head = units.nearest(vector, min(depth, RERANK_DEPTH), skip=post if post < offset else -1)
        ranking: Ranked = Extended(head, rank, depth, size, trained)
        if len(pool.scorable):
            pool_ids = pool.scorable_ids
            pool_cosines = pool.unit_embeddings @ vector
            if post >= offset:
                others = pool_ids != post
                pool_ids, pool_cosines = pool_ids[others], pool_cosines[others]
            ranking = Merged(ranking, Scored(pool_ids, pool_cosines, lambda ids: np.isin(ids, pool_ids)))
        return replace(feed, ranking=ranking, strategy="similar", source="model")

    def _community_popular(self, feed: Feed, post: int) -> Feed:
        """The post's community: the model's posts by popularity, then its fresh posts newest first."""
        scope = feed.scope
        model, pool = scope.loaded.model, scope.pool
        community = scope.community(post)
        catalogue = CatalogueIndex.kept(self._catalogues, scope.loaded.version, model)
        members = np.zeros(model.num_items, dtype=bool)
        members[catalogue.matching((community,), ())] = True
        if post < model.num_items:
            members[post] = False
        popular = model.popular_items[members[model.popular_items]]
        ranking: Ranked = Fixed(popular, model.popular_scores[members[model.popular_items]])
        kept = np.fromiter((post_matches(labels, (community,), ()) for labels in pool.labels), bool, count=pool.size)
        if pool.size and post >= pool.offset:
            kept[post - pool.offset] = False
        if kept.any():
            ranking = Chained(ranking, pool.restricted(kept).unscored(everything=True))
        return replace(feed, ranking=ranking, strategy="community_popular", source="model")


class ForUser:
    """With ``user_id=``: the model's exclusions of the user dropped, the best neighbours re-ordered for it."""

    def __call__(self, feed: Feed) -> Feed:
        request, scope = feed.request, feed.scope
        if request.user_id == ANONYMOUS:
            return feed
        model = scope.loaded.model
        ranking = feed.ranking
        user = scope.user
        if user is not None:
            vector = (model.user_embeddings[user], float(model.user_biases[user]))
            excluded = model.excluded_items(user)
            if len(excluded):
                ranking = Filtered(ranking, excluded.astype(np.int64).tolist(), [])
        else:
            features = scope.live_user
            vector = model.user_representation(features.get("role"), features["follows"]) if features else None
        if vector is not None:
            ranking = Reranked(ranking, RERANK_DEPTH, _user_scores(scope, vector[0]))
        return replace(feed, ranking=ranking, vector=vector)


def _user_scores(scope: Scope, embedding: np.ndarray):
    """The model's score (without the user's constant bias) of feed ids for a user of this embedding."""
    model, pool = scope.loaded.model, scope.pool

    def scores(feed_ids: np.ndarray) -> np.ndarray:
        trained = feed_ids < pool.offset
        out = np.full(len(feed_ids), -np.inf, dtype=np.float32)
        items = feed_ids[trained]
        out[trained] = model.item_embeddings[items] @ embedding + model.item_biases[items]
        rows = np.searchsorted(pool.scorable, feed_ids[~trained] - pool.offset)
        fresh = np.flatnonzero(~trained)
        found = rows < len(pool.scorable)
        out[fresh[found]] = pool.embeddings[rows[found]] @ embedding + pool.biases[rows[found]]
        return out

    return scores


class Reranked:
    """The first ``depth`` entries of ``base`` ordered by ``score`` (ties: base order), then the rest as they were.

    Entries keep their base score (the cosine): the order is the user's, the score says how similar.
    """

    def __init__(self, base: Ranked, depth: int, score):
        self._base, self._depth, self._score = base, depth, score
        self.size = self.held = self.size_floor = base.size  # see app.feed.ranked.Ranked
        self._head: Entries | None = None

    def take(self, n: int) -> Entries:
        if self._head is None:
            ids, scores = self._base.take(self._depth)
            order = np.argsort(-self._score(ids), kind="stable")
            self._head = ids[order], scores[order]
        if n <= len(self._head[0]):
            return self._head[0][:n], self._head[1][:n]
        ids, scores = self._base.take(n)
        return (
            np.concatenate([self._head[0], ids[len(self._head[0]) :]]),
            np.concatenate([self._head[1], scores[len(self._head[1]) :]]),
        )

    def contains(self, feed_ids: np.ndarray) -> np.ndarray:
        return self._base.contains(feed_ids)
