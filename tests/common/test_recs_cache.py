"""RecsCache against the real Redis: packing, staging, the atomic publish, pub/sub, the lock, the outcome.

Every test that uses Redis runs twice: on one Redis server (the default) and on a local Redis Cluster of three
masters (``REDIS_URL=redis+cluster://...``), where the key layout must spread a version over every shard and
every script must touch one slot only.
"""

import json
import os
import select
import signal
import socket
import threading
import time

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from common.recs_cache import (
    LIVE_USER_HISTORY,
    RECS_BUCKETS,
    SERVED_PAGES_PER_CALL,
    RecsCache,
    ServedEntry,
    cut_exclusions,
    live_user_at,
    pack_list,
    parse_users_message,
    unpack_list,
    user_bucket,
)
from common.redis_clients import REQUEST_TIMEOUT, request_client, worker_client
from testing.environment import REDIS_PREFIX
from testing.service import listed, popular_listed, version_items

ITEMS = [("p0", ("music",), "c0"), ("p1", ("dance", "mv"), "c1"), ("p2", (), "c0")]


@pytest.fixture(params=["single", "cluster"])
def redis_client(request, redis_url):
    """A client of the test Redis database, or of the session's local cluster (flushed around the test)."""
    if request.param == "single":
        client = redis.Redis.from_url(redis_url)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client = worker_client(cluster.url)
    yield client
    client.close()
    if request.param == "cluster":
        cluster.flush()


def node_clients(client) -> list[redis.Redis]:
    """A client of each node of a cluster (each answers for itself only), or ``client`` itself on one server."""
    if not isinstance(client, RedisCluster):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_nodes()]


def subscribers(client, *channels):
    """channel -> subscribers, over every node (a cluster node counts only its own connections)."""
    counts = dict.fromkeys((channel.encode() for channel in channels), 0)
    for node in node_clients(client):
        for channel, count in node.pubsub_numsub(*channels):
            counts[channel] += count
    return counts


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


@pytest.mark.parametrize(("items", "num_items", "valid"), [
    ([0, 5, 99], 100, True),
    ([], 1, True),
    ([0, 100], 100, False),  # past the model's posts
    ([3, -1], 100, False),  # padding, which the writer never stores
    ([-(2**31)], 2**31 - 1, False),
])  # fmt: skip
def test_unpack_checks_the_indices_against_the_models_posts(items, num_items, valid):
    blob = pack_list(np.array(items, dtype=np.int32), np.zeros(len(items), dtype=np.float32))
    assert unpack_list(blob)[0].tolist() == items  # without num_items, as stored
    if valid:
        assert unpack_list(blob, num_items)[0].tolist() == items
    else:
        with pytest.raises(ValueError, match=f"outside 0..{num_items - 1}"):
            unpack_list(blob, num_items)


def test_every_key_is_under_the_prefix(cache, redis_client):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    cache.record_training_outcome({"status": "published"})
    assert cache.training_lock(10).acquire()
    keys = {k.decode() for k in redis_client.scan_iter("*")}
    assert keys and all(k.startswith(REDIS_PREFIX) for k in keys)


def test_staged_version_is_invisible_and_expires_until_published(cache, redis_client):
    stage(cache, "v1", ttl=60)
    assert cache.current_version() is None
    assert not cache.is_published("v1")
    assert 0 < redis_client.ttl(cache.recs_key("v1", "alice")) <= 60
    assert 0 < redis_client.ttl(cache.meta_key("v1")) <= 60

    assert cache.publish_version("v1", message("v1"), retain_seconds=30) is None
    assert cache.current_version() == "v1"
    assert cache.is_published("v1")
    assert redis_client.ttl(cache.recs_key("v1", "alice")) == -1  # persisted
    assert redis_client.ttl(cache.recs_key("v1", "bob")) == -1
    assert redis_client.ttl(cache.meta_key("v1")) == -1


def forward_until_cut(listener: socket.socket, server_port: int, limit: int) -> tuple[str, int]:
    """Proxy one client of ``listener`` to the Redis server, forwarding only the first ``limit`` bytes the client
    sends (replies pass freely), then close both sides: a writer that died at that byte. Returns the address
    the server saw the connection come from."""
    client, _ = listener.accept()
    listener.close()  # a reconnecting client is refused: the writer is dead
    upstream = socket.create_connection(("127.0.0.1", server_port))
    host, port = upstream.getsockname()
    address = f"{host}:{port}"
    forwarded = 0
    with client, upstream:
        while forwarded < limit:
            readable, _, _ = select.select([client, upstream], [], [], 10)
            data = readable and readable[0].recv(65536)
            if not data:
                break
            if readable[0] is upstream:
                client.sendall(data)
            else:
                upstream.sendall(data[: limit - forwarded])
                forwarded += len(data)
    return address, forwarded


def write_through_cut(server: redis.Redis, server_port: int, limit: int) -> int:
    """Stage a version and write its lists through a connection cut after ``limit`` bytes; wait until the server
    has run what reached it. Returns how many bytes the writer sent in all."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = redis.Redis(port=listener.getsockname()[1], retry=Retry(NoBackoff(), 0))
    outcome = {}
    proxy = threading.Thread(target=lambda: outcome.update(cut=forward_until_cut(listener, server_port, limit)))
    proxy.start()
    try:
        stage(RecsCache(client, REDIS_PREFIX), "v1", ttl=60)
    except redis.exceptions.ConnectionError:
        pass
    finally:
        client.close()
        proxy.join()
    address, forwarded = outcome["cut"]
    deadline = time.monotonic() + 5
    while any(entry["addr"] == address for entry in server.client_list()):  # gone once it ran what it received
        assert time.monotonic() < deadline, "the server kept the cut connection"
        time.sleep(0.005)
    return forwarded


def test_a_writer_dying_at_any_byte_leaves_no_key_that_never_expires(private_redis):
    """A training worker killed half-way through staging a version must leave nothing behind for good: every key
    it wrote carries the staging TTL, whichever byte of the pipeline the connection was cut at."""
    server = redis.Redis.from_url(private_redis.url)
    total = write_through_cut(server, private_redis.port, limit=1 << 30)
    complete = len(server.keys("*"))  # the metadata and the users' buckets
    assert complete >= 2
    written_at = set()
    for limit in [*range(0, total, 7), total]:  # an EXPIRE command is longer than 7 bytes
        server.flushall()
        write_through_cut(server, private_redis.port, limit)
        keys = server.keys("*")
        assert all(0 < server.ttl(key) <= 60 for key in keys), (limit, {k: server.ttl(k) for k in keys})
        written_at.add(len(keys))
    assert {0, complete} <= written_at  # cut before anything landed, and once everything had
    server.close()


def test_lists_round_trip_without_padding(cache):
    stage(cache, "v1")
    items, scores = listed(cache, "v1", "alice")
    assert items.tolist() == [1, 2]
    assert scores.tolist() == [0.5, 0.25]
    assert listed(cache, "v1", "bob")[0].tolist() == [0, 1, 2]
    assert listed(cache, "v1", "nobody") is None
    assert popular_listed(cache, "v1")[0].tolist() == [2, 0, 1]
    assert version_items(cache, "v1") == ITEMS
    assert version_items(cache, "gone") is None


def test_publish_expires_previous_version_and_announces(cache, redis_client):
    pubsub = cache.subscribe()
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    stage(cache, "v2")
    assert cache.publish_version("v2", message("v2"), retain_seconds=30) == "v1"
    assert cache.current_version() == "v2"
    assert 0 < redis_client.ttl(cache.recs_key("v1", "alice")) <= 30
    assert 0 < redis_client.ttl(cache.recs_key("v1", "bob")) <= 30
    assert 0 < redis_client.ttl(cache.meta_key("v1")) <= 30
    assert redis_client.ttl(cache.recs_key("v2", "alice")) == -1
    assert redis_client.smembers(cache.lists_key) == {b"v2"}

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
        assert subscribers(redis_client, cache.channel) == {cache.channel.encode(): 1}
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
            RecsCache(client, REDIS_PREFIX).subscribe(timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        client.close()


def test_republishing_the_current_version_does_not_expire_it(cache, redis_client):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    assert redis_client.ttl(cache.recs_key("v1", "alice")) == -1


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


# --- the live feed (issue #11) ---

POOL = [("n2", ("music",), "c0", 1_800_000_002.0), ("n1", (), "c1", 1_800_000_001.0)]


def publish_live(cache, pool=POOL, users=None, retain=30, max_posts=10, max_users=10):
    return cache.publish_live(
        pool,
        users or {},
        "v1",
        {"posts": "2026-11-29T06:00:00Z"},
        retain_seconds=retain,
        max_posts=max_posts,
        max_users=max_users,
    )


def test_live_publish_makes_a_new_generation_and_expires_the_previous_pool(cache, redis_client):
    assert cache.live_state() is None
    assert cache.live_pool(0) == []
    pubsub = redis_client.pubsub()
    pubsub.subscribe(cache.live_channel)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    assert publish_live(cache) == 1
    state = cache.live_state()
    assert (state.generation, state.model_version) == (1, "v1")
    assert state.watermarks == {"posts": "2026-11-29T06:00:00Z"}
    assert abs(state.updated_at - cache.redis_time() / 1e6) < 5
    assert cache.live_pool(1) == POOL
    assert redis_client.ttl(cache.live_pool_key(1)) == -1

    assert publish_live(cache, pool=POOL[:1]) == 2
    assert cache.live_pool(2) == POOL[:1]
    assert cache.live_pool(1) == POOL  # retained for pinned scrolls ...
    assert 0 < redis_client.ttl(cache.live_pool_key(1)) <= 30  # ... for a while
    assert cache.live_pool(7) is None
    messages = [json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(2)]
    pubsub.close()
    assert messages == [{"generation": 1, "model_version": "v1"}, {"generation": 2, "model_version": "v1"}]


def test_live_pool_keeps_the_newest_max_posts(cache):
    publish_live(cache, max_posts=1)
    assert cache.live_pool(1) == POOL[:1]


def test_live_publish_with_a_stale_generation_is_refused_whole(cache, redis_client):
    publish_live(cache)
    redis_client.hset(cache.live_state_key, "generation", 5)  # another writer got there in between
    script_args = cache._publish_live  # the script refuses whatever the Python side read
    with pytest.raises(redis.ResponseError, match="live generation is 5, not 1"):
        script_args(
            keys=[
                cache.live_state_key,
                cache.live_pool_key(2),
                cache.live_pool_key(1),
                cache.live_users_key,
                cache.live_users_order_key,
                cache.live_users_dropped_key,
            ],
            args=[1, "[]", "v2", "{}", 30, 10, cache.live_channel, "u9", "[]", "0"],
        )
    assert cache.live_pool(2) is None
    assert cache.live_user_ids() == []
    assert cache.live_state().model_version == "v1"


def test_live_users_keep_the_features_of_each_generation(cache, redis_client):
    publish_live(cache, users={"u1": {"role": "student", "follows": ["c0"]}})
    publish_live(cache, users={"u1": {"role": "student", "follows": ["c0", "c1"]}, "u2": {"role": None, "follows": []}})
    assert cache.live_user("u1", 0) is None  # not live yet at generation 0
    assert cache.live_user("u1", 1) == {"role": "student", "follows": ["c0"]}
    assert cache.live_user("u1", 2) == {"role": "student", "follows": ["c0", "c1"]}
    assert cache.live_user("u2", 1) is None
    assert sorted(cache.live_user_ids()) == ["u1", "u2"]

    publish_live(cache, users={"u1": None, "never-live": None})  # a new model knows u1
    assert cache.live_user("u1", 3) is None
    assert cache.live_user("u1", 2) == {"role": "student", "follows": ["c0", "c1"]}  # pinned scrolls still rank
    assert sorted(cache.live_user_ids()) == ["u1", "u2"]
    assert redis_client.zscore(cache.live_users_dropped_key, "u1") is not None


def test_dropped_live_users_go_after_the_retention(cache):
    publish_live(cache, users={"u1": {"role": None, "follows": ["c0"]}})
    publish_live(cache, users={"u1": None}, retain=1)
    time.sleep(1.1)
    publish_live(cache, retain=1)
    assert cache.live_user_ids() == []


def test_live_users_are_capped_oldest_first(cache):
    publish_live(cache, users={"u1": {"role": None, "follows": ["c0"]}})
    time.sleep(0.01)
    publish_live(cache, users={"u2": {"role": None, "follows": []}, "u3": {"role": "x", "follows": []}}, max_users=2)
    assert sorted(cache.live_user_ids()) == ["u2", "u3"]


def test_live_user_history_is_bounded(cache):
    for n in range(LIVE_USER_HISTORY + 2):
        publish_live(cache, users={"u1": {"role": str(n), "follows": []}})
    assert len(json.loads(cache.client.hget(cache.live_users_key, "u1"))) == LIVE_USER_HISTORY
    assert cache.live_user("u1", 1) is None  # too old to remember: as if it was not live then
    assert cache.live_user("u1", LIVE_USER_HISTORY + 2) == {"role": str(LIVE_USER_HISTORY + 1), "follows": []}


def test_events_are_recorded_by_arrival_and_cut_at_a_cutoff(cache, redis_client):
    before = cache.redis_time()
    arrival = cache.record_events(
        [("u1", "p1", "view"), ("u1", "p2", "like"), ("u1", "p3", "impression"), ("u2", "p1", "comment")],
        cap=10,
        ttl=60,
    )
    assert before <= arrival <= cache.redis_time()
    assert cache.exclusions("u1") == ({"p1": arrival, "p2": arrival}, {"p3": arrival})
    assert cache.exclusions("u2") == ({"p1": arrival}, {})
    assert 0 < redis_client.ttl(cache.seen_key("u1")) <= 60

    later = cache.record_events([("u1", "p4", "view"), ("u1", "p1", "like")], cap=10, ttl=60)
    assert later > arrival
    seen, _ = cache.exclusions("u1")
    assert seen == {"p1": arrival, "p2": arrival, "p4": later}  # p1 keeps its first arrival
    assert cache.exclusions("u1", cutoff=arrival) == ({"p1": arrival, "p2": arrival}, {"p3": arrival})
    assert cache.exclusions("u1", cutoff=arrival - 1) == ({}, {})


def test_events_keep_the_newest_cap_per_user(cache):
    cache.record_events([("u1", "old", "view")], cap=2, ttl=60)
    cache.record_events([("u1", "a", "view"), ("u1", "b", "view")], cap=2, ttl=60)
    assert set(cache.exclusions("u1")[0]) <= {"old", "a", "b"}
    assert len(cache.exclusions("u1")[0]) == 2
    assert "old" not in cache.exclusions("u1")[0]


def test_event_batches_announce_their_users_and_subscribers_hear_every_live_channel(cache, redis_client):
    pubsub = cache.subscribe(live=True)
    try:
        assert subscribers(redis_client, cache.channel, cache.live_channel, cache.events_channel) == {
            c.encode(): 1 for c in (cache.channel, cache.live_channel, cache.events_channel)
        }
        cache.record_events([("u1", "p1", "view"), ("u2", "p1", "impression"), ("u1", "p2", "like")], cap=10, ttl=60)
        publish_live(cache)
        # On a cluster the two messages reach the subscriber's node by different routes: either may come first,
        # and one an earlier test published on another node may still arrive over the cluster's bus (CI saw it).
        events = live = None
        deadline = time.monotonic() + 5
        while (events is None or live is None) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message is None:
                continue
            if message["channel"] == cache.events_channel.encode() and parse_users_message(message) == ["u1", "u2"]:
                events = message
            elif message["channel"] == cache.live_channel.encode() and json.loads(message["data"]) == {
                "generation": 1,
                "model_version": "v1",
            }:
                live = message
    finally:
        pubsub.close()
    assert events is not None, "the batch's users were never announced"
    assert live is not None, "the new live generation was never announced"
    assert parse_users_message({"data": b"not json"}) is None


def test_cut_exclusions_keeps_what_arrived_by_the_cutoff():
    posts = {"a": 5, "b": 7}
    assert cut_exclusions(posts, 7) is posts
    assert cut_exclusions(posts, 6) == {"a": 5}


def test_an_event_batch_with_an_unknown_type_records_nothing(cache, redis_client):
    with pytest.raises(ValueError, match="unknown event type 'share'"):
        cache.record_events([("u1", "p1", "view"), ("u1", "p2", "share")], cap=10, ttl=60)
    assert redis_client.exists(cache.seen_key("u1")) == 0


@pytest.mark.parametrize("where", ["single", "single, RESP2", "cluster"])
def test_user_reads_is_one_consistent_snapshot(where, request):
    """The same reads on one server (a transaction, in either protocol's replies) and on a cluster (a script on
    the user's slot, then the {ctl} slot)."""
    server = request.getfixturevalue("redis_cluster" if where == "cluster" else "private_redis")
    client = worker_client(server.url + ("?protocol=2" if "RESP2" in where else ""))
    try:
        check_one_consistent_snapshot(RecsCache(client, REDIS_PREFIX))
    finally:
        if where == "cluster":
            server.flush()
        client.close()


def check_one_consistent_snapshot(cache: RecsCache) -> None:
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    publish_live(cache, users={"new": {"role": None, "follows": ["c0"]}})
    arrival = cache.record_events([("alice", "p0", "view"), ("alice", "p1", "impression")], cap=10, ttl=60)
    reads = cache.user_reads("alice", list_version="v1", check_version="v1")
    assert reads.now >= arrival
    assert reads.generation == 1
    assert unpack_list(reads.list_blob)[0].tolist() == [1, 2]
    assert (reads.live_user, reads.published) == (None, True)
    assert (reads.seen, reads.shown) == ({"p0": arrival}, {"p1": arrival})
    bare = cache.user_reads("new", live_user=True, check_version="gone")
    assert (bare.list_blob, bare.published, bare.seen) == (None, False, {})
    assert live_user_at(bare.live_user, bare.generation) == {"role": None, "follows": ["c0"]}


def hget_calls(client) -> int:
    """HGET commands served so far (scripts' included), over every node of a cluster."""
    return sum(node.info("commandstats").get("cmdstat_hget", {}).get("calls", 0) for node in node_clients(client))


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_user_reads_leave_the_generation_to_a_worker_that_knows_it(where, request):
    """A web worker's live mirror knows the generation: its reads skip it, and on a cluster the {ctl} slot's
    round trip with it. The test's own servers: the command counts are not shared with other tests."""
    server = request.getfixturevalue("private_redis" if where == "single" else "redis_cluster")
    client = worker_client(server.url)
    cache = RecsCache(client, REDIS_PREFIX)
    try:
        stage(cache, "v1")
        cache.publish_version("v1", message("v1"), retain_seconds=30)
        publish_live(cache, users={})
        before = hget_calls(client)
        reads = cache.user_reads("alice", list_version="v1", generation=False)
        assert reads.generation is None and unpack_list(reads.list_blob)[0].tolist() == [1, 2]
        assert hget_calls(client) - before == 1  # the list alone
        assert cache.user_reads("alice", list_version="v1").generation == 1
        assert hget_calls(client) - before == 3  # the list again, and the generation
    finally:
        if where == "cluster":
            server.flush()
        client.close()


def test_a_read_redis_refuses_or_fails_raises_and_leaves_the_connection_in_step(private_redis):
    """Every reply of the hot path's transaction is read, whatever fails: a command refused when queued (here
    an ACL without ZRANGE: EXECABORT) and one failing as it runs (a key of the wrong type) raise Redis's error,
    and the next read on the same connection gets its own replies, not those left over."""
    admin = redis.Redis.from_url(private_redis.url)
    everything = {"keys": ["*"], "channels": ["*"]}
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], commands=["+@all", "-zrange"], **everything)
    limited_client = redis.Redis(host="127.0.0.1", port=private_redis.port, username="reader", password="pw")
    limited = RecsCache(limited_client, REDIS_PREFIX)
    with pytest.raises(redis.ResponseError, match="NOPERM|zrange"):
        limited.user_reads("alice")
    admin.acl_setuser("reader", enabled=True, commands=["+zrange"])
    arrival = limited.record_events([("alice", "p0", "view")], cap=10, ttl=60)
    assert limited.user_reads("alice").seen == {"p0": arrival}
    cache = RecsCache(redis.Redis.from_url(private_redis.url), REDIS_PREFIX)
    admin.set(cache.shown_key("bob"), "not a zset")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        cache.user_reads("bob")
    before = connection_id(cache)
    assert cache.user_reads("alice").seen == {"p0": arrival} and connection_id(cache) == before


def connection_id(cache: RecsCache) -> int:
    """The Redis client id of the connection this thread's hot-path reads go through."""
    return cache._transaction_on_own_connection([("CLIENT", "ID")])[0]


def test_user_reads_keeps_a_connection_per_thread_and_per_process(private_redis):
    """The hot path's read holds one connection per thread (no pool checkout per call), never shared with
    another thread or with a forked child, and it reconnects to a restarted server."""
    cache = RecsCache(request_client(private_redis.url), REDIS_PREFIX)
    arrival = cache.record_events([("alice", "p0", "view")], cap=10, ttl=60)
    assert cache.user_reads("alice").seen == {"p0": arrival}
    main_id = connection_id(cache)
    assert connection_id(cache) == main_id  # kept, not checked out again
    in_thread = []
    worker = threading.Thread(target=lambda: in_thread.append((cache.user_reads("alice").seen, connection_id(cache))))
    worker.start()
    worker.join()
    assert in_thread[0][0] == {"p0": arrival} and in_thread[0][1] != main_id
    child = os.fork()
    if child == 0:  # the child must read through a connection of its own
        ok = cache.user_reads("alice").seen == {"p0": arrival} and connection_id(cache) != main_id
        os._exit(0 if ok else 1)
    assert os.waitpid(child, 0)[1] == 0
    assert cache.user_reads("alice").seen == {"p0": arrival} and connection_id(cache) == main_id
    private_redis.stop()
    private_redis.start()  # an empty server: the held connection is dead
    assert cache.user_reads("alice").seen == {}


def test_user_reads_on_a_server_that_stops_answering_times_out_then_recovers(private_redis):
    """The hot path's read keeps redis-py's timeout and its one retry: a hung server costs a page two request
    timeouts and a redis-py TimeoutError (the circuit breaker's signal), and the next read after it answers
    again goes through a new connection."""
    cache = RecsCache(request_client(private_redis.url), REDIS_PREFIX)
    arrival = cache.record_events([("alice", "p0", "view")], cap=10, ttl=60)
    first = connection_id(cache)
    os.kill(private_redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            cache.user_reads("alice")
        waited = time.monotonic() - started
    finally:
        os.kill(private_redis.pid, signal.SIGCONT)
    assert 2 * REQUEST_TIMEOUT <= waited < 2 * REQUEST_TIMEOUT + 0.5  # two attempts, each cut at the timeout
    assert cache.user_reads("alice").seen == {"p0": arrival}
    assert connection_id(cache) != first


def test_every_live_key_is_under_the_prefix(cache, redis_client):
    publish_live(cache, users={"u1": {"role": None, "follows": []}})
    cache.record_events([("u1", "p1", "view"), ("u1", "p2", "impression")], cap=10, ttl=60)
    keys = {k.decode() for k in redis_client.scan_iter("*")}
    assert len(keys) == 6 and all(k.startswith(REDIS_PREFIX) for k in keys)


# --- the key layout (issue #14): buckets, hash tags, a cluster ---


def test_a_versions_lists_spread_over_buckets_and_every_shard(cache, redis_client):
    users = [f"user-{n}" for n in range(2000)]
    items = np.tile(np.array([[0, 1, 2]], dtype=np.int32), (len(users), 1))
    scores = np.tile(np.array([[3.0, 2.0, 1.0]], dtype=np.float32), (len(users), 1))
    stage(cache, "v1")
    cache.write_user_lists("v1", users, items, scores, ttl=60)
    cache.publish_version("v1", message("v1"), retain_seconds=30)

    sizes = [redis_client.hlen(key) for key in cache.recs_keys("v1")]
    assert len(sizes) == RECS_BUCKETS
    assert sum(sizes) == len(users) + 2  # with alice and bob of stage()
    assert max(sizes) < len(users) / 10  # no key holds (a large part of) a version
    assert all(listed(cache, "v1", user)[0].tolist() == [0, 1, 2] for user in users[:50])
    if isinstance(redis_client, RedisCluster):
        per_node = [
            len(list(redis_client.get_redis_connection(node).scan_iter(f"{REDIS_PREFIX}recs:v1:*", count=1000)))
            for node in redis_client.get_primaries()
        ]
        assert len(per_node) == 3 and min(per_node) > RECS_BUCKETS / 6  # each shard holds about a third


def test_a_users_keys_share_one_slot_and_the_global_keys_another(cache):
    from redis.crc import key_slot

    def slot(key):
        return key_slot(key.encode())

    for user in ("alice", "bob", "user-123456"):
        assert slot(cache.seen_key(user)) == slot(cache.shown_key(user)) == slot(cache.recs_key("v1", user))
        assert cache.recs_key("v1", user) == cache.recs_bucket_key("v1", user_bucket(user))
        assert slot(cache.recs_key("v1", user)) == slot(cache.recs_key("v2", user))
    global_keys = [cache.current_key, cache.meta_key("v1"), cache.lists_key, cache.live_state_key]
    global_keys += [cache.live_pool_key(3), cache.live_users_key, cache.live_users_order_key]
    assert len({slot(key) for key in [*global_keys, cache.live_users_dropped_key]}) == 1
    assert user_bucket("alice") == user_bucket("alice") and 0 <= user_bucket("alice") < RECS_BUCKETS


def test_a_prefix_with_a_brace_is_refused(redis_client):
    with pytest.raises(ValueError, match="brace"):
        RecsCache(redis_client, "recsvc:{x}:")


def test_a_publish_tidies_the_lists_of_a_publish_that_died_half_way(cache, redis_client):
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    stage(cache, "v2")
    redis_client.sadd(cache.lists_key, "v2")  # the publish of v2 died after persisting its buckets ...
    redis_client.persist(cache.recs_key("v2", "alice"))
    stage(cache, "v3")
    cache.publish_version("v3", message("v3"), retain_seconds=30)  # ... the next one gives them an expiry
    assert 0 < redis_client.ttl(cache.recs_key("v2", "alice")) <= 30
    assert 0 < redis_client.ttl(cache.recs_key("v1", "alice")) <= 30
    assert redis_client.ttl(cache.recs_key("v3", "alice")) == -1
    assert redis_client.smembers(cache.lists_key) == {b"v3"}


def test_a_publish_refuses_when_the_current_version_moved_meanwhile(cache, redis_client):
    stage(cache, "v1")
    stage(cache, "v2")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    with pytest.raises(redis.ResponseError, match="moved to v1"):
        cache._publish(keys=[cache.current_key, cache.meta_key("v2")], args=["v2", "", 30, cache.channel, "{}"])
    assert cache.current_version() == "v1"


def test_an_event_batch_of_many_users_lands_in_each_users_slot(cache):
    events = [(f"u{n}", f"p{n}", "view") for n in range(40)] + [("u1", "p9", "impression")]
    arrival = cache.record_events(events, cap=10, ttl=60)
    assert cache.exclusions("u7")[0] == {"p7": pytest.approx(arrival, abs=1_000_000)}
    assert cache.exclusions("u1")[1] == {"p9": pytest.approx(arrival, abs=1_000_000)}


def test_a_publish_reaches_a_subscriber_on_every_node(cache, redis_client):
    clients = node_clients(redis_client)
    pubsubs = []
    for client in clients:
        pubsub = client.pubsub()
        pubsub.subscribe(cache.channel)
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        pubsubs.append(pubsub)
    stage(cache, "v1")
    cache.publish_version("v1", message("v1"), retain_seconds=30)
    try:
        assert [RecsCache.parse_update(p.get_message(timeout=2)) for p in pubsubs] == [message("v1")] * len(clients)
    finally:
        for pubsub in pubsubs:
            pubsub.close()


def test_served_pages_keep_every_field_and_their_order_over_several_commands(cache):
    """More pages than one command carries (SERVED_PAGES_PER_CALL) arrive whole, once each, in order."""
    entries = [
        ServedEntry(f"u{i}", [f"p{i}", f"q{i}"] if i % 7 else [], i % 100 + 1, "exp" if i % 2 else "",
                    "b" if i % 3 else "production", "popular" if i % 5 else "production", f"v{i % 4}", 1000 + i)
        for i in range(SERVED_PAGES_PER_CALL * 2 + 345)
    ]  # fmt: skip
    cache.record_served_pages(entries, maxlen=100_000)
    cache.record_served_pages([], maxlen=100_000)
    pages = cache.read_served_pages(len(entries) + 10)
    assert [ServedEntry(*(getattr(p, f) for f in ServedEntry.__dataclass_fields__)) for p in pages] == entries


def test_served_pages_move_and_locks_pass_between_processes(cache):
    cache.record_served_pages([ServedEntry("u1", ["p1", "p2"], 1, "", "production", "production", "v1", 1)], maxlen=100)
    pages = cache.read_served_pages(10)
    assert [(p.user_id, p.post_ids, p.model_version) for p in pages] == [("u1", ["p1", "p2"], "v1")]
    cache.ack_served_pages([page.entry_id for page in pages])  # one transaction on the stream's slot
    assert cache.served_backlog() == 0
    lock = cache.training_lock(10)
    assert lock.acquire()
    adopted = cache.adopt_training_lock(10, lock.local.token.decode())
    assert adopted.owned()
    adopted.release()
    assert cache.training_lock(10).acquire()
