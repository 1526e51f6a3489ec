"""End to end: rows INSERTed into PostgreSQL reach a live gunicorn's feeds through beat's tasks.refresh.

Real processes: a Celery worker that trains once, beat sending ``tasks.refresh`` every two seconds, gunicorn
serving; the real test database. No model is trained after the first: everything below is the live feed.
"""

from __future__ import annotations

import time
from collections import Counter

import requests

from testing.polling import wait_until
from testing.processes import GunicornServer, start_worker
from testing.service import favourite_taste, most_active_users, run_train

INTERVAL = 2  # REFRESH_INTERVAL_SECONDS of this test
BOUND = INTERVAL + 5  # the bound


def fan_and_taste(conn) -> tuple[str, str, list[str]]:
    """The most active user, the community it interacts with most, and its two favourite tags there."""
    with conn:  # the reads' transaction ends here
        user = most_active_users(conn, 1)[0]
        return (user, *favourite_taste(conn, user))


def feed(server, user: str, limit: int = 100) -> dict:
    return requests.get(f"{server.url}/recommendations/{user}", params={"limit": limit}, timeout=10).json()


def posts_of(page: dict) -> list[str]:
    return [r["post_id"] for r in page["recommendations"]]


def execute(conn, statement: str, *params) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(statement, params)


def test_inserted_posts_users_and_likes_reach_the_feed_within_the_interval_without_training(
    loaded_db, cache, service_env, services, celery_client, tmp_path
):
    service_env["REFRESH_INTERVAL_SECONDS"] = str(INTERVAL)
    start_worker(services, service_env, concurrency=2)
    trained = run_train(celery_client)
    assert trained["status"] == "published", trained
    services("beat", ["beat", "--loglevel=INFO", "--schedule", str(tmp_path / "beat-schedule")], service_env)
    server = GunicornServer(service_env, workers=2, log_path=tmp_path / "gunicorn.log").start()
    try:
        assert wait_until(lambda: cache.live_state(), BOUND + 30, "the first refresh after the publish")
        user, community, tags = fan_and_taste(loaded_db)

        # A post of the user's community with its favourite tags enters its first page.
        execute(
            loaded_db,
            "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES ('live-1', %s, NULL, %s, now())",
            community, tags,
        )  # fmt: skip
        inserted = time.monotonic()
        page = wait_until(
            lambda: (p := feed(server, user, limit=50)) and "live-1" in posts_of(p) and p, BOUND, "live-1 in the feed"
        )
        assert time.monotonic() - inserted <= BOUND
        entry = next(r for r in page["recommendations"] if r["post_id"] == "live-1")
        assert entry["fresh"] is True and entry["metadata"]["communityId"] == community
        assert page["model_version"] == trained["version"]  # no training run meanwhile

        # A like INSERTed into PostgreSQL removes the post from the user's next (unpinned) first page.
        execute(
            loaded_db,
            "INSERT INTO interactions (user_id, post_id, type, created_at) VALUES (%s, 'live-1', 'like', now())",
            user,
        )
        liked = time.monotonic()
        wait_until(lambda: "live-1" not in posts_of(feed(server, user)), BOUND, "live-1 gone after the like")
        assert time.monotonic() - liked <= BOUND

        # A new user with follows gets a feed from its features, not the popularity list.
        assert feed(server, "live-newbie")["strategy"] == "popular"
        execute(loaded_db, "INSERT INTO users (id, role, created_at) VALUES ('live-newbie', 'fan', now())")
        execute(
            loaded_db,
            "INSERT INTO follows (user_id, community_id, created_at) VALUES ('live-newbie', %s, now())",
            community,
        )
        joined = time.monotonic()
        newbie = wait_until(
            lambda: (p := feed(server, "live-newbie")) and p["strategy"] == "features" and p,
            BOUND,
            "the feature strategy for the new user",
        )
        assert time.monotonic() - joined <= BOUND
        assert newbie["model_version"] == trained["version"] and len(newbie["recommendations"]) > 0
        newbie_communities = Counter(r["metadata"]["communityId"] for r in newbie["recommendations"][:20])
        assert newbie_communities.most_common(1)[0][0] == community
    finally:
        assert server.stop() == 0, server.log()
