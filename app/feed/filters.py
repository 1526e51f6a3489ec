"""The community and tag filter of the feed: a stage that ranks only the posts a page asked for.

``GET /recommendations/<user_id>?community=a,b&tag=x`` wants posts of community a or b that carry tag x
(OR within a parameter, AND between them). The precomputed list rarely holds enough of one community, so
:class:`CommunityTagFilter` ranks the matching posts themselves: it runs right after
:class:`app.feed.stages.Candidates` (which says how the user is ranked, through ``Feed.vector``) and
replaces its ranking with the model's scores of the matching posts (or their popularity order), and the
live pool with its matching posts; the later stages (fresh posts, exclusions, the page) run unchanged, so
the feed pages as deep as the matching catalogue goes, bounded by ``MAX_FEED_POSTS``. An unknown
community or tag matches nothing: an empty feed. Stages do no I/O; this one only computes.

Per worker it keeps, per model version, the item indices of every community and tag and each community's
embeddings and biases contiguous (:class:`CatalogueIndex`, built before the swap by ``FeedService.prepare``),
so a page of one community scores a slice instead of gathering its rows; and the matches of recent filters.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np

from app.feed.live import LivePool, PostLabels
from app.feed.lru import Lru
from app.feed.ranked import EMPTY, Extended
from app.feed.stages import Feed
from ml.model import RecModel
from ml.similar import one_blas_thread

# How many of the best matching posts a filtered feed ranks first (most pages are within them).
HEAD_POSTS = 100
# Matching item sets a worker keeps (sorted int64 item indices: at most 8 bytes per post each).
MATCHES_KEPT = 32
_NO_ITEMS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class CatalogueIndex:
    """The item indices (sorted int64) of each community and each tag of one model version.

    ``blocks`` holds each community's item embeddings and biases contiguous, row ``j`` being the item
    ``communities[c][j]``: the model's score of a community's posts for a user is one product over a slice.
    """

    communities: Mapping[str, np.ndarray]
    tags: Mapping[str, np.ndarray]
    blocks: Mapping[str, tuple[np.ndarray, np.ndarray]]  # community -> (embeddings (n, d), biases (n,))

    @classmethod
    def kept(cls, indexes: Lru, version: str, model: RecModel) -> CatalogueIndex:
        """The index of ``version`` in a worker's ``indexes`` (version -> index), made there on first use."""
        return indexes.get_or_make(version, lambda: cls.of(model))

    @classmethod
    def of(cls, model: RecModel) -> CatalogueIndex:
        names, codes = np.unique(np.asarray(model.item_community_ids, dtype=str), return_inverse=True)
        order = np.argsort(codes, kind="stable").astype(np.int64)  # by community, ascending items within one
        starts = np.searchsorted(codes[order], np.arange(len(names) + 1))
        embeddings = np.ascontiguousarray(model.item_embeddings[order])
        biases = np.ascontiguousarray(model.item_biases[order])
        spans = list(zip(names.tolist(), starts[:-1].tolist(), starts[1:].tolist(), strict=True))
        tags: dict[str, list[int]] = {}
        for item, item_tags in enumerate(model.item_tags):
            for tag in set(item_tags):
                tags.setdefault(tag, []).append(item)
        return cls(
            {name: order[a:b] for name, a, b in spans},
            {tag: np.asarray(items, dtype=np.int64) for tag, items in tags.items()},
            {name: (embeddings[a:b], biases[a:b]) for name, a, b in spans},
        )

    def matching(self, communities: Collection[str], tags: Collection[str]) -> np.ndarray:
        """Items of any of ``communities`` (if given) carrying any of ``tags`` (if given), sorted."""
        found = None
        for wanted, groups in ((communities, self.communities), (tags, self.tags)):
            if wanted:
                parts = [groups[key] for key in wanted if key in groups]
                union = np.unique(np.concatenate(parts)) if parts else _NO_ITEMS
                found = union if found is None else np.intersect1d(found, union, assume_unique=True)
        return _NO_ITEMS if found is None else found


def post_matches(labels: PostLabels, communities: Collection[str], tags: Collection[str]) -> bool:
    """Whether a post of these ``labels`` passes the filter (the same rule as :meth:`CatalogueIndex.matching`)."""
    post_tags, community = labels
    if communities and community not in communities:
        return False
    return not tags or any(tag in tags for tag in post_tags)


def _members(items: np.ndarray):
    """Vectorised membership in the sorted ``items``."""

    def contains(feed_ids: np.ndarray) -> np.ndarray:
        at = np.searchsorted(items, feed_ids)
        return (at < len(items)) & (items[np.minimum(at, len(items) - 1)] == feed_ids) if len(items) else at < 0

    return contains


class CommunityTagFilter:
    """Restricts the feed to the request's communities and tags; a feed without them passes unchanged."""

    def __init__(self, max_feed_posts: int, indexes: Lru):
        self._max_feed_posts = max_feed_posts
        self._indexes = indexes  # version -> CatalogueIndex (shared with similar posts' community fallback)
        self._matches = Lru(MATCHES_KEPT)  # (version, communities, tags) -> the matching items

    def clear(self) -> None:
        """Forget the matches of recent filters (after a swap, so the replaced model's are not kept)."""
        self._matches.clear()

    def __call__(self, feed: Feed) -> Feed:
        request, scope = feed.request, feed.scope
        if not request.communities and not request.tags:
            return feed
        model, version = scope.loaded.model, scope.loaded.version
        items = self._matches.get_or_make(
            (version, request.communities, request.tags),
            lambda: CatalogueIndex.kept(self._indexes, version, model).matching(request.communities, request.tags),
        )
        pool = _restricted(scope.pool, request.communities, request.tags)
        # One community and no tag (a community's page): its contiguous block, already in ``items`` order.
        block = (
            CatalogueIndex.kept(self._indexes, version, model).blocks.get(next(iter(request.communities)))
            if (len(request.communities) == 1 and not request.tags)
            else None
        )
        kept = None  # which of ``items`` stay (None: all)
        user = feed.scope.user if feed.strategy == "personalized" else None
        if user is not None:
            excluded = model.excluded_items(user)
            if len(excluded):
                kept = ~np.isin(items, excluded, assume_unique=True)
        if kept is not None and block is None:
            items, kept = items[kept], None
        size = len(items) if kept is None else int(kept.sum())
        depth = min(size, self._max_feed_posts + len(scope.seen) + len(scope.shown))
        if not size:
            ranking = EMPTY
        else:
            if feed.vector is None:
                rank = _popular(model, items if kept is None else items[kept])
            else:
                rank = _scored(model, items, block, kept, *feed.vector)
            universe = _members(items if kept is None else items[kept])
            # Most pages are near the top: the first HEAD_POSTS now, the rest only when a page goes past them.
            ranking = Extended(rank(min(depth, HEAD_POSTS)), rank, depth, size, universe)
        source = "model" if feed.vector is not None else feed.source
        return replace(feed, scope=replace(scope, pool=pool), ranking=ranking, source=source)


def _restricted(pool: LivePool, communities: Collection[str], tags: Collection[str]) -> LivePool:
    kept = np.fromiter((post_matches(labels, communities, tags) for labels in pool.labels), bool, count=pool.size)
    return pool.restricted(kept)


def _scored(model: RecModel, items: np.ndarray, block, kept, embedding: np.ndarray, bias: float):
    """The ``k`` best of ``items`` (only those ``kept`` when given) for a user of this representation (scores
    as the model's ranking; ties: smaller item first). ``block`` is their (embeddings, biases) when contiguous;
    otherwise their rows are gathered when ranked (a kept feed holds no copy of them)."""

    def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
        embeddings, biases = block if block is not None else (model.item_embeddings[items], model.item_biases[items])
        with one_blas_thread():
            scores = embeddings @ embedding + biases + np.float32(bias)
        if kept is not None:
            scores[~kept] = -np.inf
        count = len(items) if kept is None else int(kept.sum())
        best = np.argpartition(-scores, k - 1)[:k] if k < len(items) else np.arange(len(items))
        best = best[np.lexsort((items[best], -scores[best]))][: min(k, count)]
        return items[best], scores[best]

    return rank


def _popular(model: RecModel, items: np.ndarray):
    """The first ``k`` of ``items`` in the model's popularity order."""

    def rank(k: int) -> tuple[np.ndarray, np.ndarray]:
        popular = model.popular_items.astype(np.int64)
        inside = _members(items)(popular)
        return popular[inside][:k], model.popular_scores[inside][:k]

    return rank
