"""Waiting for a condition, bounded: the one polling loop of the tests and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
import requests

T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Call ``condition`` until it returns something truthy (returned), or return None after ``timeout`` s.

    A server that is still starting or restarting refuses connections: a requests or Redis error counts as
    "not yet". Any other exception propagates.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (requests.RequestException, redis.RedisError):
            result = None
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """:func:`poll`, failing with an AssertionError naming ``what`` when ``timeout`` passes first."""
    result = poll(condition, timeout, interval)
    if not result:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return result
