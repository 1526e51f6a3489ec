"""The Redis client factory and REDIS_URL: one server by default, a Redis Cluster for ``redis+cluster://``."""

from dataclasses import replace

import pytest
import redis
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from redis.cluster import RedisCluster

from app.limiter import storage
from common.config import ConfigError, Settings, load_settings
from common.recs_cache import RecsCache
from common.redis_clients import (
    cluster_nodes,
    cluster_tls,
    is_cluster_url,
    request_client,
    subscriber_client,
    worker_client,
)
from testing.environment import REDIS_PREFIX
from testing.processes import RedisServer

PLAIN = {"CELERY_BROKER_URL": "redis://10.0.0.9:6379/0", "CELERY_RESULT_BACKEND": "redis://10.0.0.9:6379/1"}


def test_cluster_urls_name_their_startup_nodes():
    url = "redis+cluster://user:secret@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002/"
    assert is_cluster_url(url) and is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://10.0.0.1:7000/0")
    assert cluster_nodes(url) == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)]
    with pytest.raises(ValueError, match="only database 0"):
        cluster_nodes("redis+cluster://10.0.0.1:7000/3")
    with pytest.raises(ValueError, match="not host:port"):
        cluster_nodes("redis+cluster://10.0.0.1")


def test_every_client_kind_is_a_cluster_client_for_a_cluster_url(redis_cluster):
    for build in (request_client, subscriber_client, worker_client):
        client = build(redis_cluster.url)
        try:
            assert isinstance(client, RedisCluster)
            assert len(client.get_primaries()) == 3
            client.set("recsvc-test-factory", "1")
            assert client.get("recsvc-test-factory") == b"1"
        finally:
            client.delete("recsvc-test-factory")
            client.close()


def test_a_plain_url_still_gives_a_plain_client(redis_url):
    client = request_client(redis_url)
    try:
        assert type(client) is redis.Redis and client.ping()
    finally:
        client.close()


def test_redis_url_may_name_a_cluster_with_celery_on_a_plain_redis():
    settings = load_settings({"REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", **PLAIN}, dotenv=False)
    assert settings.redis_url == "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    assert settings.celery_broker_url == PLAIN["CELERY_BROKER_URL"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "CELERY_BROKER_URL"),  # the broker defaults to REDIS_URL: the cluster
        ({"CELERY_BROKER_URL": PLAIN["CELERY_BROKER_URL"]}, "CELERY_RESULT_BACKEND"),
        ({**PLAIN, "CELERY_BROKER_URL": "redis://10.0.0.2:7000/0"}, "CELERY_BROKER_URL"),  # one of its nodes
        ({**PLAIN, "CELERY_RESULT_BACKEND": "redis://10.0.0.1:7000/1"}, "CELERY_RESULT_BACKEND"),
        ({**PLAIN, "CELERY_BROKER_URL": "redis+cluster://10.0.0.1:7000"}, "CELERY_BROKER_URL"),
    ],
)
def test_celery_is_refused_the_cluster(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}.*Celery cannot use a cluster|^{variable}=.*scheme"):
        load_settings({"REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2:7000", **env}, dotenv=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [("redis+cluster://10.0.0.1:7000/2", "only database 0"), ("redis+cluster://10.0.0.1", "not host:port")],
)
def test_a_bad_cluster_url_is_refused_naming_redis_url(url, reason):
    with pytest.raises(ConfigError, match=f"^REDIS_URL=.*{reason}"):
        load_settings({"REDIS_URL": url, **PLAIN}, dotenv=False)


def test_a_unix_socket_redis_url_gives_celery_its_own_spelling_of_the_socket():
    settings = load_settings({"REDIS_URL": "unix:///run/redis/redis.sock?db=3"}, dotenv=False)
    assert settings.redis_url == "unix:///run/redis/redis.sock?db=3"
    socket = "redis+socket:///run/redis/redis.sock?virtual_host=3"
    assert settings.celery_broker_url == settings.celery_result_backend == socket
    assert load_settings({"REDIS_URL": "unix:///r.sock"}, dotenv=False).celery_broker_url.endswith("?virtual_host=0")
    explicit = {"CELERY_BROKER_URL": "redis+socket:///q.sock", "CELERY_RESULT_BACKEND": "redis+socket:///q.sock"}
    assert load_settings({"REDIS_URL": "unix:///r.sock", **explicit}, dotenv=False).celery_broker_url == (
        "redis+socket:///q.sock"
    )


def test_a_tls_redis_url_gives_celery_the_certificate_check_it_requires():
    derived = load_settings({"REDIS_URL": "rediss://r:6380/1"}, dotenv=False)
    assert derived.celery_broker_url == derived.celery_result_backend == "rediss://r:6380/1?ssl_cert_reqs=required"
    with_ca = load_settings({"REDIS_URL": "rediss://r:6380/1?ssl_ca_certs=/ca.pem"}, dotenv=False)
    assert with_ca.celery_broker_url == "rediss://r:6380/1?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    chosen = load_settings({"REDIS_URL": "rediss://r:6380/1?ssl_cert_reqs=none"}, dotenv=False)
    assert chosen.celery_result_backend == "rediss://r:6380/1?ssl_cert_reqs=none"


def test_every_client_kind_talks_over_a_unix_socket():
    server = RedisServer("unix").start()
    try:
        for build in (request_client, subscriber_client, worker_client):
            client = build(server.url)
            try:
                assert client.ping()
                pubsub = client.pubsub()
                pubsub.subscribe("recsvc-test-channel")
                assert pubsub.get_message(timeout=2)["type"] == "subscribe"
                pubsub.close()
            finally:
                client.close()
    finally:
        server.close()


def test_a_tls_cluster_url_carries_its_certificate_settings_and_nothing_else():
    url = "rediss+cluster://10.0.0.1:7000,10.0.0.2:7000?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    assert cluster_tls(url) == {"ssl": True, "ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}
    assert cluster_tls("rediss+cluster://10.0.0.1:7000") == {"ssl": True}
    assert cluster_tls("redis+cluster://10.0.0.1:7000") == {}
    assert load_settings({"REDIS_URL": url, **PLAIN}, dotenv=False).redis_url == url
    with pytest.raises(ConfigError, match="^REDIS_URL=.*unknown parameter 'db'"):
        load_settings({"REDIS_URL": "rediss+cluster://10.0.0.1:7000?db=1", **PLAIN}, dotenv=False)
    with pytest.raises(ConfigError, match="^REDIS_URL=.*need a rediss\\+cluster://"):
        load_settings({"REDIS_URL": "redis+cluster://10.0.0.1:7000?ssl_ca_certs=/ca.pem", **PLAIN}, dotenv=False)


def test_every_client_kind_the_cache_and_the_rate_limits_work_on_a_tls_cluster(redis_tls_cluster):
    """rediss+cluster:// with the cluster's own CA in the URL: every client checks the nodes against it."""
    redis_tls_cluster.flush()
    for build in (request_client, subscriber_client, worker_client):
        client = build(redis_tls_cluster.url)
        try:
            assert isinstance(client, RedisCluster) and len(client.get_primaries()) == 3
            client.set("recsvc-test-factory", "1")
            assert client.get("recsvc-test-factory") == b"1"
        finally:
            client.close()
    cache = RecsCache(worker_client(redis_tls_cluster.url), REDIS_PREFIX)
    arrival = cache.record_events([("alice", "p0", "view")], cap=10, ttl=60)
    assert cache.user_reads("alice").seen == {"p0": arrival}
    uri, options = storage(replace(Settings(), redis_url=redis_tls_cluster.url, redis_prefix=REDIS_PREFIX))
    limiter = FixedWindowRateLimiter(storage_from_string(uri, **options))
    assert [limiter.hit(parse("2/minute"), "test", "client") for _ in range(3)] == [True, True, False]
    cache.client.close()
    redis_tls_cluster.flush()
