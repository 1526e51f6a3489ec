"""GET /recommendations/<user_id>: pages from the Redis lists, the continuation, fallbacks to the model, pins."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from app.schemas import RecommendationsSchema
from common.recs_cache import pack_list
from testing.factories import random_model
from testing.service import publish

TOP_K = 30  # TOP_K_RECOMMENDATIONS of the test settings
NUM_ITEMS = 60


@pytest.fixture
def model():
    return random_model(num_users=40, num_items=60, seed=1, exclude={3: [0, 1, 2, 5]})


@pytest.fixture
def version(cache, model_dir, model):
    return publish(cache, model_dir, model, top_k=TOP_K)


def expected_posts(model, user_id, k=NUM_ITEMS):
    """The user's whole feed: the model's ranking of every post it may recommend (the scroll goes past TOP_K)."""
    items, _ = model.top_k(np.array([model.user_index(user_id)]), k)
    return [model.item_ids[i] for i in items[0] if i >= 0]


def expected_metadata(model, post_ids):
    indices = [model.item_ids.index(post_id) for post_id in post_ids]
    return [{"tags": list(model.item_tags[i]), "communityId": model.item_community_ids[i]} for i in indices]


def get_page(client, user_id, **query):
    """A page, checked against the documented response schema (the view does not dump through it)."""
    response = client.get(f"/recommendations/{user_id}", query_string=query)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert RecommendationsSchema().load(body) == body
    return body


def test_personalised_page_comes_from_the_cached_list(client, model, version):
    body = get_page(client, "user-3", limit=5)
    assert body["user_id"] == "user-3"
    assert body["model_version"] == version
    assert (body["strategy"], body["source"], body["version_fallback"]) == ("personalized", "cache", False)
    posts = [r["post_id"] for r in body["recommendations"]]
    assert posts == expected_posts(model, "user-3")[:5]
    assert not {"post-0", "post-1", "post-2", "post-5"} & set(expected_posts(model, "user-3"))
    assert [r["rank"] for r in body["recommendations"]] == [1, 2, 3, 4, 5]
    assert [r["metadata"] for r in body["recommendations"]] == expected_metadata(model, posts)
    scores = [r["score"] for r in body["recommendations"]]
    assert scores == sorted(scores, reverse=True)


def test_default_limit_is_the_configured_one(client, version):
    body = get_page(client, "user-1")
    assert body["pagination"]["limit"] == 10 and len(body["recommendations"]) == 10


@pytest.mark.parametrize(
    ("offset", "limit", "count", "has_more", "next_offset"),
    [
        (0, 10, 10, True, 10),  # first page
        (25, 10, 10, True, 35),  # across the end of the precomputed list: the model continues it
        (50, 10, 10, False, None),  # last full page
        (55, 10, 5, False, None),  # short last page
        (59, 1, 1, False, None),  # the very last item
        (60, 10, 0, False, None),  # offset == total: empty page
        (500, 10, 0, False, None),  # far past the end: empty page, not an error
    ],
)
def test_pagination_boundaries(client, model, version, offset, limit, count, has_more, next_offset):
    body = get_page(client, "user-1", limit=limit, offset=offset)
    assert body["pagination"] == {
        "total": NUM_ITEMS,
        "limit": limit,
        "offset": offset,
        "has_more": has_more,
        "next_offset": next_offset,
    }
    assert [r["post_id"] for r in body["recommendations"]] == expected_posts(model, "user-1")[offset : offset + limit]
    assert [r["rank"] for r in body["recommendations"]] == list(range(offset + 1, offset + count + 1))


def test_paging_through_the_feed_shows_every_post_once(client, model, version):
    seen, offset = [], 0
    while offset is not None:
        body = get_page(client, "user-7", limit=7, offset=offset)
        seen += [r["post_id"] for r in body["recommendations"]]
        offset = body["pagination"]["next_offset"]
    assert seen == expected_posts(model, "user-7")


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00" * 12,  # not a whole number of entries
        pack_list(np.array([4, -1, 7]), np.array([0.9, 0.8, 0.7])),  # a negative post index
        pack_list(np.array([4, NUM_ITEMS]), np.array([0.9, 0.8])),  # past the model's posts
    ],
)
def test_an_unreadable_list_is_logged_and_the_page_computed_from_the_model(client, cache, model, version, blob, caplog):
    cache.client.hset(cache.recs_key(version, "user-3"), "user-3", blob)
    with caplog.at_level(logging.ERROR, logger="app.feed.service"):
        body = get_page(client, "user-3", limit=10)
    assert (body["strategy"], body["source"]) == ("personalized", "model")
    assert [r["post_id"] for r in body["recommendations"]] == expected_posts(model, "user-3")[:10]
    assert any("unreadable cached list of user 'user-3'" in r.getMessage() for r in caplog.records)


def test_unknown_user_gets_the_popularity_feed(client, model, version):
    body = get_page(client, "someone-new", limit=4)
    assert (body["strategy"], body["source"]) == ("popular", "cache")
    assert [r["post_id"] for r in body["recommendations"]] == [model.item_ids[i] for i in model.popular_items[:4]]
    assert body["pagination"]["total"] == model.num_items


def test_known_user_without_a_cached_list_is_computed_from_the_model(client, cache, model_dir, model):
    publish(cache, model_dir, model, top_k=TOP_K, skip_users=("user-3",))
    body = get_page(client, "user-3", limit=25)
    assert (body["strategy"], body["source"]) == ("personalized", "model")
    posts = expected_posts(model, "user-3")[:25]
    assert [r["post_id"] for r in body["recommendations"]] == posts
    assert [r["metadata"] for r in body["recommendations"]] == expected_metadata(model, posts)


def test_without_redis_pages_come_from_the_model_with_the_same_ranking(
    make_app, settings_env, dead_redis_url, model, version
):
    cached = get_page(make_app(settings_env).test_client(), "user-3", limit=25)
    client = make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client()
    body = get_page(client, "user-3", limit=25)
    assert (body["source"], body["strategy"], body["model_version"]) == ("model", "personalized", version)
    for field in ("post_id", "rank", "metadata"):
        assert [r[field] for r in body["recommendations"]] == [r[field] for r in cached["recommendations"]]
    assert [r["score"] for r in body["recommendations"]] == pytest.approx(
        [r["score"] for r in cached["recommendations"]], abs=1e-4
    )
    unknown = get_page(client, "someone-new", limit=3)
    assert (unknown["source"], unknown["strategy"]) == ("model", "popular")
    assert [r["post_id"] for r in unknown["recommendations"]] == [model.item_ids[i] for i in model.popular_items[:3]]


def test_later_pages_of_a_scroll_come_from_the_workers_memory(client, app, cache, model, version):
    first = get_page(client, "user-3", limit=10)
    cache.client.hdel(cache.recs_key(version, "user-3"), "user-3")  # Redis no longer has the list: the memo must answer
    second = get_page(client, "user-3", limit=10, offset=10)
    assert (second["strategy"], second["source"], second["model_version"]) == ("personalized", "cache", version)
    assert [r["post_id"] for r in first["recommendations"] + second["recommendations"]] == expected_posts(
        model, "user-3"
    )[:20]
    assert 'recsvc_list_memo_lookups_total{outcome="hit"}' in client.get("/metrics").get_data(as_text=True)


def test_the_memo_is_asked_only_for_users_the_model_knows(client, version):
    """A user without a list (new, or the anonymous reader of similar posts) is no memo miss: the hit rate
    operators read (recsvc_list_memo_lookups_total) counts only lists the memo could hold."""

    def lookups():
        text = client.get("/metrics").get_data(as_text=True)
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("recsvc_list_memo_"))

    before = lookups()
    get_page(client, "someone-new", limit=3)
    assert client.get("/posts/post-1/similar?limit=3").status_code == 200
    assert lookups() == before
    get_page(client, "user-3", limit=3)
    assert lookups() == before + 1


def test_the_memo_can_be_turned_off(make_app, settings_env, cache, version):
    client = make_app({**settings_env, "API_LIST_MEMO_USERS": "0"}).test_client()
    get_page(client, "user-3", limit=10)
    cache.client.hdel(cache.recs_key(version, "user-3"), "user-3")
    assert get_page(client, "user-3", limit=10, offset=10)["source"] == "model"


def test_the_memo_never_answers_for_a_replaced_model(client, app, cache, model_dir, version):
    get_page(client, "user-2", limit=10)  # remembered for the first version
    newer = random_model(num_users=40, num_items=60, seed=2)
    new_version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert app.extensions["recsvc"].holder.reload().current.version == new_version
    body = get_page(client, "user-2", limit=10)
    assert body["model_version"] == new_version
    assert [r["post_id"] for r in body["recommendations"]] == expected_posts(newer, "user-2")[:10]


def test_no_model_yet_is_a_503(client):
    response = client.get("/recommendations/user-1")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_unavailable"


def test_pinned_version_keeps_paging_stable_across_a_new_model(client, app, cache, model_dir, model, version):
    first = get_page(client, "user-2", limit=10)
    newer = random_model(num_users=40, num_items=60, seed=2)
    new_version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert app.extensions["recsvc"].holder.reload().current.version == new_version

    second = get_page(client, "user-2", limit=10, offset=10, version=first["model_version"])
    assert (second["model_version"], second["version_fallback"]) == (version, False)
    assert [r["post_id"] for r in first["recommendations"] + second["recommendations"]] == expected_posts(
        model, "user-2"
    )[:20]
    unpinned = get_page(client, "user-2", limit=10)
    assert unpinned["model_version"] == new_version
    assert [r["post_id"] for r in unpinned["recommendations"]] == expected_posts(newer, "user-2")[:10]


def test_expired_pinned_version_falls_back_to_the_current_one(client, version):
    body = get_page(client, "user-2", limit=3, version="20200101T000000Z-00000000")
    assert (body["model_version"], body["version_fallback"]) == (version, True)


def test_pinned_version_that_expires_while_the_worker_remembers_it_falls_back(
    client, app, cache, model_dir, model, version
):
    first = get_page(client, "user-2", limit=10)  # the worker now remembers this version's item metadata
    newer = random_model(num_users=40, num_items=60, seed=2)
    new_version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert app.extensions["recsvc"].holder.reload().current.version == new_version
    cache.client.delete(*cache.recs_keys(version), cache.meta_key(version))  # RECS_RETAIN_SECONDS passed

    later = get_page(client, "user-2", limit=10, offset=10, version=first["model_version"])

    # The current ranking, said so; not the expired version's popularity list passed off as the user's feed.
    assert (later["model_version"], later["version_fallback"]) == (new_version, True)
    assert later["strategy"] == "personalized"
    assert [r["post_id"] for r in later["recommendations"]] == expected_posts(newer, "user-2")[10:20]


def test_unknown_user_pinned_to_a_retained_version_keeps_its_popularity_feed(
    client, app, cache, model_dir, model, version
):
    first = get_page(client, "newcomer", limit=5)
    assert first["strategy"] == "popular"
    publish(cache, model_dir, random_model(num_users=40, num_items=60, seed=2), top_k=TOP_K)
    app.extensions["recsvc"].holder.reload()

    later = get_page(client, "newcomer", limit=5, offset=5, version=first["model_version"])

    assert (later["model_version"], later["version_fallback"], later["strategy"]) == (version, False, "popular")
    assert [r["post_id"] for r in first["recommendations"] + later["recommendations"]] == [
        model.item_ids[i] for i in model.popular_items[:10]
    ]
