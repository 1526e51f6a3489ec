"""Rate limiting per client address (``RATE_LIMIT``, e.g. ``100/second``, and ``EVENTS_RATE_LIMIT``), in Redis.

Counters live in Redis under ``<REDIS_PREFIX>ratelimit:`` so every worker and host shares them. If Redis
is unavailable the limiter counts in the worker's memory instead of failing requests. ``/health``,
``/metrics`` and the API documentation are never limited. A client over its limit gets a 429 error of
the DESIGN shape (and ``Retry-After``).
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.api import abort
from common.config import Settings
from common.recs_cache import rate_limit_prefix
from common.redis_clients import CLUSTER_SCHEMES, REQUEST_TIMEOUT, cluster_tls

_EXEMPT_BLUEPRINTS = frozenset({"health", "metrics", "api-docs"})


def _exempt() -> bool:
    return request.blueprint in _EXEMPT_BLUEPRINTS or request.endpoint == "static"


def storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The ``limits`` storage URI and options of ``REDIS_URL``, under the limiter's key prefix.

    ``limits`` spells two of the schemes ``REDIS_URL`` accepts its own way: a Unix socket is its
    ``redis+unix://``, and a cluster over TLS its ``redis+cluster://`` with the TLS options
    (:func:`common.redis_clients.cluster_tls`).
    """
    url = settings.redis_url.strip()
    parts = urlsplit(url)
    options: dict[str, Any] = {
        "key_prefix": rate_limit_prefix(settings.redis_prefix),
        "socket_timeout": REQUEST_TIMEOUT,
        "socket_connect_timeout": REQUEST_TIMEOUT,
    }
    if parts.scheme == "unix":
        return f"redis+{url}", options
    if parts.scheme in CLUSTER_SCHEMES:
        return f"redis+cluster://{parts.netloc}", {**options, **cluster_tls(url)}
    return url, options


def init_app(app: Flask, settings: Settings) -> Limiter | None:
    """Install the limiter if ``RATE_LIMIT`` is set; return it (None when rate limiting is off)."""
    if not settings.rate_limit:
        return None
    uri, options = storage(settings)
    limiter = Limiter(
        get_remote_address,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=_exempt,
        storage_uri=uri,
        storage_options=options,
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    return limiter


class EndpointLimit:
    """A rate limit per client address that one endpoint checks itself (``EVENTS_RATE_LIMIT`` on ``POST /events``).

    flask-limiter checks its limits before every request, which costs the feed's hot path time even when no
    limit applies to it; this is one counter hit, on the endpoint that needs it.
    Counted in Redis (shared by all workers) under the limiter's prefix, in the worker's memory while Redis
    cannot be reached. Over the limit: a 429 of the DESIGN shape with ``Retry-After``.
    """

    def __init__(self, limit: str, name: str, settings: Settings):
        self._limit = limit
        self._items = parse_many(limit)
        self._name = name
        uri, options = storage(settings)
        self._counters = FixedWindowRateLimiter(storage_from_string(uri, **options))
        self._fallback = FixedWindowRateLimiter(MemoryStorage())

    def check(self) -> None:
        """Count this request; answer 429 if the client is over the limit."""
        client = get_remote_address()
        for item in self._items:
            try:
                allowed = self._counters.hit(item, self._name, client)
                counters = self._counters
            except Exception:  # noqa: BLE001 - Redis away: count in memory rather than fail the request
                allowed = self._fallback.hit(item, self._name, client)
                counters = self._fallback
            if not allowed:
                try:
                    reset = counters.get_window_stats(item, self._name, client).reset_time
                except Exception:  # noqa: BLE001
                    reset = time.time() + item.get_expiry()
                retry_after = str(max(1, math.ceil(reset - time.time())))
                abort(429, f"over the rate limit {self._limit} of this endpoint", headers={"Retry-After": retry_after})
