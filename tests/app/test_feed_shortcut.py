"""The feed's shortcut (app.feed_shortcut): plain pages answered before Flask, exactly as the view answers them."""

from __future__ import annotations

import json
import logging

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from app.feed_shortcut import FeedShortcut, query_arguments
from app.request_id import HEADER, RequestIdFilter
from testing.factories import random_model
from testing.service import publish


@pytest.fixture
def model():
    return random_model(num_users=40, num_items=60, seed=1)


@pytest.fixture
def version(cache, model_dir, model):
    return publish(cache, model_dir, model, top_k=30)


@pytest.fixture
def flask_runs(app):
    """How many requests reached Flask's request machinery (its before-request hooks)."""
    runs = []
    app.before_request(lambda: runs.append(1) and None)
    return runs


def answer(wsgi, url, headers=None, method="GET"):
    response = Client(wsgi, Response).open(url, method=method, headers=headers or {})
    return response.status_code, dict(response.headers), response.get_data()


def same_page(body, other):
    """Two answers of one page: equal but for the token's cutoff (Redis's clock when each was read)."""
    first, second = json.loads(body), json.loads(other)
    cut = [page.pop("token").rsplit(".", 1)[0] for page in (first, second)]
    return first == second and cut[0] == cut[1] and len(body) - len(other) in (-1, 0, 1)


PLAIN = [
    "/recommendations/user-3",
    "/recommendations/user-3?limit=7&offset=7",
    "/recommendations/user-3?limit=5&exclude=post-1,post-2",
    "/recommendations/user-3?limit=4&community=community-1",
    "/recommendations/user-3?limit=5&version=20200101T000000Z-00000000",  # gone: a fresh scroll
    "/recommendations/stranger?limit=3",
    "/recommendations/us%C3%A9r-3",  # a UTF-8 id, percent-encoded
    "/posts/post-1/similar",
    "/posts/post-1/similar?limit=3&offset=2&user_id=user-3",
]


@pytest.mark.parametrize("url", PLAIN)
def test_plain_pages_skip_flask_and_equal_the_views_answer(app, version, flask_runs, url):
    shortcut = app.wsgi_app
    assert isinstance(shortcut, FeedShortcut)
    headers = {HEADER: "caller-id-1"}
    status, got_headers, body = answer(app, url, headers)
    assert (status, flask_runs) == (200, [])  # answered without Flask's request machinery
    view_status, view_headers, view_body = answer(shortcut.flask_wsgi, url, headers)  # the view's answer
    assert len(flask_runs) == 1
    assert view_status == status and same_page(body, view_body)
    assert [(k, v) for k, v in got_headers.items() if k != "Content-Length"] == [
        (k, v) for k, v in view_headers.items() if k != "Content-Length"
    ]
    assert list(got_headers) == ["Content-Type", "Content-Length", HEADER]
    assert int(got_headers["Content-Length"]) == len(body)
    assert got_headers[HEADER] == "caller-id-1"


def test_a_pinned_scroll_through_the_shortcut_equals_the_views(app, version):
    first = Client(app, Response).get("/recommendations/user-3?limit=5").get_json()
    url = f"/recommendations/user-3?limit=5&offset=5&token={first['token']}"
    status, headers, body = answer(app, url)
    assert status == 200 and answer(app.wsgi_app.flask_wsgi, url)[2] == body  # the token pins the cutoff too


def test_a_made_up_request_id_is_new_for_every_page(app, version):
    ids = {answer(app, "/recommendations/user-3")[1][HEADER] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)


@pytest.mark.parametrize(
    ("url", "headers", "method", "status"),
    [
        ("/recommendations/user-3?limit=0", {}, "GET", 400),  # out of range: the view words the error
        ("/recommendations/user-3?limit=+5", {}, "GET", 200),  # not plainly written: webargs reads it
        ("/recommendations/user-3?limt=5", {}, "GET", 400),  # an argument the endpoint does not take
        ("/recommendations/user-3?token=garbage", {}, "GET", 400),
        ("/recommendations/user%2F3", {}, "GET", 400),  # '/' in the id
        ("/recommendations/user%E2%80%AE3", {}, "GET", 400),  # a bidi control
        ("/recommendations/", {}, "GET", 404),
        ("/recommendations/user-3", {"Origin": "https://app.example"}, "GET", 200),  # CORS is Flask's
        ("/recommendations/user-3", {}, "HEAD", 200),
        ("/recommendations/user-3", {}, "POST", 405),
        ("/posts/post-999/similar", {}, "GET", 404),  # unknown: the shortcut tried, Flask answers
        ("/posts/post-1/similar?limit=0", {}, "GET", 400),
        ("/posts/post-1/similar?user_id=a%2Fb", {}, "GET", 400),
        (f"/posts/{'p' * 129}/similar", {}, "GET", 404),  # longer than an id: the view's 404
        ("/posts/post-1/similar/", {}, "GET", 404),
        ("/posts/post-1", {}, "GET", 404),
    ],
)
def test_other_requests_go_to_flask(app, version, flask_runs, url, headers, method, status):
    got_status, got_headers, _ = answer(app, url, headers, method)
    assert got_status == status and flask_runs == [1]
    view_status, view_headers, _ = answer(app.wsgi_app.flask_wsgi, url, headers, method)
    assert (view_status, list(view_headers)) == (got_status, list(got_headers))


@pytest.mark.parametrize(
    ("path", "query", "user_id"),
    [
        ("/recommendations/us\xc3\xa9r-3", "limit=3", "us\u00e9r-3"),  # UTF-8 bytes, as a WSGI server passes them
        ("/recommendations/\xff", "", "\ufffd"),  # not UTF-8: read as Werkzeug reads it
        ("/recommendations/user-3", "exclude=post-%FF", "user-3"),  # kept as written, as Werkzeug keeps it
        ("/recommendations/user-3", "offset=-1", None),  # an argument not plainly valid: Flask words its 400
        ("/recommendations/user-3", "limit=\xff", None),  # a query that is not UTF-8: Flask's
    ],
)
def test_the_path_and_query_are_read_as_werkzeug_reads_them(app, path, query, user_id):
    found = app.wsgi_app.plain_request({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query})
    assert (found[1] if found is not None else None) == user_id


@pytest.mark.parametrize(
    "query",
    [
        "",
        "limit=20&offset=40",
        "token=v1.2.1700000000000000&exclude=post-1,post-2",
        "limit=5&limit=7&offset",  # the first of a repeated argument; a name without '=' is blank
        "&&limit=3&",  # empty fields are skipped
        "=3&a=b=c&~x=-_.:",
        "exclude=post%2C1&limit=2",  # escapes: Werkzeug's own reading
        "community=a+b&tag=%FF",  # '+' is a space; an undecodable escape is kept as written
        "tag=caf\xc3\xa9",  # UTF-8 bytes, as a WSGI server passes them
    ],
)
def test_query_arguments_are_those_werkzeug_reads(query):
    werkzeug_args = Request({"REQUEST_METHOD": "GET", "QUERY_STRING": query}).args
    assert dict(query_arguments(query).items()) == dict(werkzeug_args.items())


def test_a_query_that_is_not_utf8_is_left_to_flask():
    assert query_arguments("limit=\xff") is None


def test_without_a_model_flask_answers_the_503(app, flask_runs):
    status, _, body = answer(app, "/recommendations/user-3")
    assert status == 503 and b"model_unavailable" in body
    assert flask_runs == [1]  # the shortcut tried, then left the page to Flask


def test_log_records_written_during_a_shortcut_page_carry_its_request_id(app, version, cache, caplog, flask_runs):
    cache.client.delete(cache.recs_key(version, "user-3"))  # the page logs that the list is missing
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING, logger="app.feed.service"):
        assert answer(app, "/recommendations/user-3", {HEADER: "traced-42"})[0] == 200
    assert flask_runs == []
    missing = [r for r in caplog.records if "no cached list" in r.getMessage()]
    assert [r.request_id for r in missing] == ["traced-42"]
    logging.getLogger("app.feed.service").warning("after the page")
    assert caplog.records[-1].request_id == "-"  # the id is not left bound to the thread


def test_with_rate_limiting_every_page_goes_through_flask(make_app, settings_env, cache, model_dir, model):
    app = make_app({**settings_env, "RATE_LIMIT": "1000/second"})
    publish(cache, model_dir, model, top_k=30)
    assert not isinstance(app.wsgi_app, FeedShortcut)
    _, headers, _ = answer(app, "/recommendations/user-3")
    assert "X-RateLimit-Limit" in headers


def test_api_feed_shortcut_0_leaves_every_page_to_flask(make_app, settings_env, version):
    app = make_app({**settings_env, "API_FEED_SHORTCUT": "0"})
    runs = []
    app.before_request(lambda: runs.append(1) and None)
    assert not isinstance(app.wsgi_app, FeedShortcut)
    assert answer(app, "/recommendations/user-3")[0] == 200 and runs == [1]
