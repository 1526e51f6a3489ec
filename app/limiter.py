"""Rate limiting per client address (``RATE_LIMIT``, e.g. ``100/second``, and ``EVENTS_RATE_LIMIT``), in Redis.

Counters live in Redis under ``<REDIS_PREFIX>ratelimit:`` so every worker and host shares them. If Redis
is unavailable the limiter counts in the worker's memory instead of failing requests. ``/health``,
``/metrics`` and the API documentation are never limited. A client over its limit gets a 429 error of
the DESIGN shape (and ``Retry-After``).
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app.runtime import REQUEST_REDIS_TIMEOUT
from common.config import Settings
from common.recs_cache import rate_limit_prefix

_EXEMPT_BLUEPRINTS = frozenset({"health", "metrics", "api-docs"})


def _exempt() -> bool:
    return request.blueprint in _EXEMPT_BLUEPRINTS or request.endpoint == "static"


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Install the limiter and return it: ``RATE_LIMIT`` (if set) is the default limit of every endpoint.

    The app factory puts ``EVENTS_RATE_LIMIT`` (always set: the events batch writes) on ``POST /events``.
    """
    limiter = Limiter(
        get_remote_address,
        default_limits=[settings.rate_limit] if settings.rate_limit else [],
        default_limits_exempt_when=_exempt,
        storage_uri=settings.redis_url,
        storage_options={
            "key_prefix": rate_limit_prefix(settings.redis_prefix),
            "socket_timeout": REQUEST_REDIS_TIMEOUT,
            "socket_connect_timeout": REQUEST_REDIS_TIMEOUT,
        },
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    return limiter
