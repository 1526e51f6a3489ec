"""Pages of a user's feed: from the precomputed Redis list, or computed from the model the worker holds.

A user's first page costs one Redis round trip (HGET of the user's packed list); the list is then kept in
the worker's :class:`app.list_memo.ListMemo`, so the next pages of the scroll cost none. The post ids and
metadata of a version's item indices are fetched once per version and kept in a small per-worker LRU,
already shaped as the response's ``post_id`` and ``metadata`` (see :func:`item_entry`), so that a page only
picks its entries instead of building twenty metadata objects. When Redis is down (see
:class:`app.cache_guard.CacheGuard`) and the memo lacks the list, or the list is missing, the page is
computed from the held model with the same ranking and exclusions (``RecModel.top_k``), and the response
says ``source: model``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import metrics
from app.cache_guard import CacheGuard, CacheUnavailable
from app.list_memo import ListMemo
from app.model_holder import LoadedModel, ModelHolder
from common.recs_cache import RecsCache

log = logging.getLogger(__name__)


class NoModel(RuntimeError):
    """The worker holds no model yet (nothing was trained, or every load failed)."""


# An item as a page shows it: its post id and its ``metadata`` object. Pages share these objects (one per
# item and version), so nothing may modify a page's ``metadata`` objects.
ItemEntry = tuple[str, dict[str, Any]]


def item_entry(post_id: str, tags: Iterable[str], community_id: str) -> ItemEntry:
    """The post id and the response's ``metadata`` object of an item."""
    return post_id, {"tags": list(tags), "communityId": community_id}


@dataclass(frozen=True, eq=False)
class VersionData:
    """What a version's cached lists need to become a page: item entries and the popularity list."""

    entries: Sequence[ItemEntry]  # item index -> entry
    popular_items: np.ndarray
    popular_scores: np.ndarray


# What _from_cache returns for a pinned version that expired: the page falls back to the held version.
_EXPIRED = object()


@dataclass(frozen=True, eq=False)
class _Ranking:
    items: np.ndarray
    scores: np.ndarray
    entry: Callable[[int], ItemEntry]  # item index -> entry
    strategy: str
    source: str


class FeedService:
    """Builds recommendation pages for one web worker.

    Parameters
    ----------
    holder : ModelHolder
        The worker's model.
    cache : RecsCache
        The Redis cache (reader side), on a client with short timeouts.
    guard : CacheGuard
        The circuit breaker every Redis call goes through.
    top_k : int
        Length of a feed computed from the model (``TOP_K_RECOMMENDATIONS``, as the cached lists).
    memo : ListMemo
        The lists already read for the held version.
    versions_kept : int
        How many versions' item metadata to keep in memory.
    """

    def __init__(
        self,
        holder: ModelHolder,
        cache: RecsCache,
        guard: CacheGuard,
        top_k: int,
        memo: ListMemo,
        versions_kept: int = 3,
    ):
        self._holder = holder
        self._cache = cache
        self._guard = guard
        self._top_k = top_k
        self._memo = memo
        self._versions: OrderedDict[str, VersionData] = OrderedDict()
        self._versions_kept = versions_kept
        self._versions_lock = threading.Lock()

    def page(self, user_id: str, limit: int, offset: int, version: str | None = None) -> dict[str, Any]:
        """One page of ``user_id``'s feed, as the ``RecommendationsSchema`` response.

        ``version`` pins the ranking to an earlier page's ``model_version``; if that version is no longer
        available the held model's version is served and ``version_fallback`` is true. Raises
        :class:`NoModel` if the worker holds no model.
        """
        loaded = self._holder.get()
        if loaded is None:
            raise NoModel("no model is loaded yet")
        served = loaded.version
        if version is not None and version != served and self._version_data(version) is not None:
            served = version
        ranking = self._from_cache(served, user_id, loaded)
        if ranking is _EXPIRED:  # the pinned version expired while this worker still remembered it
            served = loaded.version
            ranking = self._from_cache(served, user_id, loaded)
        if ranking is None:  # Redis down, or no list: the held model computes the page
            served = loaded.version
            ranking = self._from_model(loaded, user_id)
        metrics.labelled(metrics.PAGES, ranking.strategy, ranking.source).inc()
        return _page_body(user_id, served, ranking, limit, offset, version is not None and served != version)

    def prefetch(self, version: str) -> None:
        """Fetch a version's item metadata now (the reloader calls this after a swap), not on a request."""
        self._version_data(version)

    def _from_cache(self, version: str, user_id: str, loaded: LoadedModel) -> _Ranking | object | None:
        """The cached ranking (memo, else Redis), None when the model must compute it, or _EXPIRED for a gone pin."""
        data = self._version_data(version)
        if data is None:
            return None
        held = version == loaded.version
        found = self._memo.get(version, user_id) if held else None
        if found is None:
            try:
                found = self._guard.call(self._cache.user_list, version, user_id)
            except CacheUnavailable:
                return None
            except ValueError as exc:  # a corrupt list: the model can still answer
                log.error("unreadable cached list of user %r in version %s: %s", user_id, version, exc)
                return None
            if found is not None and held:
                self._memo.put(version, user_id, found)
        if found is not None:
            return _Ranking(found[0], found[1], data.entries.__getitem__, "personalized", "cache")
        if held and loaded.model.user_index(user_id) is not None:
            log.warning("no cached list for known user %r in version %s; computing it", user_id, version)
            return None
        if not held and not self._still_published(version):
            return _EXPIRED
        return _Ranking(data.popular_items, data.popular_scores, data.entries.__getitem__, "popular", "cache")

    def _still_published(self, version: str) -> bool:
        """Whether a pinned version is still in Redis; if not, forget its metadata (only asked on a list miss).

        A miss on a version this worker does not hold means either a user that version does not know (its
        popularity list is the right answer) or a version that expired since the worker fetched its metadata.
        """
        try:
            published = self._guard.call(self._cache.is_published, version)
        except CacheUnavailable:
            return True  # cannot tell: keep serving the version the client pinned
        if not published:
            with self._versions_lock:
                self._versions.pop(version, None)
        return published

    def _from_model(self, loaded: LoadedModel, user_id: str) -> _Ranking:
        model = loaded.model

        def entry(index: int) -> ItemEntry:
            return item_entry(*loaded.item(index))

        index = model.user_index(user_id)
        if index is None:
            items, scores = model.popular(self._top_k)
            return _Ranking(items, scores, entry, "popular", "model")
        items, scores = model.top_k(np.array([index], dtype=np.int64), self._top_k)
        return _Ranking(items[0], scores[0], entry, "personalized", "model")

    def _version_data(self, version: str) -> VersionData | None:
        """Item metadata and popularity list of ``version`` (None if Redis lacks it or cannot be reached)."""
        with self._versions_lock:
            data = self._versions.get(version)
            if data is not None:
                self._versions.move_to_end(version)
                return data
        try:
            items = self._guard.call(self._cache.version_items, version)
            popular = self._guard.call(self._cache.popular_list, version) if items is not None else None
        except CacheUnavailable:
            return None
        if items is None or popular is None:
            return None
        data = VersionData([item_entry(*item) for item in items], popular[0], popular[1])
        with self._versions_lock:
            self._versions[version] = data
            while len(self._versions) > self._versions_kept:
                self._versions.popitem(last=False)
        return data


def _page_body(
    user_id: str, version: str, ranking: _Ranking, limit: int, offset: int, version_fallback: bool
) -> dict[str, Any]:
    """The response: the slice [offset, offset + limit) of the ranking, with the pagination block."""
    valid = ranking.items >= 0  # lists shorter than K are padded with -1
    items, scores = ranking.items[valid], ranking.scores[valid]
    total = len(items)
    start, stop = min(offset, total), min(offset + limit, total)
    recommendations = [
        {"post_id": post_id, "score": round(score, 6), "rank": rank, "metadata": metadata}
        for (post_id, metadata), score, rank in zip(
            map(ranking.entry, items[start:stop].tolist()), scores[start:stop].tolist(), itertools.count(start + 1)
        )
    ]
    has_more = stop < total
    return {
        "user_id": user_id,
        "model_version": version,
        "strategy": ranking.strategy,
        "source": ranking.source,
        "version_fallback": version_fallback,
        "recommendations": recommendations,
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": has_more,
            "next_offset": stop if has_more else None,
        },
    }
