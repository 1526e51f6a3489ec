"""Browsing (issue 12) through the web app: similar posts, and feeds filtered by community and tag.

Real Redis (the test database), the Flask test client; the live state is written as tasks.refresh does.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from flask import request
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

import ml.similar
from app.api import ArgumentsParser
from app.feed.similar import RERANK_DEPTH
from app.schemas import RecommendationsQuerySchema, RecommendationsSchema, SimilarPostsSchema, SimilarQuerySchema
from ml.similar import UnitItems, unit_rows
from testing.factories import random_model, with_features
from testing.service import publish

TOP_K = 30  # TOP_K_RECOMMENDATIONS of the test settings
NUM_ITEMS = 60
FAN = "user-1"  # the user the "hot" community's features point at


@pytest.fixture
def model():
    # user-2 interacted with posts 0-4: they are the model's exclusions of user-2.
    return with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=3, exclude={2: range(5)}), FAN)


@pytest.fixture
def version(cache, model_dir, model):
    return publish(cache, model_dir, model, top_k=TOP_K)


def publish_live(cache, version, pool=(), users=None):
    """Publish a live generation as tasks.refresh does; pool entries are (post_id, tags, community)."""
    now = time.time()
    posts = [(post_id, tuple(tags), community, now - n) for n, (post_id, tags, community) in enumerate(pool)]
    return cache.publish_live(posts, users or {}, version, {}, retain_seconds=60, max_posts=2000, max_users=1000)


def get_json(client, path, schema, status=200, **query):
    response = client.get(path, query_string=query)
    body = response.get_json()
    assert response.status_code == status, body
    if status == 200:
        assert schema().load(body) == body
    return body


def similar(client, post_id, status=200, **query):
    return get_json(client, f"/posts/{post_id}/similar", SimilarPostsSchema, status, **query)


def feed(client, user_id, status=200, **query):
    return get_json(client, f"/recommendations/{user_id}", RecommendationsSchema, status, **query)


def post_ids(body):
    return [r["post_id"] for r in body["recommendations"]]


def scroll(get, *args, limit=7, **query):
    """Every page of a scroll pinned by its first page's token: (first page, post ids)."""
    first = get(*args, limit=limit, **query)
    posts, body = post_ids(first), first
    while body["pagination"]["has_more"]:
        body = get(*args, limit=limit, offset=body["pagination"]["next_offset"], token=first["token"], **query)
        assert body["token"] == first["token"]
        posts += post_ids(body)
    return first, posts


def by_cosine(model, vector, skip=None):
    """The model's post ids by cosine with ``vector`` (ties: smaller index first), without item ``skip``."""
    unit, _ = unit_rows(model.item_embeddings)
    cosines = unit @ (vector / np.linalg.norm(vector))
    order = [i for i in np.lexsort((np.arange(len(cosines)), -cosines)) if i != skip]
    return [model.item_ids[i] for i in order], cosines


def model_feed(model, user_id):
    items, _ = model.top_k(np.array([model.user_index(user_id)]), NUM_ITEMS)
    return [model.item_ids[i] for i in items[0] if i >= 0]


# --- similar posts ---


def test_similar_posts_are_the_model_posts_by_cosine_without_the_post_itself(client, model, version):
    expected, cosines = by_cosine(model, model.item_embeddings[7], skip=7)
    first, posts = scroll(similar, client, "post-7")
    assert (first["post_id"], first["user_id"], first["strategy"]) == ("post-7", None, "similar")
    assert posts == expected and "post-7" not in posts
    assert first["pagination"]["total"] == NUM_ITEMS - 1
    scores = [r["score"] for r in first["recommendations"]]
    assert scores == pytest.approx([float(cosines[model.item_ids.index(p)]) for p in expected[:7]], abs=1e-5)


def test_a_similar_scroll_past_the_first_hundred_is_still_the_exact_cosine_order(client, cache, model_dir):
    big = random_model(num_users=5, num_items=250, seed=9)  # more neighbours than the first ranking holds
    publish(cache, model_dir, big, top_k=TOP_K)
    expected, _ = by_cosine(big, big.item_embeddings[3], skip=3)
    first, posts = scroll(similar, client, "post-3", limit=25)
    assert posts == expected and first["pagination"]["total"] == 249 > RERANK_DEPTH


def test_a_large_catalogue_answers_its_first_hundred_from_the_cell_index_and_the_rest_exactly(
    client, cache, model_dir, monkeypatch
):
    monkeypatch.setattr(ml.similar, "EXACT_ITEMS", 100)  # 400 posts is "large", in 25 cells, 2 probed
    monkeypatch.setattr(ml.similar, "CELL_ITEMS", 16)
    monkeypatch.setattr(ml.similar, "PROBE", 2)
    big = random_model(num_users=5, num_items=400, seed=9)
    publish(cache, model_dir, big, top_k=TOP_K)
    units = UnitItems.of(big)
    assert units.cells is not None and len(units.cells.starts) == 26
    head, _ = units.nearest(units.unit[3], RERANK_DEPTH, skip=3)
    first, posts = scroll(similar, client, "post-3", limit=25)
    assert first["pagination"]["total"] == 399 and len(posts) == len(set(posts)) == 399 and "post-3" not in posts
    assert posts[:RERANK_DEPTH] == [big.item_ids[i] for i in head]
    exact, _ = by_cosine(big, big.item_embeddings[3], skip=3)
    assert posts[RERANK_DEPTH:] == [p for p in exact if p not in set(posts[:RERANK_DEPTH])]
    assert posts != exact  # two of 25 cells: the index's head is not the exact one here


def swapped_in(app, version):
    """What a web worker does at a swap: the version loaded with its per-version entries (the table mapped)."""
    runtime = app.extensions["recsvc"]
    assert runtime.holder.reload().current.version == version
    runtime.feed.after_swap(version)


def test_a_model_posts_first_hundred_are_read_from_the_versions_table_and_are_the_computed_ones(
    app, client, cache, model_dir, monkeypatch, make_app, settings_env
):
    monkeypatch.setattr(ml.similar, "EXACT_ITEMS", 100)  # 400 posts is "large": through a cell index
    monkeypatch.setattr(ml.similar, "CELL_ITEMS", 16)
    monkeypatch.setattr(ml.similar, "PROBE", 2)
    big = random_model(num_users=5, num_items=400, seed=9)
    version = publish(cache, model_dir, big, top_k=TOP_K)
    swapped_in(app, version)  # no table yet (an artifact from before them): computed per page
    computed = [scroll(similar, client, post, limit=25)[1] for post in ("post-3", "post-250")]
    ml.similar.save_neighbours(model_dir, version, big)  # as the training run does before it publishes
    with_table = make_app(settings_env)  # a worker that loads the version with its table
    swapped_in(with_table, version)

    def computed_again(*args, **kwargs):
        raise AssertionError("a model post's first neighbours are the table's row")

    monkeypatch.setattr(ml.similar.UnitItems, "nearest", computed_again)
    read = [scroll(similar, with_table.test_client(), post, limit=25)[1] for post in ("post-3", "post-250")]
    assert read == computed
    assert len(computed[0]) == 399 > RERANK_DEPTH  # past the table's head: the exact continuation, as before


def test_with_a_table_a_fresh_post_still_gets_its_neighbours_computed(app, client, cache, model_dir, model, version):
    ml.similar.save_neighbours(model_dir, version, model)
    swapped_in(app, version)
    publish_live(cache, version, [("new-hot", ["x"], "hot")])
    embeddings, _, _ = model.item_representations([["x"]], ["hot"])
    first, posts = scroll(similar, client, "new-hot")
    assert first["strategy"] == "similar" and posts == by_cosine(model, embeddings[0])[0]


def test_a_damaged_or_missing_table_leaves_the_neighbours_computed_and_is_logged(
    app, client, model_dir, model, version, caplog
):
    expected, _ = by_cosine(model, model.item_embeddings[7], skip=7)
    path = ml.similar.save_neighbours(model_dir, version, model)
    path.write_bytes(path.read_bytes()[:-200])  # damaged after it was written
    swapped_in(app, version)
    assert "is unusable, neighbours are computed per page" in caplog.text
    assert scroll(similar, client, "post-7")[1] == expected
    path.unlink()
    swapped_in(app, version)
    assert scroll(similar, client, "post-7")[1] == expected


def test_similar_pages_have_exact_boundaries(client, model, version):
    expected, _ = by_cosine(model, model.item_embeddings[7], skip=7)
    last = similar(client, "post-7", limit=5, offset=NUM_ITEMS - 3)
    assert post_ids(last) == expected[-2:]
    assert last["pagination"] == {"total": 59, "limit": 5, "offset": 57, "has_more": False, "next_offset": None}
    assert [r["rank"] for r in last["recommendations"]] == [58, 59]
    beyond = similar(client, "post-7", limit=5, offset=59)
    assert post_ids(beyond) == [] and beyond["pagination"]["has_more"] is False
    one = similar(client, "post-7", limit=1, offset=58)
    assert post_ids(one) == expected[-1:] and one["pagination"]["has_more"] is False
    exact = similar(client, "post-7", limit=25, offset=34)
    assert post_ids(exact) == expected[34:] and exact["pagination"]["next_offset"] is None


def test_a_post_written_after_the_model_has_neighbours_and_is_one(client, cache, model, version):
    publish_live(cache, version, [("new-hot", ["x"], "hot"), ("new-cold", [], "cold")])
    embeddings, _, known = model.item_representations([["x"], []], ["hot", "cold"])
    assert known.all()
    first, posts = scroll(similar, client, "new-hot")
    assert first["strategy"] == "similar"
    model_order, _ = by_cosine(model, embeddings[0])
    assert [p for p in posts if not p.startswith("new-")] == model_order
    assert "new-cold" in posts and "new-hot" not in posts and len(posts) == NUM_ITEMS + 1
    assert posts[-1] == "new-cold"  # its features point the opposite way
    # ...and a model post's neighbours include the fresh post that points its way.
    fan_like = int(np.argmax(unit_rows(model.item_embeddings)[0] @ embeddings[0]))
    _, around = scroll(similar, client, model.item_ids[fan_like])
    assert "new-hot" in around[:5]


def test_a_post_the_model_cannot_place_gets_its_communitys_popular_posts_and_says_so(client, cache, model, version):
    publish_live(cache, version, [("lonely", ["unknown"], "community-1"), ("other", [], "community-1")])
    first, posts = scroll(similar, client, "lonely")
    assert first["strategy"] == "community_popular"
    community = [model.item_ids[i] for i in model.popular_items if model.item_community_ids[i] == "community-1"]
    assert posts == community + ["other"]


def test_an_unknown_post_is_a_404_in_the_error_shape(client, version):
    body = similar(client, "no-such-post", status=404)
    assert body["error"]["code"] == "post_not_found" and "no-such-post" in body["error"]["message"]


def test_similar_posts_for_a_user_are_reordered_for_it_without_what_it_interacted_with(client, cache, model, version):
    neighbours, _ = by_cosine(model, model.item_embeddings[30], skip=30)
    cache.record_events([("user-2", neighbours[0], "like")], cap=100, ttl=60)
    first, posts = scroll(similar, client, "post-30", user_id="user-2")
    assert first["user_id"] == "user-2"
    dropped = {f"post-{i}" for i in range(5)} | {neighbours[0]}
    assert set(posts) == set(neighbours) - dropped
    assert NUM_ITEMS < RERANK_DEPTH  # so every neighbour is re-ordered
    user = model.user_index("user-2")
    scores = {p: model.item_embeddings[model.item_ids.index(p)] @ model.user_embeddings[user] for p in posts}
    scores = {p: s + model.item_biases[model.item_ids.index(p)] for p, s in scores.items()}
    assert posts == sorted(posts, key=lambda p: -scores[p])


def test_a_users_similar_list_holds_max_feed_posts_whatever_the_model_excludes(make_app, settings_env, model, version):
    client = make_app({**settings_env, "MAX_FEED_POSTS": "20"}).test_client()
    neighbours, _ = by_cosine(model, model.item_embeddings[30], skip=30)
    first, posts = scroll(similar, client, "post-30", user_id="user-2")
    assert first["pagination"]["total"] == 20
    kept = [p for p in neighbours if p not in {f"post-{i}" for i in range(5)}]
    user = model.user_index("user-2")

    def score(post_id):
        i = model.item_ids.index(post_id)
        return model.item_embeddings[i] @ model.user_embeddings[user] + model.item_biases[i]

    assert posts == sorted(kept[:RERANK_DEPTH], key=lambda p: -score(p))[:20]  # the user's best of the closest


def test_a_pinned_similar_list_keeps_its_order_across_a_publish(client, app, cache, model_dir, model, version):
    publish_live(cache, version, [("new-hot", ["x"], "hot")])
    first, expected = scroll(similar, client, "post-7")
    publish_live(cache, version, [("newer-hot", ["x"], "hot")])
    newer = with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=4), FAN)
    new_version = publish(cache, model_dir, newer, top_k=TOP_K)
    assert app.extensions["recsvc"].holder.reload().current.version == new_version
    again, offset = [], 0
    while offset is not None:
        body = similar(client, "post-7", limit=7, offset=offset, token=first["token"])
        assert (body["model_version"], body["version_fallback"]) == (version, False)
        again += post_ids(body)
        offset = body["pagination"]["next_offset"]
    assert again == expected
    assert similar(client, "post-7")["model_version"] == new_version


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 26}, "limit"),
        ({"offset": -1}, "offset"),
        ({"user_id": "a/b"}, "user_id"),
        ({"token": "nope"}, "token"),
        ({"community": "c"}, "community"),  # the feed's filter is not an argument of similar posts
    ],
)
def test_malformed_similar_arguments_are_400s_naming_them(client, version, query, field):
    body = similar(client, "post-7", status=400, **query)
    assert field in body["error"]["details"]["fields"]["query"]


# --- filtered feeds ---


def test_every_post_of_a_filtered_page_is_of_the_community_and_the_feed_is_the_users_ranking_there(
    client, model, version
):
    expected = [p for p in model_feed(model, FAN) if model.item_community_ids[model.item_ids.index(p)] == "community-0"]
    first, posts = scroll(feed, client, FAN, community="community-0")
    assert posts == expected and len(posts) == NUM_ITEMS // 2  # deeper than the precomputed 30 hold
    assert (first["strategy"], first["pagination"]["total"]) == ("personalized", NUM_ITEMS // 2)
    for page_offset in range(0, len(posts), 7):
        page = feed(client, FAN, limit=7, offset=page_offset, token=first["token"], community="community-0")
        assert all(r["metadata"]["communityId"] == "community-0" for r in page["recommendations"])


def test_a_community_feed_leaves_out_what_the_model_excludes_for_the_user(client, model, version):
    # user-2 interacted with posts 0-4: of community-0 (the even posts), 0, 2 and 4 never come back.
    expected = [p for p in model_feed(model, "user-2") if model.item_ids.index(p) % 2 == 0]
    first, posts = scroll(feed, client, "user-2", community="community-0")
    assert posts == expected and len(posts) == NUM_ITEMS // 2 - 3
    assert not {"post-0", "post-2", "post-4"} & set(posts) and first["pagination"]["total"] == len(posts)


def test_or_within_a_parameter_and_between_them(client, model, version):
    def matches(post_id, communities, tags):
        i = model.item_ids.index(post_id)
        return model.item_community_ids[i] in communities and set(model.item_tags[i]) & tags

    _, posts = scroll(feed, client, FAN, community="community-1,elsewhere", tag="tag1,nothing")
    expected = [p for p in model_feed(model, FAN) if matches(p, {"community-1"}, {"tag1"})]
    assert posts == expected and expected
    _, tagged = scroll(feed, client, FAN, tag="tag0,tag1")
    assert tagged == [p for p in model_feed(model, FAN) if matches(p, {"community-0", "community-1"}, {"tag0", "tag1"})]


def test_filters_that_match_nothing_give_an_empty_feed(client, cache, version):
    publish_live(cache, version, [("new-hot", ["x"], "hot")])
    for query in ({"community": "nowhere"}, {"tag": "nothing"}, {"community": "hot", "tag": "tag0"}):
        body = feed(client, FAN, **query)
        assert post_ids(body) == []
        assert body["pagination"] == {"total": 0, "limit": 10, "offset": 0, "has_more": False, "next_offset": None}


def test_a_community_with_fewer_posts_than_a_page_has_just_those_fresh_ones(client, cache, version):
    publish_live(cache, version, [("new-hot", ["x"], "hot"), ("new-cold", [], "cold"), ("hot-2", [], "hot")])
    body = feed(client, FAN, limit=10, community="hot")
    assert set(post_ids(body)) == {"new-hot", "hot-2"}
    assert all(r["fresh"] for r in body["recommendations"])
    assert body["pagination"]["has_more"] is False and body["pagination"]["total"] == 2


def test_fresh_posts_that_match_are_merged_and_exclusions_apply(client, cache, model, version):
    publish_live(cache, version, [("new-0", ["x"], "community-0"), ("new-1", [], "community-1")])
    in_community = [p for p in model_feed(model, FAN) if model.item_ids.index(p) % 2 == 0]
    cache.record_events([(FAN, in_community[0], "view")], cap=100, ttl=60)
    _, posts = scroll(feed, client, FAN, community="community-0")
    assert "new-0" in posts and "new-1" not in posts and in_community[0] not in posts
    assert [p for p in posts if p != "new-0"] == in_community[1:]


def test_users_the_model_does_not_know_get_the_communitys_popular_posts(client, model, version):
    _, posts = scroll(feed, client, "stranger", community="community-1")
    assert posts == [model.item_ids[i] for i in model.popular_items if model.item_community_ids[i] == "community-1"]


def test_a_pinned_filtered_scroll_keeps_its_order_across_a_publish(client, app, cache, model_dir, model, version):
    publish_live(cache, version, [("new-0", ["x"], "community-0")])
    first, expected = scroll(feed, client, FAN, community="community-0")
    publish_live(cache, version, [("newer-0", ["x"], "community-0")])
    cache.record_events([(FAN, expected[3], "like")], cap=100, ttl=60)
    newer = with_features(random_model(num_users=20, num_items=NUM_ITEMS, seed=4), FAN)
    publish(cache, model_dir, newer, top_k=TOP_K)
    app.extensions["recsvc"].holder.reload()
    again, offset = [], 0
    while offset is not None:
        body = feed(client, FAN, limit=7, offset=offset, token=first["token"], community="community-0")
        assert (body["model_version"], body["version_fallback"]) == (version, False)
        again += post_ids(body)
        offset = body["pagination"]["next_offset"]
    assert again == expected
    assert "newer-0" in post_ids(feed(client, FAN, limit=25, community="community-0"))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"community": "a,,b"}, "community"),
        ({"community": ""}, "community"),
        ({"tag": ",".join(f"t{n}" for n in range(21))}, "tag"),
        ({"tag": "x" * 129}, "tag"),
        ({"communities": "a"}, "communities"),
    ],
)
def test_malformed_filters_are_400s_naming_the_parameter(client, version, query, field):
    body = feed(client, FAN, status=400, **query)
    assert field in body["error"]["details"]["fields"]["query"]


def test_the_openapi_document_states_the_bounds(client):
    spec = client.get("/openapi.json").get_json()
    parameters = {p["name"]: p for p in spec["paths"]["/recommendations/{user_id}"]["get"]["parameters"]}
    assert parameters["community"]["schema"]["maxLength"] == 20 * 129 - 1
    path = spec["paths"]["/posts/{post_id}/similar"]
    similar_parameters = {p["name"]: p for p in path["get"]["parameters"] + path.get("parameters", [])}
    assert {"limit", "offset", "token", "user_id", "post_id"} <= set(similar_parameters)
    assert similar_parameters["limit"]["schema"]["maximum"] == 25
    assert "404" in spec["paths"]["/posts/{post_id}/similar"]["get"]["responses"]


TOKEN = "20261126T101500Z-1a2b3c4d.3.1764398400123456"


@pytest.mark.parametrize(
    ("schema", "query", "plain"),
    [
        (RecommendationsQuerySchema(), "community=a,b&tag=x", True),
        (RecommendationsQuerySchema(), "limit=5&community=a", True),
        (RecommendationsQuerySchema(), "community=a,,b", False),
        (RecommendationsQuerySchema(), "tag=", False),
        (SimilarQuerySchema(), "", True),
        (SimilarQuerySchema(), f"limit=5&offset=10&token={TOKEN}&user_id=user-1", True),
        (SimilarQuerySchema(), "user_id=a/b", False),
        (SimilarQuerySchema(), "user_id=", False),
        (SimilarQuerySchema(), "limit=26", False),
        (SimilarQuerySchema(), "token=nope", False),
        (SimilarQuerySchema(), "exclude=a", False),
    ],
)
def test_the_query_shortcuts_agree_with_the_full_parse(app, schema, query, plain):
    def parse(parser_class):
        try:
            return "ok", parser_class.parse(ArgumentsParser(), schema, location="query")
        except HTTPException as error:
            return "error", error.data["messages"]

    with app.test_request_context(f"/anything?{query}"):
        shortcut = schema.plain_load(request.args)
        assert (shortcut is not None) == plain
        if plain:
            assert parse(FlaskParser) == ("ok", shortcut)
        assert parse(ArgumentsParser) == parse(FlaskParser)


def test_a_version_reloaded_in_a_worker_has_its_pages_ready_before_any_request(app, cache, model_dir):
    """The feed prepares a version before the holder swaps it in: the first requests of the new version find its
    item entries, community index and similar-post view built, rather than building them (a second each at
    200,000 posts, while the worker's other requests wait)."""
    runtime = app.extensions["recsvc"]
    publish(cache, model_dir, random_model(num_users=5, num_items=30, seed=1))
    runtime.holder.get()
    new_version = publish(cache, model_dir, random_model(num_users=5, num_items=40, seed=2))
    assert runtime.holder.reload().current.version == new_version
    loaded = runtime.holder.current
    feed = runtime.feed
    assert len(feed._views.get(new_version).metadata) == 40
    assert feed._catalogues.get(new_version) is not None and feed._units.get(new_version) is not None
    assert feed.unit_items(loaded) is feed._units.get(new_version)
