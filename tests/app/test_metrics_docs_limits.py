"""/metrics, the OpenAPI document with its offline Swagger UI and ReDoc, rate limiting, the circuit breaker."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from limits.storage import SCHEMES
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from app.cache_guard import CacheGuard, CacheUnavailable
from app.limiter import storage
from common.config import Settings
from common.recs_cache import rate_limit_prefix
from testing.environment import REDIS_PREFIX
from testing.factories import random_model
from testing.service import publish

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"


def sample(text, name, **labels):
    """The value of one sample of the Prometheus text ``text`` (0.0 if absent); other labels may exist."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_cached_labelled_children_are_the_metrics_own():
    child = metrics.labelled(metrics.PAGES, "popular", "model")
    assert child is metrics.PAGES.labels("popular", "model")
    assert metrics.labelled(metrics.PAGES, "popular", "model") is child


def test_a_workers_metrics_file_not_sized_yet_costs_no_scrape(tmp_path, monkeypatch):
    """prometheus_client creates a worker's file empty and sizes it after (client_python#1199): a scrape in
    between, or after a worker killed in between, must still answer with every other worker's metrics."""
    sized = MmapedDict(str(tmp_path / "counter_101.db"))
    sized.write_value(mmap_key("recsvc_pages", "recsvc_pages_total", ["strategy"], ["popular"], "pages"), 3.0, 0.0)
    sized.close()
    (tmp_path / "counter_102.db").touch()  # a worker's file created, not yet sized
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    body, _ = metrics.render(lambda: None)
    samples = [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]
    assert [(s.name, s.labels, s.value) for s in samples if s.name == "recsvc_pages_total"] == [
        ("recsvc_pages_total", {"strategy": "popular"}, 3.0)
    ]


def test_metrics_count_requests_pages_and_the_model(client, cache, model_dir):
    version = publish(cache, model_dir, random_model(seed=1), top_k=5)
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        assert client.get("/recommendations/user-1").status_code == 200
    assert client.get("/recommendations/stranger").status_code == 200
    assert client.get("/recommendations/user-1?limit=0").status_code == 400
    after = client.get("/metrics").get_data(as_text=True)
    route = "/recommendations/<user_id>"

    def grew(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("recsvc_http_requests_total", endpoint=route, method="GET", status="200") == 4
    assert grew("recsvc_http_requests_total", endpoint=route, method="GET", status="400") == 1
    assert grew("recsvc_http_request_duration_seconds_count", endpoint=route) == 5
    assert grew("recsvc_recommendation_pages_total", strategy="personalized", source="cache") == 3
    assert grew("recsvc_recommendation_pages_total", strategy="popular", source="cache") == 1
    assert sample(after, "recsvc_model_info", version=version) == 1
    assert 0 <= sample(after, "recsvc_model_age_seconds") < 3600
    assert "user-1" not in after  # user ids never become labels


def test_openapi_document_describes_every_endpoint_and_the_error_shape(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {
        "/",
        "/recommendations/{user_id}",
        "/posts/{post_id}/similar",
        "/events",
        "/health",
        "/admin/reload-model",
        "/admin/model-status",
        "/admin/experiments",
    }
    assert documented | {"/metrics"} <= set(spec["paths"])
    path = spec["paths"]["/recommendations/{user_id}"]
    get = path["get"]
    assert get["summary"] == "A page of the user's feed"
    assert {p["name"] for p in get["parameters"] + path["parameters"]} == {
        "user_id",
        "limit",
        "offset",
        "version",
        "token",
        "exclude",
        "community",
        "tag",
    }
    assert next(p for p in path["parameters"] if p["name"] == "user_id")["schema"]["maxLength"] == 128
    assert {"200", "400", "503"} <= set(get["responses"])
    error = spec["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["error"]["$ref"].endswith("/Error")
    assert set(spec["components"]["schemas"]["Error"]["properties"]) == {"code", "message", "details"}
    assert spec["paths"]["/admin/reload-model"]["post"]["security"] == [{"adminToken": []}]


# A failed reload answers its outcome and an unready worker its health checks (DESIGN section 7), not an error.
ANSWERED_WITH_THEIR_OWN_BODY = {("/admin/reload-model", "500"), ("/health", "503")}


def test_every_documented_error_has_the_error_shape_and_the_pages_document_gunicorns_414(client):
    spec = client.get("/openapi.json").get_json()
    named = spec["components"]["responses"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status == "default" or int(status) < 400 or (path, status) in ANSWERED_WITH_THEIR_OWN_BODY:
                    continue
                if "$ref" in response:
                    response = named[response["$ref"].rsplit("/", 1)[1]]
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                assert schema.get("$ref", "").endswith("/ErrorResponse"), (path, method, status)
    for path in ("/recommendations/{user_id}", "/posts/{post_id}/similar"):
        assert "8,190 bytes" in spec["paths"][path]["get"]["responses"]["414"]["description"]


def test_openapi_document_says_what_a_score_means_and_what_a_client_may_do_with_it(client):
    """Personalised pages carry LightFM's raw scores (-44.3), popular ones user counts (114.0): say so."""
    spec = client.get("/openapi.json").get_json()
    score = spec["components"]["schemas"]["Recommendation"]["properties"]["score"]["description"]
    facts = ("LightFM", "`features`", "distinct users", "`fresh`", "0", "`rank`", "not comparable", "versions")
    for fact in facts:
        assert fact in score, fact


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_service_itself(client, page):
    html = client.get(page).get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/static/vendor/") for a in assets), assets
    missing = [a for a in assets if not (STATIC / a.removeprefix("/static/")).is_file()]
    assert not missing, f"missing {missing}: run app/static/fetch-docs-assets.sh"
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 1000
        response.close()
    if page == "/docs":  # Swagger UI's validator badge would call an online service
        assert '"validatorUrl": null' in html
    else:  # ReDoc 3's bundle is an ES module (a classic script stops at import.meta), and phones home unless told
        assert f'<script type="module" src="{assets[0]}">' in html
        assert 'disable-telemetry="true"' in html


def test_browsers_asking_for_a_favicon_get_no_content_rather_than_an_error(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 204 and not response.data


def test_rate_limit_answers_429_in_the_error_shape_and_spares_health(make_app, settings_env, redis_url):
    client = make_app({**settings_env, "RATE_LIMIT": "3/minute"}).test_client()
    statuses = [client.get("/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/")
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert all(client.get("/health").status_code in (200, 503) for _ in range(5))
    keys = redis.Redis.from_url(redis_url).keys("*")
    assert keys and all(k.decode().startswith(rate_limit_prefix(REDIS_PREFIX)) for k in keys)


@pytest.mark.parametrize(
    ("redis_url", "uri", "tls"),
    [
        ("redis://h:6379/2", "redis://h:6379/2", {}),
        ("unix:///run/redis.sock?db=2", "redis+unix:///run/redis.sock?db=2", {}),
        ("redis+cluster://h:7000,h:7001", "redis+cluster://h:7000,h:7001", {}),
        ("rediss+cluster://h:7000,h:7001", "redis+cluster://h:7000,h:7001", {"ssl": True}),
        (
            "rediss+cluster://h:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
            "redis+cluster://h:7000",
            {"ssl": True, "ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required"},
        ),
    ],
)
def test_the_rate_limits_storage_is_redis_url_in_the_limits_librarys_spelling(redis_url, uri, tls):
    """limits knows a Unix socket as redis+unix:// and a cluster over TLS as redis+cluster:// with the TLS
    options; the counters stay under the limiter's prefix."""
    got_uri, options = storage(replace(Settings(), redis_url=redis_url, redis_prefix=REDIS_PREFIX))
    assert got_uri == uri and {k: v for k, v in options.items() if k.startswith("ssl")} == tls
    assert options["key_prefix"] == rate_limit_prefix(REDIS_PREFIX)
    assert got_uri.partition("://")[0] in SCHEMES


def test_rate_limit_keeps_serving_when_redis_is_down(make_app, settings_env, dead_redis_url):
    client = make_app({**settings_env, "RATE_LIMIT": "100/minute", "REDIS_URL": dead_redis_url}).test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]


def test_circuit_breaker_skips_redis_during_the_cooldown(dead_redis_url):
    now = [100.0]
    guard = CacheGuard(cooldown=2.0, clock=lambda: now[0])
    client = redis.Redis.from_url(dead_redis_url)
    calls = []

    def ping():
        calls.append(1)
        return client.ping()

    with pytest.raises(CacheUnavailable):
        guard.call(ping)
    assert not guard.available
    with pytest.raises(CacheUnavailable):
        guard.call(ping)
    assert len(calls) == 1  # skipped without touching Redis
    now[0] += 2.0
    assert guard.available
    with pytest.raises(CacheUnavailable):
        guard.call(ping)
    assert len(calls) == 2
    client.close()
