"""The per-process objects of the web app: Redis client, cache, circuit breaker, model holder, feed, probes.

:func:`build_runtime` makes them once per app; views reach them with :func:`get_runtime`. They are made
in the worker process (gunicorn loads the app after forking), so no connection is shared across a fork.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from flask import current_app

from app.cache_guard import CacheGuard, CacheUnavailable
from app.feed import FeedService
from app.feed.mirror import LiveMirror
from app.list_memo import ListMemo
from app.model_holder import ModelHolder
from app.probes import CachedProbe, postgres_check
from app.served_log import ServedLog
from common.config import Settings
from common.experiments import model_variant_dirs
from common.recs_cache import RecsCache
from common.redis_clients import request_client, write_once_client

if TYPE_CHECKING:  # app.reloader imports this module
    from app.reloader import ModelReloader

# How long a Redis failure is remembered before requests try Redis again.
REDIS_COOLDOWN = 2.0


@dataclass
class Runtime:
    settings: Settings
    cache: RecsCache
    guard: CacheGuard
    holder: ModelHolder
    feed: FeedService
    redis_probe: CachedProbe
    postgres_probe: CachedProbe
    served_log: ServedLog | None = None  # the feed pages' record (None: SERVED_STREAM_MAXLEN=0)
    reloader: ModelReloader | None = field(default=None)  # set by app.reloader.start in a gunicorn worker

    def close(self) -> None:
        """Write the queued served pages, then release the Redis connections (at worker exit, and in tests)."""
        if self.served_log is not None:
            self.served_log.close()
        self.cache.client.close()


def published_version(cache: RecsCache, guard: CacheGuard) -> str | None:
    """The version Redis says is current, or None if there is none or Redis cannot be reached."""
    try:
        return guard.call(cache.current_version)
    except CacheUnavailable:
        return None


def build_runtime(settings: Settings) -> Runtime:
    """Make the objects one web app needs; nothing connects until it is used."""
    client = request_client(settings.redis_url)
    cache = RecsCache(client, settings.redis_prefix)
    guard = CacheGuard(REDIS_COOLDOWN)
    holder = ModelHolder(
        settings.model_dir,
        partial(published_version, cache, guard),
        kept=settings.api_models_kept,
        variant_dirs=model_variant_dirs(settings.experiment, settings.model_dir),
    )
    served_log = None
    if settings.served_stream_maxlen:  # its own client: a batch is never retried (app.served_log)
        log_cache = RecsCache(write_once_client(settings.redis_url), settings.redis_prefix)
        served_log = ServedLog(log_cache, settings.served_stream_maxlen)
    feed = FeedService(
        holder,
        cache,
        guard,
        ListMemo(settings.api_list_memo_users),
        LiveMirror(settings.api_list_memo_users),
        top_k=settings.top_k,
        max_feed_posts=settings.max_feed_posts,
        impressions=settings.impressions,
        experiment=settings.experiment,
        served_log=served_log,
    )
    holder.prepare = feed.prepare  # a version's pages are made ready before it is swapped in
    return Runtime(
        settings=settings,
        cache=cache,
        guard=guard,
        holder=holder,
        feed=feed,
        redis_probe=CachedProbe(partial(guard.call, client.ping), ttl=1.0),
        postgres_probe=CachedProbe(postgres_check(settings.database_url), ttl=10.0),
        served_log=served_log,
    )


def get_runtime() -> Runtime:
    """The runtime of the current app."""
    return current_app.extensions["recsvc"]
