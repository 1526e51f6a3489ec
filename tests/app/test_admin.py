"""/admin/reload-model and /admin/model-status: token checks, reload outcomes, status fields."""

from __future__ import annotations

import pytest

from testing.factories import random_model
from testing.service import publish


@pytest.fixture
def first_version(cache, model_dir):
    return publish(cache, model_dir, random_model(num_users=12, num_items=40, seed=1), top_k=30)


def test_admin_is_disabled_without_a_configured_token(make_app, settings_env):
    env = {k: v for k, v in settings_env.items() if k != "ADMIN_TOKEN"}
    client = make_app(env).test_client()
    for response in (client.post("/admin/reload-model"), client.get("/admin/model-status")):
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}, {"Authorization": ""}],
)
def test_missing_or_wrong_token_is_401(client, headers):
    for response in (client.post("/admin/reload-model", headers=headers), client.get("/admin/model-status")):
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_reload_of_the_held_version_reports_nothing_to_do(client, admin_headers, first_version):
    assert client.get("/health").status_code == 200  # the first request loads the model
    body = client.post("/admin/reload-model", headers=admin_headers).get_json()
    assert body["success"] is True
    details = body["details"]
    assert details["reloaded"] is False and "already loaded" in details["reason"]
    assert details["previous_version"] == details["current_version"] == first_version
    assert details["num_users"] == 12 and details["num_items"] == 40


def test_reload_swaps_in_a_newly_published_version(client, app, admin_headers, cache, model_dir, first_version):
    assert app.extensions["recsvc"].holder.get().version == first_version
    second = publish(cache, model_dir, random_model(num_users=15, num_items=45, seed=2), top_k=30)
    response = client.post("/admin/reload-model", headers=admin_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True and body["details"]["reloaded"] is True
    d = body["details"]
    assert (d["previous_version"], d["current_version"]) == (first_version, second)
    assert d["previous_reload_time"] <= d["current_reload_time"]
    assert (d["num_users"], d["num_items"]) == (15, 45)
    assert client.get("/recommendations/user-1").get_json()["model_version"] == second


def test_failed_reload_keeps_the_old_model_and_shows_in_the_status(
    client, app, admin_headers, cache, model_dir, first_version
):
    app.extensions["recsvc"].holder.get()
    second = publish(cache, model_dir, random_model(num_users=15, num_items=45, seed=2), top_k=30)
    (model_dir / f"{second}.npz").write_bytes(b"corrupted")
    response = client.post("/admin/reload-model", headers=admin_headers)
    assert response.status_code == 500
    body = response.get_json()
    assert body["success"] is False and body["details"]["reloaded"] is False
    assert body["details"]["current_version"] == first_version
    assert second in body["message"]
    page = client.get("/recommendations/user-1").get_json()
    assert page["model_version"] == first_version
    status = client.get("/admin/model-status", headers=admin_headers).get_json()
    assert status["version"] == first_version and status["cache_version"] == second
    assert status["last_load_error"]["version"] == second


def test_model_status_reports_the_held_model(client, admin_headers, cache, first_version):
    cache.record_training_outcome({"status": "published", "version": first_version})
    status = client.get("/admin/model-status", headers=admin_headers).get_json()
    assert status["version"] == first_version and status["cache_version"] == first_version
    assert (status["num_users"], status["num_items"]) == (12, 40)
    assert status["metrics"] == {"ndcg@10": 0.25}
    assert status["age_seconds"] >= 0 and status["created_at"] and status["loaded_at"]
    assert status["last_training_outcome"] == {"status": "published", "version": first_version}
    assert status["last_load_error"] is None and status["worker_pid"] > 0
