"""Bad input and unexpected failures: always a JSON error of the DESIGN shape, never HTML, never a 500."""

from __future__ import annotations

import re

import pytest

from testing.factories import random_model
from testing.service import publish


@pytest.fixture(autouse=True)
def published(cache, model_dir):
    publish(cache, model_dir, random_model(num_users=10, num_items=40, seed=3), top_k=30)


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert response.headers["X-Request-ID"]
    return body["error"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=26", "limit"),  # MAX_PAGE_LIMIT is 25 in the test settings
        ("limit=-3", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("offset=-1", "offset"),
        ("offset=ten", "offset"),
        ("offset=99999999999", "offset"),
        ("version=latest", "version"),
        ("version=20261126T101500Z-1A2B3C4D", "version"),
    ],
)
def test_bad_query_arguments_are_400_naming_the_field(client, query, field):
    error = assert_error(client.get(f"/recommendations/user-1?{query}"), 400, "invalid_arguments")
    assert field in error["details"]["fields"]["query"]


@pytest.mark.parametrize(
    "user_id",
    ["x" * 129, "bad%01id", "tab%09id", "new%0Aline", "%E2%80%A8separator"],
)
def test_malformed_user_ids_are_400(client, user_id):
    error = assert_error(client.get(f"/recommendations/{user_id}"), 400, "invalid_arguments")
    assert "user_id" in error["details"]["fields"]["path"]


@pytest.mark.parametrize("user_id", ["x" * 128, "user with spaces", "ünïcødé-ユーザー", "cuid_ckx1y2z3"])
def test_unusual_but_valid_user_ids_are_served(client, user_id):
    response = client.get(f"/recommendations/{user_id}")
    assert response.status_code == 200
    assert response.get_json()["user_id"] == user_id


@pytest.mark.parametrize("path", ["/recommendations/user%2F0001", "/recommendations/user/0001", "/recommendations/a/"])
def test_a_slash_in_the_user_id_is_a_400_naming_it(client, path):
    """The server sees %2F decoded: the id ``user/0001`` has a '/', which DESIGN section 7 calls a 400."""
    error = assert_error(client.get(path), 400, "invalid_arguments")
    assert "'/'" in error["details"]["fields"]["path"]["user_id"][0]


@pytest.mark.parametrize(
    "path", ["/no/such/path", "/recommendations/", "/static/vendor/none.js", "/docs/more", "/openapi.json/x"]
)
def test_unknown_paths_are_json_404s(client, path):
    error = assert_error(client.get(path), 404, "not_found")
    assert "If you entered the URL manually" not in error["message"]  # Werkzeug's page text, not ours


def test_unknown_query_arguments_are_400_naming_them_on_every_endpoint_that_takes_some(client, admin_headers):
    """A misspelt argument (``limt=5``) must not be ignored: the client would get another page than it asked for."""
    spec = client.get("/openapi.json").get_json()
    checked = []
    for path, item in spec["paths"].items():
        get = item.get("get", {})
        if not any(p["in"] == "query" for p in get.get("parameters", [])):
            continue
        url = re.sub(r"\{[^}]+\}", "user-1", path)
        for query in ("limt=5", "limit=3&limt=5", "LIMIT=3"):
            error = assert_error(client.get(f"{url}?{query}", headers=admin_headers), 400, "invalid_arguments")
            unknown = query.rpartition("&")[2].partition("=")[0]
            assert list(error["details"]["fields"]["query"]) == [unknown], (path, error)
            assert unknown in error["message"], error
        checked.append(path)
    assert "/recommendations/{user_id}" in checked


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("offset=-1", "offset", "must be 0 or more"),
        ("offset=2147483648", "offset", "must be at most 2147483647"),
        ("offset=ten", "offset", "must be a whole number"),
        ("limit=abc", "limit", "must be a whole number"),
        ("limit=", "limit", "must be a whole number"),
        ("limit=0", "limit", "must be between 1 and 25"),
    ],
)
def test_argument_errors_are_worded_alike_and_name_only_the_bound_crossed(client, query, field, message):
    error = assert_error(client.get(f"/recommendations/user-1?{query}"), 400, "invalid_arguments")
    assert error["details"]["fields"]["query"] == {field: [message]}
    assert field in error["message"]


def test_wrong_method_is_a_json_405_listing_the_allowed_ones(client):
    response = client.post("/recommendations/user-1")
    error = assert_error(response, 405, "method_not_allowed")
    assert "GET" in error["details"]["allowed_methods"]
    assert "GET" in response.headers["Allow"]
    assert_error(client.delete("/health"), 405, "method_not_allowed")
    assert_error(client.get("/admin/reload-model"), 405, "method_not_allowed")
    assert_error(client.post("/docs"), 405, "method_not_allowed")
    assert_error(client.put("/static/vendor/VERSIONS"), 405, "method_not_allowed")


def test_unexpected_exception_is_a_json_500_and_logged(make_app, settings_env, caplog):
    app = make_app(settings_env, TESTING=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "trace-me-123"})
    error = assert_error(response, 500, "internal_error")
    assert "kaboom" not in error["message"]
    assert response.headers["X-Request-ID"] == "trace-me-123"
    assert any(r.exc_info and "kaboom" in str(r.exc_info[1]) for r in caplog.records)


def test_request_id_is_echoed_or_made_up(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made_up = client.get("/health").headers["X-Request-ID"]
    assert len(made_up) == 32
    forged = client.get("/health", headers={"X-Request-ID": 'bad"id\\ with spaces'}).headers["X-Request-ID"]
    assert forged != 'bad"id\\ with spaces' and len(forged) == 32
    assert client.get("/nope", headers={"X-Request-ID": "e-1"}).headers["X-Request-ID"] == "e-1"


def test_cors_allows_the_configured_origins_only(make_app, settings_env):
    client = make_app({**settings_env, "CORS_ORIGINS": "https://app.example"}).test_client()
    allowed = client.get("/health", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    server_to_server = client.get("/health")  # no Origin: not a CORS request, no CORS headers
    assert not [name for name in server_to_server.headers.keys() if name.startswith("Access-Control-")]


@pytest.mark.parametrize(
    ("path", "method"), [("/events", "POST"), ("/admin/reload-model", "POST"), ("/admin/model-status", "GET")]
)
def test_a_browsers_preflight_of_a_token_endpoint_is_answered_without_the_token(make_app, settings_env, path, method):
    """A preflight never carries credentials (the Fetch standard): refusing it would bar every browser."""
    client = make_app({**settings_env, "CORS_ORIGINS": "https://app.example"}).test_client()
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = client.options(path, headers=preflight)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert method in response.headers["Access-Control-Allow-Methods"]
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert client.open(path, method=method, headers={"Origin": "https://app.example"}).status_code == 401
