"""End to end: the live feed's serving side under real gunicorn workers, real Redis, models on disk.

``POST /events`` takes effect within a second on every worker; a scroll pinned with its first page's token
stays exact across a live refresh (published with the writer tasks.refresh uses), a model publish and
reported events, whichever worker answers each page; the scroll goes past the precomputed list; client
exclusions; a bad batch is refused whole.
"""

from __future__ import annotations

import time

import pytest
import requests

from testing.environment import REDIS_PREFIX
from testing.factories import random_model, with_features
from testing.polling import poll
from testing.processes import GunicornServer
from testing.service import publish

TOP_K = 100
NUM_ITEMS = 300
MAX_FEED_POSTS = 250
FAN = "user-4"
TOKEN = "e2e-events-token-0123456789"


@pytest.fixture
def model():
    return with_features(random_model(num_users=30, num_items=NUM_ITEMS, seed=5), FAN)


@pytest.fixture
def server(redis_url, model_dir, cache, model, tmp_path):
    publish(cache, model_dir, model, top_k=TOP_K)
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": REDIS_PREFIX,
        "MODEL_DIR": str(model_dir),
        "TOP_K_RECOMMENDATIONS": str(TOP_K),
        "MAX_PAGE_LIMIT": "100",
        "MAX_FEED_POSTS": str(MAX_FEED_POSTS),
        "EVENTS_TOKEN": TOKEN,
        "EVENTS_RATE_LIMIT": "1000/second",
        "LOG_LEVEL": "info",
    }
    with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start() as gunicorn:
        yield gunicorn


def page(server, user: str, **params) -> dict:
    """A page on a fresh connection (so pages spread over the workers)."""
    response = requests.get(f"{server.url}/recommendations/{user}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def posts(body: dict) -> list[str]:
    return [r["post_id"] for r in body["recommendations"]]


def scroll(server, user: str, token: str | None = None, limit: int = 37) -> list[str]:
    """Every post of a scroll, pinned to ``token`` (or to its own first page's)."""
    seen, offset = [], 0
    while offset is not None:
        body = page(server, user, limit=limit, offset=offset, **({"token": token} if token else {}))
        token = body["token"]
        seen += posts(body)
        offset = body["pagination"]["next_offset"]
    return seen


def report(server, events: list[dict]) -> requests.Response:
    return requests.post(
        f"{server.url}/events", json={"events": events}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )


def event(post: str, kind: str = "like", user: str = FAN) -> dict:
    return {"user_id": user, "post_id": post, "type": kind, "created_at": "2026-11-29T07:00:00Z"}


def test_a_like_reported_by_post_events_is_gone_from_every_worker_within_a_second(server):
    top = posts(page(server, FAN, limit=5))
    reported = time.monotonic()
    assert report(server, [event(top[0])]).status_code == 200
    gone = poll(lambda: all(top[0] not in posts(page(server, FAN, limit=5)) for _ in range(6)), 1.0, 0.02)
    elapsed = time.monotonic() - reported
    assert gone, f"{top[0]} still in the feed {elapsed:.2f}s after the like"
    assert elapsed < 1.0


def test_the_scroll_goes_past_the_precomputed_list_to_max_feed_posts_without_repeats(server, model):
    first = page(server, FAN, limit=100)
    assert first["pagination"]["total"] == MAX_FEED_POSTS
    feed = scroll(server, FAN, first["token"])
    assert len(feed) == len(set(feed)) == MAX_FEED_POSTS
    items, _ = model.top_k([model.user_index(FAN)], MAX_FEED_POSTS)
    assert feed == [model.item_ids[i] for i in items[0]]


def test_a_pinned_scroll_is_exact_across_a_refresh_a_publish_and_events(server, cache, model_dir):
    first = page(server, FAN, limit=10)
    expected = scroll(server, FAN, first["token"])
    assert len(expected) == len(set(expected)) == MAX_FEED_POSTS

    # A refresh publishes fresh posts (one fits the fan best), training publishes a new model (every worker
    # swaps to it), the backend reports posts further down the scroll.
    generation = cache.publish_live(
        [("fresh-hot", (), "hot", time.time())], {}, "v", {}, retain_seconds=600, max_posts=100, max_users=100
    )
    newer = with_features(random_model(num_users=30, num_items=NUM_ITEMS, seed=6), FAN)
    version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert poll(lambda: server.holds(version), 10), server.worker_versions()
    assert report(server, [event(expected[50]), event(expected[120], "impression")]).status_code == 200

    for limit in (10, 23, 100):  # pages of any size, from whichever worker
        again = scroll(server, FAN, first["token"], limit=limit)
        assert again == expected, f"pinned scroll changed (limit {limit})"

    fresh = page(server, FAN, limit=100)  # a new first page reflects everything
    assert fresh["model_version"] == version and fresh["token"].split(".")[1] == str(generation)
    assert posts(fresh)[0] == "fresh-hot" and fresh["recommendations"][0]["fresh"] is True
    assert expected[50] not in scroll(server, FAN)


def test_client_exclusions_keep_positions(server):
    top = posts(page(server, FAN, limit=10))
    body = page(server, FAN, limit=8, exclude=",".join(top[:2]))
    assert posts(body) == top[2:10]
    assert body["pagination"]["next_offset"] == 10


def test_a_bad_event_batch_is_refused_whole(server, cache):
    top = posts(page(server, FAN, limit=3))
    response = report(server, [event(top[0]), event(top[1], kind="share")])
    assert response.status_code == 400
    assert "events[1].type" in response.json()["error"]["message"]
    assert posts(page(server, FAN, limit=3)) == top  # the good first event was not applied either
    assert cache.exclusions(FAN) == ({}, {})
