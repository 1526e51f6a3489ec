"""RecsCache against the real Redis: packing, staging, the atomic publish, pub/sub, the lock, the outcome."""

import json
import time

import numpy as np
import pytest
import redis

from common.recs_cache import RecsCache, pack_list, unpack_list
from tests.conftest import TEST_REDIS_PREFIX

ITEMS = [("p0", ("music",), "c0"), ("p1", ("dance", "mv"), "c1"), ("p2", (), "c0")]


@pytest.fixture
def cache(redis_client):
    return RecsCache(redis_client, TEST_REDIS_PREFIX)


def stage(cache, version, ttl=60):
    cache.stage_version(
        version,
        ITEMS,
        np.array([2, 0, 1]),
        np.array([9.0, 5.0, 1.0]),
        {"created_at": "2026-11-26T10:00:00Z", "num_users": 2, "num_items": 3},
        ttl=ttl,
    )
    items = np.array([[1, 2, -1], [0, 1, 2]], dtype=np.int32)
    scores = np.array([[0.5, 0.25, np.nan], [3.0, 2.0, 1.0]], dtype=np.float32)
    cache.write_user_lists(version, ["alice", "bob"], items, scores, ttl=ttl)


def message(version):
    return {"version": version, "created_at": "2026-11-26T10:00:00Z", "num_users": 2, "num_items": 3}


def test_pack_round_trip_and_size():
    items, scores = np.arange(100, dtype=np.int32), np.linspace(1, 0, 100, dtype=np.float32)
    blob = pack_list(items, scores)
    assert len(blob) == 800
    got_items, got_scores = unpack_list(blob)
    np.testing.assert_array_equal(got_items, items)
    np.testing.assert_array_equal(got_scores, scores)
    with pytest.raises(ValueError, match="not a multiple"):
        unpack_list(blob[:-1])


def test_every_key_is_under_the_prefix(cache, redis_client):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    cache.record_training_outcome({"status": "published"})
    assert cache.training_lock(10).acquire()
    keys = {k.decode() for k in redis_client.scan_iter("*")}
    assert keys and all(k.startswith(TEST_REDIS_PREFIX) for k in keys)


def test_staged_version_is_invisible_and_expires_until_published(cache, redis_client):
    stage(cache, "v1", ttl=60)
    assert cache.current_version() is None
    assert not cache.is_published("v1")
    assert 0 < redis_client.ttl(cache.recs_key("v1")) <= 60
    assert 0 < redis_client.ttl(cache.meta_key("v1")) <= 60

    assert cache.publish_version("v1", message("v1"), retain_seconds=30) is None
    assert cache.current_version() == "v1"
    assert cache.is_published("v1")
    assert redis_client.ttl(cache.recs_key("v1")) == -1  # persisted
    assert redis_client.ttl(cache.meta_key("v1")) == -1


def test_lists_round_trip_without_padding(cache):
    stage(cache, "v1")
    items, scores = cache.user_list("v1", "alice")
    assert items.tolist() == [1, 2]
    assert scores.tolist() == [0.5, 0.25]
    assert cache.user_list("v1", "bob")[0].tolist() == [0, 1, 2]
    assert cache.user_list("v1", "nobody") is None
    assert cache.popular_list("v1")[0].tolist() == [2, 0, 1]
    assert cache.version_items("v1") == ITEMS
    assert cache.version_items("gone") is None


def test_publish_expires_previous_version_and_announces(cache, redis_client):
    pubsub = cache.subscribe()
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    stage(cache, "v2")
    assert cache.publish_version("v2", message("v2"), retain_seconds=30) == "v1"
    assert cache.current_version() == "v2"
    assert 0 < redis_client.ttl(cache.recs_key("v1")) <= 30
    assert 0 < redis_client.ttl(cache.meta_key("v1")) <= 30
    assert redis_client.ttl(cache.recs_key("v2")) == -1

    updates = []
    deadline = time.monotonic() + 5
    while len(updates) < 2 and time.monotonic() < deadline:
        update = RecsCache.parse_update(pubsub.get_message(timeout=0.5))
        if update:
            updates.append(update)
    pubsub.close()
    assert [u["version"] for u in updates] == ["v1", "v2"]
    assert set(updates[0]) == {"version", "created_at", "num_users", "num_items"}


def test_subscribe_returns_only_once_redis_has_confirmed(cache, redis_client):
    pubsub = cache.subscribe()
    try:
        assert redis_client.pubsub_numsub(cache.channel) == [(cache.channel.encode(), 1)]
        redis_client.publish(cache.channel, json.dumps(message("v1")))
        assert RecsCache.parse_update(pubsub.get_message(timeout=2)) == message("v1")
    finally:
        pubsub.close()


def test_subscribe_gives_up_when_redis_does_not_confirm(private_redis):
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.client_pause(3000, all=True)  # Redis takes SUBSCRIBE but answers nothing for 3 s
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError, match="did not confirm"):
            RecsCache(client, TEST_REDIS_PREFIX).subscribe(timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        client.close()


def test_republishing_the_current_version_does_not_expire_it(cache, redis_client):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    assert redis_client.ttl(cache.recs_key("v1")) == -1


def test_publishing_an_unstaged_version_is_refused_and_keeps_the_current(cache):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    with pytest.raises(redis.ResponseError, match="not staged"):
        cache.publish_version("v9", message("v9"), retain_seconds=30)
    assert cache.current_version() == "v1"


def test_training_lock_is_exclusive_and_expires(cache):
    first = cache.training_lock(timeout=1)
    assert first.acquire()
    assert not cache.training_lock(timeout=1).acquire()
    time.sleep(1.2)  # the holder "died": its TTL frees the lock
    assert cache.training_lock(timeout=1).acquire()


def test_training_outcome_round_trip(cache):
    assert cache.last_training_outcome() is None
    cache.record_training_outcome({"status": "rejected", "reason": "worse than popularity"})
    assert cache.last_training_outcome() == {"status": "rejected", "reason": "worse than popularity"}


@pytest.mark.parametrize(
    "msg",
    [
        None,
        {"type": "subscribe", "data": 1},
        {"type": "message", "data": b"not json"},
        {"type": "message", "data": json.dumps({"version": "v1"})},
        {"type": "message", "data": json.dumps(["v1"])},
    ],
)
def test_parse_update_ignores_malformed_messages(msg):
    assert RecsCache.parse_update(msg) is None
