"""FeedService: resolves a page request into its scope, runs the stages, renders the page.

Resolving is the only part that does I/O. It picks the model version (the held one, or the pinned one:
kept in memory or loaded from disk by ``ModelHolder.at``), then takes what the worker already knows (the
user's list from :class:`app.list_memo.ListMemo`, the live generation, the user's exclusions and live-user
record from :class:`app.feed.mirror.LiveMirror`) and reads what it lacks in one Redis round trip (the clock,
the exclusions and, as needed, the list, the generation (when the mirror does not know it), the live-user
record and whether a pinned version is still published; on a cluster the last three cost a second round
trip to the ``{ctl}`` slot), then the live pool of the generation (once per generation and version per
worker). A page of a known user of the held version whose exclusions the mirror holds costs no round trip.
A pin that cannot be honoured (its version or pool expired) gives a fresh scroll from the current state,
and the response says ``version_fallback: true``. A new scroll of a user in an experiment's ``model`` variant
is pinned to that variant's own published version when the worker holds it (``variant_fallback`` says when
not). When Redis cannot be reached (see
:class:`app.cache_guard.CacheGuard`) the page comes from the held model alone: no fresh posts (unless the
worker holds the pinned generation's pool) and no exclusions, ``source: model``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from app import metrics
from app.cache_guard import CacheGuard, CacheUnavailable
from app.feed.filters import CatalogueIndex, CommunityTagFilter
from app.feed.live import LivePool, build_pool, empty_pool
from app.feed.lru import Lru
from app.feed.mirror import KnownExclusions, LiveMirror
from app.feed.pin import UNPINNED, Pin
from app.feed.similar import ForUser, Neighbours
from app.feed.stages import Candidates, Exclusions, Feed, FeedRequest, FreshPosts, Page, Rendered, Scope
from app.feed.variants import VariantRanking
from app.feed.version_view import VersionView
from app.list_memo import ListMemo
from app.model_holder import LoadedModel, ModelHolder
from app.served_log import ServedLog
from common.experiments import Experiment
from common.recs_cache import RecsCache, ServedEntry, UserReads, cut_exclusions, live_user_at, unpack_list
from ml.similar import UnitItems, load_neighbours

log = logging.getLogger(__name__)


# Rankings past the precomputed lists a worker keeps (about 8 KB each at MAX_FEED_POSTS=1000): a user who
# scrolls past the list, or a new user with the same features as another, is ranked once, not on every page.
RANKINGS_KEPT = 1000
# Feeds (the stages' result) a worker keeps: about 1 KB each without a live pool, plus 12 bytes per fresh post
# the model can score once a page merged them (12 KB with 1,000 fresh posts), plus about 200 bytes per
# position a page rendered (app.feed.stages.Rendered: 20 KB for the first 100).
FEEDS_KEPT = 1000


class NoModel(RuntimeError):
    """The worker holds no model yet (nothing was trained, or every load failed)."""


class FeedService:
    """Builds recommendation pages for one web worker.

    Parameters
    ----------
    holder : ModelHolder
        The worker's model, and the older versions pinned scrolls need.
    cache : RecsCache
        The Redis cache (reader side), on a client with short timeouts.
    guard : CacheGuard
        The circuit breaker every Redis call goes through.
    memo : ListMemo
        The lists already read for the held version.
    mirror : LiveMirror
        The live state the worker's reloader keeps (the generation, users' exclusions and live records).
    top_k : int
        Length of the precomputed lists (``TOP_K_RECOMMENDATIONS``), and of a head computed without one.
    max_feed_posts : int
        How far a scroll goes (``MAX_FEED_POSTS``).
    impressions : str
        What an impression does: ``demote``, ``hide`` or ``ignore`` (``IMPRESSIONS``).
    experiment : Experiment or None
        The running experiment (``EXPERIMENT``): its stage follows the candidates.
    served_log : ServedLog or None
        Where each feed page is recorded (the ``served`` stream, off the request path); None records none
        (``SERVED_STREAM_MAXLEN=0``).
    """

    def __init__(
        self,
        holder: ModelHolder,
        cache: RecsCache,
        guard: CacheGuard,
        memo: ListMemo,
        mirror: LiveMirror,
        *,
        top_k: int,
        max_feed_posts: int,
        impressions: str = "demote",
        experiment: Experiment | None = None,
        served_log: ServedLog | None = None,
    ):
        self._holder = holder
        self._cache = cache
        self._guard = guard
        self._memo = memo
        self.mirror = mirror
        self._rankings = Lru(RANKINGS_KEPT)  # (kind, version, who, depth) -> a ranking past the precomputed list
        # version -> app.feed.filters.CatalogueIndex (the filter's, and similar posts' community fallback)
        self._catalogues = Lru(2)
        self._filter = CommunityTagFilter(max_feed_posts, self._catalogues)
        self.stages: Sequence[Callable[[Feed], Feed]] = (
            Candidates(top_k, max_feed_posts, self._rankings),
            *([VariantRanking(experiment)] if experiment is not None else []),
            self._filter,
            FreshPosts(),
            Exclusions(impressions),
        )
        self._units = Lru(2)  # version -> ml.similar.UnitItems (cell index, neighbour table): see unit_items
        self.similar_stages: Sequence[Callable[[Feed], Feed]] = (
            Neighbours(max_feed_posts, self.unit_items, self._catalogues),
            ForUser(),
            Exclusions(impressions),
        )
        self._page = Page(max_feed_posts)
        self._experiment = experiment
        self._served = served_log
        self._views = Lru(4)  # version -> VersionView
        self._posts = Lru(4)  # generation -> the pool's posts, as published
        self._pools = Lru(4)  # (version, generation) -> LivePool
        self._feeds = Lru(FEEDS_KEPT)  # (user, pin, Redis answered) -> the feed after the stages

    def page(self, request: FeedRequest) -> dict[str, Any]:
        """One page of the feed, as the ``RecommendationsSchema`` response. Raises :class:`NoModel`.

        The stages' result depends only on the user and the resolved pin (and on whether Redis answered),
        so it is kept per worker: the next pages of a scroll, and a user's next visit while nothing changed
        for it, only cut a page out of it (its rankings keep what they have computed).
        """
        page = self._run(request, self.stages)
        variant = self._experiment.assign(request.user_id) if self._experiment is not None else None
        page["experiment"] = self._experiment.name if variant is not None else None
        page["variant"] = variant.name if variant is not None else None
        # A model variant's page ranked by a version of its own line; anything else is the production fallback.
        modelled = variant is not None and variant.ranking == "model"
        by_variant = modelled and self._holder.lineage_of(page["model_version"]) == variant.lineage
        page["variant_fallback"] = modelled and not by_variant
        popular = variant is not None and variant.ranking == "popular"
        ranking = "model" if by_variant else "popular" if popular else "production"  # what ranked the page
        recs = page["recommendations"]
        if self._served is not None and recs:
            self._served.record(
                ServedEntry(
                    user_id=request.user_id,
                    post_ids=[r["post_id"] for r in recs],
                    first_rank=recs[0]["rank"],
                    experiment=page["experiment"] or "",
                    variant=page["variant"] or "production",
                    ranking=ranking,
                    model_version=page["model_version"],
                    served_ms=int(time.time() * 1000),
                )
            )
        return page

    def similar(self, request: FeedRequest) -> dict[str, Any]:
        """A page of the posts similar to ``request.similar_to``, for ``request.user_id`` if it names a user.

        Resolved and kept like a feed's page (see :mod:`app.feed.similar`; an anonymous page's reader is
        ``app.feed.similar.ANONYMOUS``). Raises :class:`NoModel`, and :class:`app.feed.similar.UnknownPost`
        when neither the model nor the pinned live pool has the post.
        """
        return self._run(request, self.similar_stages)

    def _run(self, request: FeedRequest, stages: Sequence[Callable[[Feed], Feed]]) -> dict[str, Any]:
        scope = self._resolve(request)
        key = (request.user_id, request.similar_to, request.communities, request.tags, scope.pin, scope.redis_answered)
        kept = self._feeds.get(key)
        if kept is None:
            feed = Feed(request, scope)
            for stage in stages:
                feed = stage(feed)
            rendered = Rendered()
            self._feeds.put(key, (feed, rendered))
        else:
            # The same key resolves to the same scope (a filter's restricted pool included): only this page's
            # request and fallback flag change.
            feed, rendered = kept
            same = feed.scope
            if same.version_fallback != scope.version_fallback:
                same = replace(same, version_fallback=scope.version_fallback)
            feed = Feed(request, same, feed.ranking, feed.strategy, feed.source, feed.vector)
        metrics.labelled(metrics.PAGES, feed.strategy, feed.source).inc()
        return self._page(feed, rendered)

    def prepare(self, loaded: LoadedModel) -> None:
        """Before a version is swapped in (``ModelHolder.prepare``): build what its pages need.

        Its item entries, each community's rows and the similar-post view (the table the training run wrote
        mapped): about a second at 200,000 posts. Built here, the worker's requests keep the old version
        meanwhile; built on the first requests after the swap, every request of the new version waited.
        """
        self._view(loaded)
        CatalogueIndex.kept(self._catalogues, loaded.version, loaded.model)
        self.unit_items(loaded)

    def after_swap(self, version: str) -> None:
        """After ``version`` was swapped in (the reloader calls this): drop what belonged to the replaced one.

        Kept feeds and rankings belong to the replaced version (a scroll pinned to it recomputes its next
        page), and would otherwise keep its model in memory. What the new version's pages need was built
        before the swap (:meth:`prepare`, through ``ModelHolder.prepare``).
        """
        loaded = self._holder.current
        if loaded is not None and loaded.version == version:
            self._feeds.clear()
            self._rankings.clear()
            self._filter.clear()

    def unit_items(self, loaded: LoadedModel) -> UnitItems:
        """Similar posts' view of a version, made once: before the swap for the held version (:meth:`prepare`),
        on a first similar page for an older, pinned one."""
        return self._units.get_or_make(loaded.version, lambda: self._made_units(loaded))

    def _made_units(self, loaded: LoadedModel) -> UnitItems:
        """A version's normalised embeddings, the cell index of a large catalogue, and the table of every post's
        first neighbours that the training run wrote beside it (None without one: computed per page)."""
        table = load_neighbours(self._holder.model_dir, loaded.version, loaded.num_items)
        return UnitItems.of(loaded.model, table=table)

    # --- resolving a request ---

    def _resolve(self, request: FeedRequest) -> Scope:
        held = self._holder.get()
        if held is None:
            raise NoModel("no model is loaded yet")
        if request.pin != UNPINNED:
            scope = self._scope(request.user_id, held, request.pin)
            if scope is not None:
                return scope
        scope = self._variant_scope(request, held) or self._scope(request.user_id, held, UNPINNED)
        assert scope is not None  # an unpinned page is always possible
        if request.pin == UNPINNED:
            return scope
        return replace(scope, version_fallback=True)

    def _variant_scope(self, request: FeedRequest, held: LoadedModel) -> Scope | None:
        """A new scroll of the user's experiment variant's own model, pinned to its version; None when the user
        is in no ``model`` variant, or its model is not held or its lists are gone (the production feed then)."""
        if self._experiment is None or request.similar_to is not None:
            return None
        variant = self._experiment.assign(request.user_id)
        model = self._holder.variant(variant.lineage) if variant.ranking == "model" else None
        return self._scope(request.user_id, held, Pin(model.version)) if model is not None else None

    def _scope(self, user_id: str, held: LoadedModel, pin: Pin) -> Scope | None:
        """The scope of ``pin``, or None when it cannot be honoured any more."""
        loaded = held if pin.version in (None, held.version) else self._holder.at(pin.version)
        if loaded is None:
            return None
        is_held = loaded is held
        user = loaded.model.user_index(user_id)
        known = user is not None
        cached = self._memo.get(loaded.version, user_id) if known and is_held else None
        epoch = self.mirror.epoch  # before anything is read: a change after it keeps the read out of the mirror
        generation = self.mirror.generation
        exclusions = self.mirror.exclusions(user_id)
        has_record, record = (True, None) if known else self.mirror.live_user(user_id)
        if generation is None or exclusions is None or not has_record or (known and cached is None) or not is_held:
            try:
                reads = self._guard.call(
                    partial(
                        self._cache.user_reads,
                        user_id,
                        list_version=loaded.version if known and cached is None else None,
                        generation=generation is None,
                        live_user=not known,
                        check_version=None if is_held else loaded.version,
                    )
                )
            except CacheUnavailable:
                return self._without_redis(user_id, loaded, pin)
            if reads.published is False:
                return None  # the pinned version expired (RECS_RETAIN_SECONDS)
            if reads.generation is not None:  # the mirror did not know it
                generation = reads.generation
            record = reads.live_user
            exclusions = KnownExclusions(reads.now, reads.seen, reads.shown)
            self.mirror.remember(epoch, user_id, exclusions, (not known, record))
            if known and cached is None:
                cached = self._unpack(reads, loaded, user_id, is_held)
        if pin.generation is not None:
            generation = pin.generation
        cutoff = exclusions.as_of if pin.cutoff is None else pin.cutoff
        pool = self._pool(loaded, generation)
        if pool is None and pin.generation is None:
            # The current generation has no pool: Redis lost its live state (emptied, or restarted without it)
            # and the mirror still holds the generation from before. Ask Redis which one is current now.
            try:
                generation = self._generation_again()
            except CacheUnavailable:
                return self._without_redis(user_id, loaded, pin)
            # An unpinned page is always possible: without that generation's pool too, then no fresh posts.
            pool = self._pool(loaded, generation) or empty_pool(loaded.model, generation)
        if pool is None:
            return None  # the pinned generation's pool expired
        return Scope(
            loaded=loaded,
            user=user,
            view=self._view(loaded),
            pin=Pin(loaded.version, generation, cutoff),
            pool=pool,
            cached_list=cached,
            live_user=None if known else live_user_at(record, generation),
            # Everything the exclusions hold arrived by their as_of: an unpinned page keeps them all.
            seen=exclusions.seen if cutoff >= exclusions.as_of else cut_exclusions(exclusions.seen, cutoff),
            shown=exclusions.shown if cutoff >= exclusions.as_of else cut_exclusions(exclusions.shown, cutoff),
            redis_answered=True,
            version_fallback=False,
        )

    def _generation_again(self) -> int:
        """The live generation Redis holds now (0 before any), which the mirror holds from then on."""
        state = self._guard.call(self._cache.live_state)
        generation = 0 if state is None else state.generation
        self.mirror.correct_generation(generation)
        return generation

    def _without_redis(self, user_id: str, loaded: LoadedModel, pin: Pin) -> Scope:
        """The scope when Redis cannot be reached: the model alone, and what the worker already holds."""
        generation = 0 if pin.generation is None else pin.generation
        pool = self._pools.get((loaded.version, generation)) or empty_pool(loaded.model, generation)
        user = loaded.model.user_index(user_id)
        cached = self._memo.get(loaded.version, user_id) if user is not None else None
        return Scope(
            loaded=loaded,
            user=user,
            view=self._view(loaded),
            pin=Pin(loaded.version, generation, 0 if pin.cutoff is None else pin.cutoff),
            pool=pool,
            cached_list=cached,
            live_user=None,
            seen={},
            shown={},
            redis_answered=False,
            version_fallback=False,
        )

    def _unpack(self, reads: UserReads, loaded: LoadedModel, user_id: str, is_held: bool):
        if reads.list_blob is None:
            log.warning("no cached list for known user %r in version %s; computing it", user_id, loaded.version)
            return None
        try:
            found = unpack_list(reads.list_blob, loaded.num_items)
        except ValueError as exc:  # a corrupt list: the model can still answer
            log.error("unreadable cached list of user %r in version %s: %s", user_id, loaded.version, exc)
            return None
        if is_held:
            self._memo.put(loaded.version, user_id, found)
        return found

    def _view(self, loaded: LoadedModel) -> VersionView:
        view = self._views.get(loaded.version)
        if view is None:
            view = VersionView.of(loaded.model)
            self._views.put(loaded.version, view)
        return view

    def _pool(self, loaded: LoadedModel, generation: int) -> LivePool | None:
        """The pool of ``generation`` as ``loaded`` sees it; None if it expired.

        Kept per worker once read; when Redis fails while reading it, this page goes without fresh posts
        and a later one reads it again.
        """
        key = (loaded.version, generation)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        posts = [] if generation == 0 else self._posts.get(generation)
        if posts is None:
            try:
                posts = self._guard.call(self._cache.live_pool, generation)
            except CacheUnavailable:
                return empty_pool(loaded.model, generation)
            if posts is None:
                return None
            self._posts.put(generation, posts)
        pool = build_pool(loaded.model, self._view(loaded).item_index, generation, posts)
        self._pools.put(key, pool)
        return pool
