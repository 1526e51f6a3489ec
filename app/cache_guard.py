"""Calls to the Redis cache that give up fast and stop trying for a moment after a failure.

A web worker must keep answering when Redis is down: it then computes pages from the model it holds. The
request-side Redis client uses short socket timeouts, and :class:`CacheGuard` remembers a failure for a
short cooldown (a circuit breaker), so that while Redis is away requests skip it instead of each paying a
timeout. After the cooldown the next call tries Redis again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from app import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class CacheUnavailable(RuntimeError):
    """Redis failed just now, or failed recently and is being skipped until the cooldown ends."""


class CacheGuard:
    """A circuit breaker around calls to Redis.

    Parameters
    ----------
    cooldown : float
        Seconds to skip Redis after a failure.
    clock : callable
        Monotonic clock (tests pass their own).
    """

    def __init__(self, cooldown: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self._cooldown = cooldown
        self._clock = clock
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while a recent failure is being remembered."""
        return self._clock() >= self._open_until

    def call(self, func: Callable[..., T], *args) -> T:
        """``func(*args)``, or :class:`CacheUnavailable` if Redis is skipped or the call fails."""
        if not self.available:
            raise CacheUnavailable("Redis failed recently; skipping it for a moment")
        try:
            return func(*args)
        except redis.RedisError as exc:
            self._trip(exc)
            raise CacheUnavailable(f"Redis is unavailable: {exc}") from exc

    def _trip(self, exc: Exception) -> None:
        with self._lock:
            first = self.available  # log once per outage window, not once per request
            self._open_until = self._clock() + self._cooldown
        metrics.CACHE_ERRORS.inc()
        if first:
            log.warning(
                "Redis call failed (%s: %s); serving without it for %.1fs", type(exc).__name__, exc, self._cooldown
            )
