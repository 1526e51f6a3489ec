"""The Redis clients of the service's processes, built in one place: one kind per way a process uses Redis.

``REDIS_URL`` names either one Redis server (``redis://``, ``rediss://``, ``unix://``: a ``redis.Redis``) or
a Redis Cluster, ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS, its
certificate settings as query parameters like a ``rediss://`` URL's; a ``redis.cluster.RedisCluster``
started from those nodes, which discovers the rest). The cluster form is a URL scheme rather than a separate
setting so that one variable says everything, as the rate limiter's storage (the ``limits`` library) also
names a cluster (``app.limiter.storage`` spells the rest its way). A cluster has only database 0.

redis-py connects lazily, reconnects on its own and resets its pool in a forked child, so a client may be
built before a fork (a Celery worker's children) as long as it is first used after it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

# Web requests must not wait long for Redis: they can be answered from the model instead.
REQUEST_TIMEOUT = 0.2
# A web worker's subscriber blocks on the channel, so it gets a longer timeout than requests, plus periodic
# health checks that notice a connection that died silently.
SUBSCRIBER_TIMEOUT = 5.0
SUBSCRIBER_HEALTH_CHECK_INTERVAL = 10

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# What a rediss+cluster:// URL may carry as query parameters: redis-py's TLS options, as a rediss:// URL's.
CLUSTER_TLS_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")

Client = redis.Redis | RedisCluster


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return urlsplit(url.strip()).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) startup nodes of a cluster URL. Raises ValueError naming what is wrong with it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"must be a URL with scheme {' or '.join(CLUSTER_SCHEMES)}")
    if parts.path not in ("", "/", "/0"):
        raise ValueError("a Redis Cluster has only database 0: leave the path empty")
    nodes = []
    for address in parts.netloc.rpartition("@")[2].split(","):
        host, sep, port = address.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"node {address!r} is not host:port (list the nodes as host:port,host:port,...)")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def cluster_tls(url: str) -> dict[str, Any]:
    """The TLS options of a cluster URL: ``ssl`` for ``rediss+cluster://``, with its query's TLS parameters.

    Raises ValueError naming a parameter that is not one of :data:`CLUSTER_TLS_PARAMETERS`, or any parameter
    on a cluster without TLS.
    """
    parts = urlsplit(url.strip())
    query = parse_qs(parts.query, keep_blank_values=True)
    for name in query:
        if name not in CLUSTER_TLS_PARAMETERS:
            allowed = ", ".join(CLUSTER_TLS_PARAMETERS)
            raise ValueError(f"unknown parameter {name!r}: a cluster URL takes only {allowed}")
    if parts.scheme != "rediss+cluster":
        if query:
            raise ValueError("TLS parameters need a rediss+cluster:// URL")
        return {}
    return {"ssl": True, **{name: values[-1] for name, values in query.items()}}


def _client(url: str, **options: Any) -> Client:
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    parts = urlsplit(url.strip())
    credentials = parts.netloc.rpartition("@")[0]
    username, _, password = credentials.partition(":")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        username=unquote(username) or None,
        password=unquote(password) or None,
        **cluster_tls(url),
        require_full_coverage=False,  # a shard that is away costs its own keys only, not the others'
        **options,
    )


def request_client(url: str) -> Client:
    """For request handling: short timeouts, one immediate retry (a stale pooled connection)."""
    return _client(
        url, socket_timeout=REQUEST_TIMEOUT, socket_connect_timeout=REQUEST_TIMEOUT, retry=Retry(NoBackoff(), 1)
    )


def write_once_client(url: str) -> Client:
    """For writes off the request path that must not run twice (the served log's batches): the request client's
    timeouts and no retry, since a retry after a reply that came too late repeats a command Redis ran."""
    return _client(
        url, socket_timeout=REQUEST_TIMEOUT, socket_connect_timeout=REQUEST_TIMEOUT, retry=Retry(NoBackoff(), 0)
    )


def subscriber_client(url: str) -> Client:
    """For a pub/sub subscriber that reconnects itself, with its own backoff (redis-py does not retry).

    TCP keepalive where there is TCP (a Unix socket has none, and redis-py refuses the option for it).
    """
    keepalive = {} if urlsplit(url.strip()).scheme == "unix" else {"socket_keepalive": True}
    return _client(
        url,
        socket_timeout=SUBSCRIBER_TIMEOUT,
        socket_connect_timeout=SUBSCRIBER_TIMEOUT,
        health_check_interval=SUBSCRIBER_HEALTH_CHECK_INTERVAL,
        retry=Retry(NoBackoff(), 0),
        **keepalive,
    )


def worker_client(url: str) -> Client:
    """For Celery tasks and command-line tools: long commands (a chunk's lists) are waited for."""
    return _client(url, socket_connect_timeout=5, socket_timeout=60, health_check_interval=30)
