"""End to end: browsing (issue 12) under real gunicorn workers, real Redis, models on disk.

Similar posts and community feeds scroll exactly, pinned by their first page's token, across a live refresh
and a model publish whichever worker answers each page; a post published by the refresh has neighbours and
is in its community's feed on the next unpinned page, which the new model serves; unknown posts are 404s,
malformed filters 400s.
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
NUM_ITEMS = 200
FAN = "user-4"


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
        "MAX_PAGE_LIMIT": str(TOP_K),
        "LOG_LEVEL": "info",
    }
    with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start() as gunicorn:
        yield gunicorn


def get(server, path: str, status: int = 200, **params) -> dict:
    """An answer on a fresh connection (so requests spread over the workers)."""
    response = requests.get(f"{server.url}{path}", params=params, timeout=10)
    assert response.status_code == status, response.text
    return response.json()


def scroll(server, path: str, limit: int, token: str | None = None, **params) -> tuple[str, list[dict]]:
    """(token, every entry) of a scroll pinned to ``token`` (or to its own first page's)."""
    entries, offset = [], 0
    while offset is not None:
        body = get(server, path, limit=limit, offset=offset, **({"token": token} if token else {}), **params)
        assert not body["version_fallback"]
        token = body["token"]
        entries += body["recommendations"]
        offset = body["pagination"]["next_offset"]
    return token, entries


def ids(entries: list[dict]) -> list[str]:
    return [entry["post_id"] for entry in entries]


def test_similar_and_community_scrolls_stay_exact_across_a_refresh_and_a_publish(server, cache, model_dir):
    similar_token, similar = scroll(server, "/posts/post-3/similar", limit=30)
    assert len(similar) == NUM_ITEMS - 1 and "post-3" not in ids(similar)
    community_token, community = scroll(server, f"/recommendations/{FAN}", limit=17, community="community-1")
    assert len(community) == NUM_ITEMS // 2
    assert all(entry["metadata"]["communityId"] == "community-1" for entry in community)

    cache.publish_live(
        [("fresh-1", ("x",), "community-1", time.time()), ("fresh-hot", (), "hot", time.time())],
        {},
        "v",
        {},
        retain_seconds=600,
        max_posts=10,
        max_users=10,
    )
    newer = with_features(random_model(num_users=30, num_items=NUM_ITEMS, seed=6), FAN)
    version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert poll(lambda: server.holds(version), 10), server.worker_versions()

    for limit in (7, 30, 100):  # pages of any size, from whichever worker, on the version they started on
        assert ids(scroll(server, "/posts/post-3/similar", limit, similar_token)[1]) == ids(similar)
        again = scroll(server, f"/recommendations/{FAN}", limit, community_token, community="community-1")[1]
        assert ids(again) == ids(community)

    # Unpinned: the new version, and the fresh post has neighbours and is in its community's feed.
    def answered() -> bool:  # on both workers (requests alternate between them)
        return all(requests.get(f"{server.url}/posts/fresh-hot/similar", timeout=10).ok for _ in range(4))

    assert poll(answered, 5)
    fresh = get(server, "/posts/fresh-hot/similar")
    assert (fresh["strategy"], fresh["model_version"]) == ("similar", version)
    _, now = scroll(server, f"/recommendations/{FAN}", limit=100, community="community-1")
    assert "fresh-1" in ids(now) and len(now) == NUM_ITEMS // 2 + 1
    assert all(get(server, "/posts/post-3/similar")["model_version"] == version for _ in range(4))


def test_unknown_posts_are_404s_and_malformed_filters_400s(server):
    assert get(server, "/posts/nope/similar", status=404)["error"]["code"] == "post_not_found"
    body = get(server, f"/recommendations/{FAN}", status=400, community="a,,b")
    assert "community" in body["error"]["details"]["fields"]["query"]
    assert get(server, f"/recommendations/{FAN}", tag="no-such-tag")["pagination"]["total"] == 0
