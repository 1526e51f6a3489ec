"""The live feed through the web app: fresh posts, live users, exclusions, client exclusions, the scroll token.

Real Redis (the test database), the Flask test client; the live state is written with the RecsCache methods
tasks.refresh uses, so these tests pin the contract between the refresh and the web.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.schemas import RecommendationsSchema
from testing.factories import random_model, with_features
from testing.service import publish

TOP_K = 30  # TOP_K_RECOMMENDATIONS of the test settings
NUM_ITEMS = 60
FAN = "user-1"  # the user the "hot" community's features point at


@pytest.fixture
def model():
    return with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=3), FAN)


@pytest.fixture
def version(cache, model_dir, model):
    return publish(cache, model_dir, model, top_k=TOP_K)


def publish_live(cache, version, pool=(), users=None):
    """Publish a live generation as tasks.refresh does; pool entries are (post_id, tags, community)."""
    now = time.time()
    posts = [(post_id, tuple(tags), community, now - n) for n, (post_id, tags, community) in enumerate(pool)]
    return cache.publish_live(posts, users or {}, version, {}, retain_seconds=60, max_posts=2000, max_users=1000)


def get_page(client, user_id, **query):
    response = client.get(f"/recommendations/{user_id}", query_string=query)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert RecommendationsSchema().load(body) == body
    return body


def post_ids(body):
    return [r["post_id"] for r in body["recommendations"]]


def whole_feed(client, user_id, limit=25, **query):
    """Every page of a scroll pinned by its first page's token."""
    first = get_page(client, user_id, limit=limit, **query)
    posts, body = post_ids(first), first
    while body["pagination"]["has_more"]:
        body = get_page(client, user_id, limit=limit, offset=body["pagination"]["next_offset"], token=first["token"])
        posts += post_ids(body)
    return first, posts


def model_feed(model, user_id):
    items, _ = model.top_k(np.array([model.user_index(user_id)]), NUM_ITEMS)
    return [model.item_ids[i] for i in items[0] if i >= 0]


def test_a_fresh_post_that_fits_the_user_leads_its_first_page_and_says_it_is_fresh(client, cache, model, version):
    publish_live(cache, version, [("new-hot", ["x"], "hot"), ("new-cold", [], "cold")])
    body = get_page(client, FAN, limit=5)
    assert body["recommendations"][0]["post_id"] == "new-hot"
    assert [r["fresh"] for r in body["recommendations"]] == [True, False, False, False, False]
    assert body["recommendations"][0]["metadata"] == {"tags": ["x"], "communityId": "hot"}
    assert body["pagination"]["total"] == NUM_ITEMS + 2

    _, feed = whole_feed(client, FAN)
    assert feed[-1] == "new-cold"  # scored far below everything the model knows
    assert [p for p in feed if not p.startswith("new-")] == model_feed(model, FAN)


def test_a_user_with_fewer_candidates_than_top_k_gets_fresh_posts_around_them(client, cache, model_dir):
    # FAN may be recommended 10 posts: its precomputed list holds 10 (the writer stores no padding), and the
    # merge runs through all of it, so fresh posts fit on both sides of the model's last post.
    short = with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=3, exclude={1: range(10, 60)}), FAN)
    version = publish(cache, model_dir, short, top_k=TOP_K)
    publish_live(cache, version, [("new-hot", ["x"], "hot"), ("new-cold", [], "cold")])
    first, feed = whole_feed(client, FAN, limit=5)
    assert (first["source"], first["recommendations"][0]["post_id"]) == ("cache", "new-hot")
    assert first["pagination"]["total"] == 12
    assert feed == ["new-hot", *model_feed(short, FAN), "new-cold"]


def test_fresh_posts_the_model_cannot_score_come_after_its_ranking_newest_first(client, cache, model, version):
    publish_live(cache, version, [("newest", ["unknown"], "elsewhere"), ("older", [], "nowhere")])
    _, feed = whole_feed(client, FAN)
    assert feed == model_feed(model, FAN) + ["newest", "older"]


def test_a_pool_post_the_model_knows_is_not_shown_twice(client, cache, model, version):
    publish_live(cache, version, [("post-7", [], "hot")])
    _, feed = whole_feed(client, FAN)
    assert feed == model_feed(model, FAN)


def test_users_without_features_keep_the_popularity_feed_then_fresh_posts(client, cache, model, version):
    publish_live(cache, version, [("new-hot", [], "hot")], users={"bare": {"role": "nobody", "follows": ["x"]}})
    for user in ("someone", "bare"):
        first, feed = whole_feed(client, user)
        assert first["strategy"] == "popular"
        assert feed == [model.item_ids[i] for i in model.popular_items] + ["new-hot"]


def test_a_new_user_with_features_gets_a_feed_from_them(client, cache, model, version):
    publish_live(cache, version, users={"newbie": {"role": "student", "follows": ["hot"]}})
    first, feed = whole_feed(client, "newbie")
    assert (first["strategy"], first["source"]) == ("features", "model")
    embedding, bias = model.user_representation("student", ["hot"])
    items, scores = model.rank_representation(embedding, NUM_ITEMS, bias=bias)
    assert feed == [model.item_ids[i] for i in items]
    assert [r["score"] for r in first["recommendations"]] == pytest.approx(scores[:25].tolist(), abs=1e-5)


def test_seen_posts_are_gone_from_the_next_page(client, cache, model, version):
    top = post_ids(get_page(client, FAN, limit=5))
    cache.record_events([(FAN, top[0], "like"), (FAN, top[2], "view"), ("user-2", top[1], "view")], cap=100, ttl=60)
    body = get_page(client, FAN, limit=5)
    assert post_ids(body) == [p for p in model_feed(model, FAN) if p not in (top[0], top[2])][:5]
    assert body["pagination"]["total"] == NUM_ITEMS - 2


@pytest.mark.parametrize("mode", ["demote", "hide", "ignore"])
def test_impressions_demote_hide_or_do_nothing_as_configured(make_app, settings_env, cache, model, version, mode):
    client = make_app({**settings_env, "IMPRESSIONS": mode}).test_client()
    full = model_feed(model, FAN)
    cache.record_events([(FAN, full[1], "impression"), (FAN, full[0], "impression")], cap=100, ttl=60)
    _, feed = whole_feed(client, FAN)
    rest = [p for p in full if p not in full[:2]]
    expected = {"demote": rest + full[:2], "hide": rest, "ignore": full}[mode]
    assert feed == expected


def test_client_exclusions_are_skipped_and_positions_kept(client, model, version):
    full = model_feed(model, FAN)
    body = get_page(client, FAN, limit=5, exclude=f"{full[1]},{full[3]},not-a-post")
    assert post_ids(body) == [full[0], full[2], full[4], full[5], full[6]]
    assert [r["rank"] for r in body["recommendations"]] == [1, 3, 5, 6, 7]
    assert body["pagination"]["next_offset"] == 7
    following = get_page(client, FAN, limit=5, offset=7, token=body["token"])
    assert post_ids(following) == full[7:12]


def test_pages_of_a_kept_feed_in_any_order_match_a_fresh_worker(make_app, settings_env, cache, version):
    """The worker keeps a feed's rendered positions (app.feed.stages.Rendered): pages asked in any order, again,
    or with client exclusions over positions rendered before and not, are those of a worker computing afresh."""
    publish_live(cache, version, [("new-hot", ["x"], "hot"), ("new-cold", [], "cold")])
    kept = make_app(settings_env).test_client()
    token = get_page(kept, FAN, limit=7, offset=21)["token"]
    _, feed = whole_feed(make_app(settings_env).test_client(), FAN)
    asks = [(21, 7, ""), (0, 7, ""), (35, 7, ""), (14, 7, ""), (21, 7, ""), (3, 25, ""), (50, 20, "")]
    asks += [(10, 5, f"{feed[11]},{feed[12]}"), (40, 5, f"{feed[40]},{feed[44]},{feed[47]}")]
    for offset, limit, exclude in asks:
        query = {"limit": limit, "offset": offset, "token": token, **({"exclude": exclude} if exclude else {})}
        fresh = get_page(make_app(settings_env).test_client(), FAN, **query)
        assert get_page(kept, FAN, **query) == fresh
        shown = [p for p in feed[offset:] if p not in exclude.split(",")][:limit]
        assert post_ids(fresh) == shown


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"exclude": ",".join(f"p{n}" for n in range(201))}, "exclude"),
        ({"exclude": "a,,b"}, "exclude"),
        ({"exclude": "x" * 129}, "exclude"),
        ({"token": "not-a-token"}, "token"),
        ({"token": "20261126T101500Z-1a2b3c4d.1.2", "version": "20261126T101501Z-1a2b3c4d"}, "token"),
    ],
)
def test_bad_exclusions_and_tokens_are_refused_by_name(client, version, query, field):
    response = client.get(f"/recommendations/{FAN}", query_string=query)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["details"]["fields"]["query"]


def test_a_pinned_scroll_never_repeats_or_skips_whatever_happens_meanwhile(
    client, app, cache, model_dir, model, version
):
    publish_live(cache, version, [("new-hot", [], "hot"), ("new-plain", ["unknown"], "nowhere")])
    first, expected = whole_feed(client, FAN)  # the scroll as it stands
    assert "new-hot" in expected and len(expected) == len(set(expected)) == NUM_ITEMS + 2

    # Meanwhile: the user reports posts further down, a refresh publishes a newer pool and a new user record,
    # and training publishes a new model the worker swaps in.
    cache.record_events([(FAN, expected[30], "like"), (FAN, expected[40], "impression")], cap=100, ttl=60)
    publish_live(cache, version, [("newer-hot", [], "hot")])
    newer = with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=4), FAN)
    new_version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert app.extensions["recsvc"].holder.reload().current.version == new_version

    again, offset = [], 0
    while offset is not None:
        body = get_page(client, FAN, limit=7, offset=offset, token=first["token"])
        assert (body["model_version"], body["version_fallback"], body["token"]) == (version, False, first["token"])
        again += post_ids(body)
        offset = body["pagination"]["next_offset"]
    assert again == expected

    unpinned = get_page(client, FAN, limit=25)  # a new first page reflects everything
    assert unpinned["model_version"] == new_version
    assert unpinned["recommendations"][0]["post_id"] == "newer-hot"
    _, fresh_feed = whole_feed(client, FAN)
    assert expected[30] not in fresh_feed and fresh_feed[-1] == expected[40]


def test_a_token_whose_pool_expired_starts_a_fresh_scroll_and_says_so(
    client, make_app, settings_env, cache, model, version
):
    publish_live(cache, version, [("new-hot", [], "hot")])
    first = get_page(client, FAN, limit=5)
    publish_live(cache, version)
    cache.client.delete(cache.live_pool_key(1))  # RECS_RETAIN_SECONDS passed
    other_worker = make_app(settings_env).test_client()  # one that never held generation 1's pool
    later = get_page(other_worker, FAN, limit=5, offset=5, token=first["token"])
    assert later["version_fallback"] is True
    assert later["token"] != first["token"]
    assert post_ids(later) == model_feed(model, FAN)[5:10]


def test_without_older_models_kept_a_scroll_pinned_before_a_publish_starts_over(
    make_app, settings_env, cache, model_dir, model, version
):
    app = make_app({**settings_env, "API_MODELS_KEPT": "0"})
    client = app.test_client()
    first = get_page(client, FAN, limit=5)
    newer = random_model(num_users=20, num_items=NUM_ITEMS, seed=4)
    publish(cache, model_dir, newer, top_k=TOP_K)
    app.extensions["recsvc"].holder.reload()
    later = get_page(client, FAN, limit=5, offset=5, token=first["token"])
    assert later["version_fallback"] is True
    assert post_ids(later) == model_feed(newer, FAN)[5:10]


def test_the_token_of_old_clients_pins_the_model_only(client, cache, model, version):
    first = get_page(client, FAN, limit=5)
    publish_live(cache, version, [("new-hot", [], "hot")])
    later = get_page(client, FAN, limit=5, version=first["model_version"])
    assert (later["model_version"], later["version_fallback"]) == (version, False)
    assert post_ids(later)[0] == "new-hot"  # the live parts are current on every page of a version= scroll


def test_without_redis_the_page_has_no_live_parts_and_a_token_that_stays_exact(
    make_app, settings_env, dead_redis_url, cache, model, version
):
    publish_live(cache, version, [("new-hot", [], "hot")])
    client = make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client()
    body = get_page(client, FAN, limit=5)
    assert (body["source"], body["token"]) == ("model", f"{version}.0.0")
    assert post_ids(body) == model_feed(model, FAN)[:5]


def test_a_pinned_scroll_of_a_new_user_keeps_its_features_when_they_change(client, cache, model, version):
    publish_live(cache, version, users={"newbie": {"role": "student", "follows": []}})
    first, expected = whole_feed(client, "newbie")
    assert first["strategy"] == "features"
    publish_live(cache, version, users={"newbie": {"role": "student", "follows": ["hot"]}})  # follows a community
    publish_live(cache, version, users={"newbie": None})  # and a new model knows the user
    again, offset = [], 0
    while offset is not None:
        body = get_page(client, "newbie", limit=25, offset=offset, token=first["token"])
        assert (body["strategy"], body["version_fallback"]) == ("features", False)
        again += post_ids(body)
        offset = body["pagination"]["next_offset"]
    assert again == expected
    assert get_page(client, "newbie", limit=5)["strategy"] == "popular"  # unpinned: not live any more


def test_a_generation_the_mirror_holds_but_redis_lost_is_read_again_not_a_500(app, client, cache, model_dir, model):
    """Redis lost the live state (emptied, or a generation heard from elsewhere): the page asks Redis again."""
    version = publish(cache, model_dir, model, top_k=TOP_K)
    for _ in range(3):
        publish_live(cache, version, [("new-hot", ["x"], "hot")])
    mirror = app.extensions["recsvc"].feed.mirror
    mirror.connected(3)  # as the reloader leaves it
    cache.client.delete(cache.live_state_key, *(cache.live_pool_key(g) for g in (1, 2, 3)))
    publish_live(cache, version, [("newer", ["x"], "hot")])  # generation 1 again, on the emptied state
    _, posts = whole_feed(client, FAN)
    assert "newer" in posts and "new-hot" not in posts
    assert mirror.generation == 1  # corrected: the next pages need no second read


def test_a_current_generation_whose_pool_is_gone_serves_without_fresh_posts(app, client, cache, model_dir, model):
    version = publish(cache, model_dir, model, top_k=TOP_K)
    for _ in range(3):
        publish_live(cache, version, [("new-hot", ["x"], "hot")])
    cache.client.delete(*(cache.live_pool_key(g) for g in (1, 2, 3)))  # the state still says 3
    _, posts = whole_feed(client, FAN)
    assert posts and "new-hot" not in posts
