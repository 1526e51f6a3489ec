"""The worker's LiveMirror, kept by the reloader thread from the live channels of real Redis.

It must never answer with what Redis no longer says: an event empties the user's entry within a second, a
read that raced an event is not kept, a lost subscription forgets everything. And a page it answers is the
page Redis would have given.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from app.feed.mirror import KnownExclusions, LiveMirror
from app.model_holder import ModelHolder
from app.reloader import ModelReloader
from common.recs_cache import RecsCache
from testing.environment import REDIS_PREFIX
from testing.factories import random_model
from testing.polling import poll
from testing.service import publish


def known(seen=None):
    return KnownExclusions(1, seen or {}, {})


@pytest.fixture
def follow(redis_url):
    """Starts a reloader keeping a mirror on ``url`` (default: the test database); stopped afterwards."""
    started = []

    def run(mirror, holder, url=redis_url):
        reloader = ModelReloader(holder, RecsCache(redis.Redis.from_url(url), REDIS_PREFIX), live=mirror)
        reloader.start()
        started.append(reloader)
        assert poll(lambda: mirror.generation is not None, 5.0), "the mirror never connected"
        return reloader

    yield run
    for reloader in started:
        reloader.stop()
        reloader.close()


def test_an_event_drops_the_users_entry_and_a_refresh_moves_the_generation(cache, model_dir, follow):
    publish(cache, model_dir, random_model(seed=1), top_k=5)
    mirror = LiveMirror(10)
    follow(mirror, ModelHolder(str(model_dir), cache.current_version))
    assert mirror.generation == 0
    for user in ("u1", "u2"):
        mirror.remember(mirror.epoch, user, known(), (False, None))
    mirror.remember(mirror.epoch, "newbie", known(), (True, b"[]"))
    assert mirror.exclusions("u1") is not None and mirror.live_user("newbie") == (True, b"[]")

    cache.record_events([("u1", "p1", "like")], cap=10, ttl=60)
    reported = time.monotonic()
    assert poll(lambda: mirror.exclusions("u1") is None, 1.0)
    assert time.monotonic() - reported < 1.0
    assert mirror.exclusions("u2") is not None  # only the users the batch names

    cache.publish_live([], {}, "v", {}, retain_seconds=60, max_posts=10, max_users=10)
    assert poll(lambda: mirror.generation == 1, 1.0)
    assert mirror.live_user("newbie") == (False, None)  # a new generation may change live users


def test_a_read_that_raced_an_event_is_not_kept(cache, model_dir, follow):
    publish(cache, model_dir, random_model(seed=1), top_k=5)
    mirror = LiveMirror(10)
    follow(mirror, ModelHolder(str(model_dir), cache.current_version))
    epoch = mirror.epoch  # a page starts reading Redis ...
    cache.record_events([("u1", "p1", "like")], cap=10, ttl=60)  # ... an event arrives meanwhile ...
    assert poll(lambda: mirror.epoch != epoch, 1.0)
    mirror.remember(epoch, "u1", known(), (False, None))  # ... and the page's (stale) read comes back
    assert mirror.exclusions("u1") is None


def test_a_lost_subscription_forgets_everything_until_it_is_back(private_redis, tmp_path, follow):
    cache = RecsCache(redis.Redis.from_url(private_redis.url), REDIS_PREFIX)
    model_dir = tmp_path / "models"
    publish(cache, model_dir, random_model(seed=1), top_k=5)
    mirror = LiveMirror(10)
    follow(mirror, ModelHolder(str(model_dir), lambda: None), url=private_redis.url)
    mirror.remember(mirror.epoch, "u1", known({"p": 1}), (False, None))
    private_redis.stop()
    assert poll(lambda: mirror.generation is None, 15.0)
    assert mirror.exclusions("u1") is None
    mirror.remember(mirror.epoch, "u1", known(), (False, None))  # not kept while deaf
    assert mirror.exclusions("u1") is None
    private_redis.start()
    assert poll(lambda: mirror.generation is not None, 40.0)
    cache.client.close()


def test_pages_from_the_mirror_are_the_pages_redis_gives_and_events_still_count_at_once(
    app, client, cache, model_dir, follow
):
    model = random_model(num_users=10, num_items=40, seed=2)
    publish(cache, model_dir, model, top_k=20)
    runtime = app.extensions["recsvc"]
    runtime.holder.reload()
    follow(runtime.feed.mirror, runtime.holder)
    cache.record_events([("user-1", model.item_ids[0], "view")], cap=10, ttl=60)
    assert poll(lambda: runtime.feed.mirror.epoch > 1, 1.0)

    first = client.get("/recommendations/user-1?limit=5").get_json()  # reads Redis, fills the mirror
    assert runtime.feed.mirror.exclusions("user-1") is not None
    cache.client.delete(cache.seen_key("user-1"))  # behind the mirror's back: no event announces it
    second = client.get("/recommendations/user-1?limit=5").get_json()
    assert second == first  # answered from the mirror: same posts, same token
    pinned = client.get(f"/recommendations/user-1?limit=5&offset=5&token={first['token']}").get_json()
    assert len(pinned["recommendations"]) == 5 and not pinned["version_fallback"]

    top = first["recommendations"][0]["post_id"]
    cache.record_events([("user-1", top, "like")], cap=10, ttl=60)
    assert poll(
        lambda: client.get("/recommendations/user-1?limit=5").get_json()["recommendations"][0]["post_id"] != top, 1.0
    )


def test_a_pin_that_cannot_be_honoured_says_so_even_when_the_current_feed_is_kept(
    app, client, cache, model_dir, follow
):
    """The fallback page resolves to the feed the worker already keeps for the current state: it must still say
    ``version_fallback``, and the feed's first page must not."""
    publish(cache, model_dir, random_model(num_users=10, num_items=40, seed=2), top_k=20)
    runtime = app.extensions["recsvc"]
    runtime.holder.reload()
    follow(runtime.feed.mirror, runtime.holder)
    first = client.get("/recommendations/user-1?limit=5").get_json()
    assert client.get("/recommendations/user-1?limit=5").get_json() == first  # the mirror and the kept feed answer
    gone = "20200101T000000Z-00000000.0.1"  # a version that was never published
    fallback = client.get(f"/recommendations/user-1?limit=5&token={gone}").get_json()
    assert fallback["version_fallback"] and fallback["token"] == first["token"]
    assert fallback["recommendations"] == first["recommendations"]
    assert client.get("/recommendations/user-1?limit=5").get_json() == first


def test_a_first_page_takes_the_generation_from_the_mirror_without_reading_it(app, client, cache, model_dir, follow):
    """While the mirror listens it knows the generation, so a page's read leaves it out (on a cluster that
    spares a round trip): a generation written behind the mirror's back is not served until it is announced."""
    publish(cache, model_dir, random_model(num_users=10, num_items=40, seed=2), top_k=20)
    runtime = app.extensions["recsvc"]
    runtime.holder.reload()
    follow(runtime.feed.mirror, runtime.holder)
    cache.client.set(cache.live_pool_key(7), json.dumps([["fresh-1", ["music"], "c0", time.time()]]))
    cache.client.hset(cache.live_state_key, "generation", 7)  # no announcement
    page = client.get("/recommendations/user-1?limit=5").get_json()
    assert page["token"].split(".")[1] == "0" and runtime.feed.mirror.exclusions("user-1") is not None
    cache.publish_live([], {}, "v", {}, retain_seconds=60, max_posts=10, max_users=10)  # generation 8, announced
    assert poll(lambda: client.get("/recommendations/user-2?limit=5").get_json()["token"].split(".")[1] == "8", 1.0)


def test_a_deployment_on_another_database_of_the_server_is_not_heard(private_redis, tmp_path, follow):
    """Pub/sub channels are the server's, not a database's: one prefix on two databases is two deployments."""
    ours_url, theirs_url = private_redis.url, private_redis.url.removesuffix("/0") + "/1"
    ours, theirs = (RecsCache(redis.Redis.from_url(url), REDIS_PREFIX) for url in (ours_url, theirs_url))
    model_dir = tmp_path / "models"
    publish(ours, model_dir, random_model(seed=1), top_k=5)
    mirror = LiveMirror(10)
    follow(mirror, ModelHolder(str(model_dir), ours.current_version), url=ours_url)
    mirror.remember(mirror.epoch, "u1", known(), (False, None))
    for _ in range(3):
        theirs.publish_live([], {}, "v", {}, retain_seconds=60, max_posts=10, max_users=10)
    theirs.record_events([("u1", "p1", "view")], cap=10, ttl=60)
    ours.publish_live([], {}, "v", {}, retain_seconds=60, max_posts=10, max_users=10)  # heard after theirs
    assert poll(lambda: (mirror.generation or 0) >= 1, 2.0)
    assert mirror.generation == 1  # not their 3: a page would look for a pool this database never had
    assert mirror.exclusions("u1") is not None  # their user's event is not ours
    for cache in (ours, theirs):
        cache.client.close()
