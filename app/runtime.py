"""The per-process objects of the web app: Redis client, cache, circuit breaker, model holder, feed, probes.

:func:`build_runtime` makes them once per app; views reach them with :func:`get_runtime`. They are made
in the worker process (gunicorn loads the app after forking), so no connection is shared across a fork.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cache_guard import CacheGuard, CacheUnavailable
from app.feed import FeedService
from app.feed.mirror import LiveMirror
from app.list_memo import ListMemo
from app.model_holder import ModelHolder
from app.probes import CachedProbe, postgres_check
from common.config import Settings
from common.recs_cache import RecsCache

if TYPE_CHECKING:  # app.reloader imports this module
    from app.reloader import ModelReloader

# Requests must not wait long for Redis: they can be answered from the model instead.
REQUEST_REDIS_TIMEOUT = 0.2
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
    reloader: ModelReloader | None = field(default=None)  # set by app.reloader.start in a gunicorn worker

    def close(self) -> None:
        """Release the Redis connections (at worker exit, and in tests)."""
        self.cache.client.close()


def published_version(cache: RecsCache, guard: CacheGuard) -> str | None:
    """The version Redis says is current, or None if there is none or Redis cannot be reached."""
    try:
        return guard.call(cache.current_version)
    except CacheUnavailable:
        return None


def request_redis_client(redis_url: str) -> redis.Redis:
    """A Redis client for request handling: short timeouts, one immediate retry (a stale pooled connection)."""
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=REQUEST_REDIS_TIMEOUT,
        socket_connect_timeout=REQUEST_REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


def build_runtime(settings: Settings) -> Runtime:
    """Make the objects one web app needs; nothing connects until it is used."""
    client = request_redis_client(settings.redis_url)
    cache = RecsCache(client, settings.redis_prefix)
    guard = CacheGuard(REDIS_COOLDOWN)
    holder = ModelHolder(settings.model_dir, partial(published_version, cache, guard), kept=settings.api_models_kept)
    return Runtime(
        settings=settings,
        cache=cache,
        guard=guard,
        holder=holder,
        feed=FeedService(
            holder,
            cache,
            guard,
            ListMemo(settings.api_list_memo_users),
            LiveMirror(settings.api_list_memo_users),
            top_k=settings.top_k,
            max_feed_posts=settings.max_feed_posts,
            impressions=settings.impressions,
        ),
        redis_probe=CachedProbe(partial(guard.call, client.ping), ttl=1.0),
        postgres_probe=CachedProbe(postgres_check(settings.database_url), ttl=10.0),
    )


def get_runtime() -> Runtime:
    """The runtime of the current app."""
    return current_app.extensions["recsvc"]
