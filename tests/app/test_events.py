"""POST /events: the token, a batch recorded whole or not at all, bad entries named, bounds, the feed's reaction."""

from __future__ import annotations

import json

import pytest

from testing.environment import ADMIN_TOKEN
from testing.factories import random_model
from testing.service import publish

EVENTS_TOKEN = "events-token-0123456789abcdef"


@pytest.fixture
def events_env(settings_env):
    return {**settings_env, "EVENTS_TOKEN": EVENTS_TOKEN}


@pytest.fixture
def client(make_app, events_env):
    return make_app(events_env).test_client()


def auth(token=EVENTS_TOKEN):
    return {"Authorization": f"Bearer {token}"}


def event(user="user-1", post="post-1", kind="like", at="2026-11-29T06:00:00Z"):
    return {"user_id": user, "post_id": post, "type": kind, "created_at": at}


def test_a_batch_is_recorded_and_the_feed_reflects_it_at_once(client, cache, model_dir):
    model = random_model(num_users=5, num_items=20, seed=1)
    publish(cache, model_dir, model, top_k=10)
    top = [r["post_id"] for r in client.get("/recommendations/user-1?limit=3").get_json()["recommendations"]]
    batch = [event(post=top[0]), event(post=top[1], kind="view"), event(user="user-2", kind="impression")]
    response = client.post("/events", json={"events": batch}, headers=auth())
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["recorded"] == 3 and body["arrived_at"].endswith("+00:00")
    seen, shown = cache.exclusions("user-1")
    assert set(seen) == {top[0], top[1]} and shown == {}
    assert set(cache.exclusions("user-2")[1]) == {"post-1"}
    after = [r["post_id"] for r in client.get("/recommendations/user-1?limit=3").get_json()["recommendations"]]
    assert top[0] not in after and top[1] not in after and after[0] == top[2]


def test_the_worker_that_recorded_a_batch_forgets_its_users_exclusions_at_once(make_app, events_env, cache, model_dir):
    """A client's next page usually comes on the same keep-alive connection, so to the same worker: it must not
    wait for the events message to reach that worker's reloader thread. Under load it once did not arrive in
    time, and the NestJS client's next page still showed the post it had just liked (CI, 2026-12-01)."""
    app = make_app(events_env)
    client = app.test_client()
    publish(cache, model_dir, random_model(num_users=5, num_items=20, seed=1), top_k=10)
    mirror = app.extensions["recsvc"].feed.mirror
    mirror.connected(0)  # as the reloader does once subscribed; none runs here, so no events message arrives
    top = [r["post_id"] for r in client.get("/recommendations/user-1?limit=3").get_json()["recommendations"]]
    assert mirror.exclusions("user-1") is not None
    assert client.post("/events", json={"events": [event(post=top[0])]}, headers=auth()).status_code == 200
    assert mirror.exclusions("user-1") is None
    after = [r["post_id"] for r in client.get("/recommendations/user-1?limit=3").get_json()["recommendations"]]
    assert top[0] not in after and after[0] == top[1]


@pytest.mark.parametrize(
    ("events", "path"),
    [
        ([event(), event(kind="share")], "events[1].type"),
        ([event(), event(), event(post="")], "events[2].post_id"),
        ([event(user="a/b")], "events[0].user_id"),
        ([event(at="yesterday")], "events[0].created_at"),
        ([{**event(), "extra": 1}], "events[0].extra"),
        ([{"user_id": "u", "post_id": "p", "type": "view"}], "events[0].created_at"),
        ([], "events"),
        ([event()] * 1001, "events"),
    ],
)
def test_a_bad_batch_is_refused_whole_naming_the_bad_entry(client, cache, events, path):
    response = client.post("/events", json={"events": events}, headers=auth())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_arguments"
    assert path in error["message"]
    assert path in error["details"]["fields"]["json"]
    assert cache.exclusions("user-1") == ({}, {})  # nothing of the batch was applied


def test_a_full_batch_of_a_thousand_is_taken(client, cache):
    events = [event(post=f"p{n}", kind="view") for n in range(1000)]
    assert client.post("/events", json={"events": events}, headers=auth()).get_json()["recorded"] == 1000
    assert len(cache.exclusions("user-1")[0]) == 1000


def test_the_body_is_bounded(client):
    response = client.post(
        "/events", data=b'{"events": [' + b" " * (1024 * 1024) + b"]}", content_type="application/json", headers=auth()
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"]


def padded_batch(size):
    """A valid batch of one event, padded with trailing spaces to ``size`` bytes."""
    body = json.dumps({"events": [event()]}).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize(("size", "status"), [(1024 * 1024, 200), (1024 * 1024 + 1, 413)])
def test_the_bound_is_one_mebibyte(client, size, status):
    response = client.post("/events", data=padded_batch(size), content_type="application/json", headers=auth())
    assert response.status_code == status, response.get_json()


def test_a_batch_not_sent_as_json_is_a_415_naming_the_content_type(client, cache):
    body = json.dumps({"events": [event()]})
    response = client.post("/events", data=body, content_type="text/plain", headers=auth())
    assert response.status_code == 415
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert cache.exclusions("user-1") == ({}, {})


def test_not_json_is_a_400_saying_where_parsing_stopped(client):
    response = client.post("/events", data="nope", content_type="application/json", headers=auth())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_arguments" and error["message"].startswith("the body is not valid JSON: ")
    assert list(error["details"]["fields"]["json"]) == ["body"]  # a map by name, as for every other location


@pytest.mark.parametrize("headers", [{}, auth("wrong-token-0123456789"), {"Authorization": EVENTS_TOKEN}])
def test_the_events_token_is_required(client, headers):
    response = client.post("/events", json={"events": [event()]}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="recsvc events"'


def test_the_admin_token_serves_when_no_events_token_is_set(make_app, settings_env):
    client = make_app(settings_env).test_client()
    assert client.post("/events", json={"events": [event()]}, headers=auth(ADMIN_TOKEN)).status_code == 200
    assert client.post("/events", json={"events": [event()]}, headers=auth()).status_code == 401


def test_without_any_token_events_are_disabled(make_app, settings_env):
    env = {k: v for k, v in settings_env.items() if k != "ADMIN_TOKEN"}
    response = make_app(env).test_client().post("/events", json={"events": [event()]}, headers=auth())
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "events_disabled"


def test_the_rate_is_limited_per_client(make_app, events_env):
    client = make_app({**events_env, "EVENTS_RATE_LIMIT": "2/minute"}).test_client()
    responses = [client.post("/events", json={"events": [event()]}, headers=auth()) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(responses[2].headers["Retry-After"]) <= 60
    wrong = client.post("/events", json={"events": [event()]}, headers=auth("wrong-token-0123456789"))
    assert wrong.status_code == 429  # counted before the token is checked: no guessing at full speed
    assert client.get("/recommendations/user-1").status_code != 429  # others keep RATE_LIMIT (unset: none)


def test_without_redis_nothing_is_recorded_and_the_client_is_told_to_resend(make_app, events_env, dead_redis_url):
    client = make_app({**events_env, "REDIS_URL": dead_redis_url}).test_client()
    response = client.post("/events", json={"events": [event()]}, headers=auth())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "cache_unavailable"


def test_the_openapi_document_describes_the_batch_and_its_token(client):
    spec = client.get("/openapi.json").get_json()
    post = spec["paths"]["/events"]["post"]
    assert post["security"] == [{"eventsToken": []}]
    batch = spec["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    kinds = spec["components"]["schemas"]["Event"]["properties"]["type"]["enum"]
    assert kinds == ["view", "like", "comment", "impression"]


def test_another_method_is_a_405_naming_post(client):
    response = client.get("/events", headers=auth())
    assert response.status_code == 405 and response.get_json()["error"]["details"]["allowed_methods"] == [
        "OPTIONS",
        "POST",
    ]
