"""The Redis clients of the service's processes, built in one place: one kind per way a process uses Redis.

redis-py connects lazily, reconnects on its own and resets its pool in a forked child, so a client may be
built before a fork (a Celery worker's children) as long as it is first used after it.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Web requests must not wait long for Redis: they can be answered from the model instead.
REQUEST_TIMEOUT = 0.2
# A web worker's subscriber blocks on the channel, so it gets a longer timeout than requests, plus periodic
# health checks that notice a connection that died silently.
SUBSCRIBER_TIMEOUT = 5.0
SUBSCRIBER_HEALTH_CHECK_INTERVAL = 10


def request_client(url: str) -> redis.Redis:
    """For request handling: short timeouts, one immediate retry (a stale pooled connection)."""
    return redis.Redis.from_url(
        url, socket_timeout=REQUEST_TIMEOUT, socket_connect_timeout=REQUEST_TIMEOUT, retry=Retry(NoBackoff(), 1)
    )


def subscriber_client(url: str) -> redis.Redis:
    """For a pub/sub subscriber that reconnects itself, with its own backoff (redis-py does not retry)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SUBSCRIBER_TIMEOUT,
        socket_connect_timeout=SUBSCRIBER_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=SUBSCRIBER_HEALTH_CHECK_INTERVAL,
        retry=Retry(NoBackoff(), 0),
    )


def worker_client(url: str) -> redis.Redis:
    """For Celery tasks and command-line tools: long commands (a chunk's lists) are waited for."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60, health_check_interval=30)
