"""The community and tag filter of the feed: a stage that ranks only the posts a page asked for.

``GET /recommendations/<user_id>?community=a,b&tag=x`` wants posts of community a or b that carry tag x
(OR within a parameter, AND between them). The precomputed list rarely holds enough of one community, so
:class:`CommunityTagFilter` ranks the matching posts themselves: it runs right after
:class:`app.feed.stages.Candidates` (which says how the user is ranked, through ``Feed.vector``) and
replaces its ranking with the model's scores of the matching posts (or their popularity order), and the
live pool with its matching posts; the later stages (fresh posts, exclusions, the page) run unchanged, so
the feed pages as deep as the matching catalogue goes, bounded by ``MAX_FEED_POSTS``. An unknown
community or tag matches nothing: an empty feed. Stages do no I/O; this one only computes.

Per worker it keeps, per model version, the item indices of every community and tag
(:class:`CatalogueIndex`, built on the version's first filtered page) and the matches of recent filters.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np

from app.feed.live import LivePool
from app.feed.lru import Lru
from app.feed.ranked import EMPTY, Extended
from app.feed.stages import Feed
from ml.model import RecModel

# Matching item sets a worker keeps (sorted int64 item indices: at most 8 bytes per post each).
MATCHES_KEPT = 32
_NO_ITEMS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CatalogueIndex:
    """The item indices (sorted int64) of each community and each tag of one model version."""

    communities: Mapping[str, np.ndarray]
    tags: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, model: RecModel) -> CatalogueIndex:
        communities: dict[str, list[int]] = {}
        tags: dict[str, list[int]] = {}
        for item, (community, item_tags) in enumerate(zip(model.item_community_ids, model.item_tags, strict=True)):
            communities.setdefault(community, []).append(item)
            for tag in set(item_tags):
                tags.setdefault(tag, []).append(item)
        as_arrays = lambda groups: {key: np.asarray(items, dtype=np.int64) for key, items in groups.items()}  # noqa: E731
        return cls(as_arrays(communities), as_arrays(tags))

    def matching(self, communities: Collection[str], tags: Collection[str]) -> np.ndarray:
        """Items of any of ``communities`` (if given) carrying any of ``tags`` (if given), sorted."""
        found = None
        for wanted, groups in ((communities, self.communities), (tags, self.tags)):
            if wanted:
                parts = [groups[key] for key in wanted if key in groups]
                union = np.unique(np.concatenate(parts)) if parts else _NO_ITEMS
                found = union if found is None else np.intersect1d(found, union, assume_unique=True)
        return _NO_ITEMS if found is None else found


def post_matches(metadata: Mapping, communities: Collection[str], tags: Collection[str]) -> bool:
    """Whether a post's response ``metadata`` passes the filter (the same rule as :meth:`CatalogueIndex.matching`)."""
    if communities and metadata["communityId"] not in communities:
        return False
    return not tags or any(tag in tags for tag in metadata["tags"])


def _members(items: np.ndarray):
    """Vectorised membership in the sorted ``items``."""

    def contains(feed_ids: np.ndarray) -> np.ndarray:
        at = np.searchsorted(items, feed_ids)
        return (at < len(items)) & (items[np.minimum(at, len(items) - 1)] == feed_ids) if len(items) else at < 0

    return contains


class CommunityTagFilter:
    """Restricts the feed to the request's communities and tags; a feed without them passes unchanged."""

    def __init__(self, max_feed_posts: int):
        self._max_feed_posts = max_feed_posts
        self._indexes = Lru(4)  # version -> CatalogueIndex
        self._matches = Lru(MATCHES_KEPT)  # (version, communities, tags) -> the matching items

    def clear(self) -> None:
        """Forget every version's index (after a swap, so the replaced model's is not kept)."""
        self._indexes.clear()
        self._matches.clear()

    def __call__(self, feed: Feed) -> Feed:
        request, scope = feed.request, feed.scope
        if not request.communities and not request.tags:
            return feed
        model, version = scope.loaded.model, scope.loaded.version
        items = self._matches.get_or_make(
            (version, request.communities, request.tags),
            lambda: self._index(version, model).matching(request.communities, request.tags),
        )
        pool = _restricted(scope.pool, request.communities, request.tags)
        user = model.user_index(request.user_id) if feed.strategy == "personalized" else None
        if user is not None:
            excluded = model.excluded_items(user)
            if len(excluded):
                items = items[~np.isin(items, excluded, assume_unique=True)]
        depth = min(len(items), self._max_feed_posts + len(scope.seen) + len(scope.shown))
        if not len(items):
            ranking = EMPTY
        else:
            rank = _popular(model, items) if feed.vector is None else _scored(model, items, *feed.vector)
            ranking = Extended((_NO_ITEMS, np.zeros(0)), rank, depth, len(items), _members(items))
        source = "model" if feed.vector is not None else feed.source
        return replace(feed, scope=replace(scope, pool=pool), ranking=ranking, source=source)

    def _index(self, version: str, model: RecModel) -> CatalogueIndex:
        return self._indexes.get_or_make(version, lambda: CatalogueIndex.of(model))


def _restricted(pool: LivePool, communities: Collection[str], tags: Collection[str]) -> LivePool:
    kept = np.fromiter((post_matches(meta, communities, tags) for _, meta in pool.entries), bool, count=pool.size)
    return pool.restricted(kept)


def _scored(model: RecModel, items: np.ndarray, embedding: np.ndarray, bias: float):
    """The ``k`` best of ``items`` for a user of this representation (scores as the model's ranking)."""

    def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = model.item_embeddings[items] @ embedding + model.item_biases[items] + np.float32(bias)
        best = np.argpartition(-scores, k - 1)[:k] if k < len(items) else np.arange(len(items))
        best = best[np.lexsort((items[best], -scores[best]))]
        return items[best], scores[best]

    return rank


def _popular(model: RecModel, items: np.ndarray):
    """The first ``k`` of ``items`` in the model's popularity order."""

    def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
        popular = model.popular_items.astype(np.int64)
        inside = _members(items)(popular)
        return popular[inside][:k], model.popular_scores[inside][:k]

    return rank
