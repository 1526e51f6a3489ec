"""A model of another family (ALS, or the blend) serves, reloads and falls back like a LightFM one, and every
page and /admin/model-status say which family ranks it (issue 16)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml.als import train_als
from ml.families import train_model
from ml.model_config import AlsSettings, ModelConfig, write_search
from ml.settings import TrainingSettings
from testing.factories import planted_dataset
from testing.service import publish

FAST = TrainingSettings(components=8, epochs=5, num_threads=1, half_life_days=0.0)
ALS = AlsSettings(factors=8, iterations=5)


@pytest.fixture(scope="module")
def dataset():
    return planted_dataset(num_users=60, num_items=80, per_user=10)


def page(client, user_id, **query):
    response = client.get(f"/recommendations/{user_id}", query_string={"limit": 25, **query})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_an_als_model_serves_reloads_and_falls_back(
    make_app, settings_env, admin_headers, cache, model_dir, dead_redis_url, dataset
):
    model = train_als(dataset, FAST, ALS)
    first = publish(cache, model_dir, model, top_k=30, metadata={"model": {"family": "als"}})
    client = make_app(settings_env).test_client()
    user = model.user_ids[3]
    expected = [model.item_ids[i] for i in model.top_k([3], 25)[0][0]]

    cached = page(client, user)
    assert (cached["model_version"], cached["model_family"]) == (first, "als")
    assert (cached["strategy"], cached["source"]) == ("personalized", "cache")
    assert [r["post_id"] for r in cached["recommendations"]] == expected
    # ALS has no feature embeddings: a user the model does not know gets the popularity feed.
    assert page(client, "someone-new")["strategy"] == "popular"

    blended = train_model(dataset, ModelConfig(family="blend", training=FAST, als=ALS, blend_weight=0.5))
    second = publish(cache, model_dir, blended, top_k=30, metadata={"model": {"family": "blend"}})
    record = {
        "searched_at": "2026-11-29T07:00:00Z",
        "adopted": True,
        "reason": "blend adopted",
        "chosen": {"family": "blend"},
        "trials": [{"state": "COMPLETE"}, {"state": "PRUNED"}],
    }
    write_search(model_dir, record)
    reload = client.post("/admin/reload-model", headers=admin_headers).get_json()
    assert reload["success"] and reload["details"]["current_version"] == second
    assert page(client, user)["model_family"] == "blend"
    status = client.get("/admin/model-status", headers=admin_headers).get_json()
    assert (status["version"], status["model_family"]) == (second, "blend")
    assert status["search"]["reason"] == "blend adopted"
    assert status["search"]["trials"] == {"complete": 1, "pruned": 1}

    offline = make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client()
    body = page(offline, user)
    assert (body["source"], body["model_family"], body["model_version"]) == ("model", "blend", second)
    ranked = blended.top_k([3], 25)[0][0]
    assert [r["post_id"] for r in body["recommendations"]] == [blended.item_ids[i] for i in ranked]


def test_a_version_from_before_the_search_is_lightfm(client, cache, model_dir, dataset, admin_headers):
    model = train_model(dataset, ModelConfig(training=dataclasses.replace(FAST, epochs=2)))
    publish(cache, model_dir, model, top_k=30)
    assert page(client, model.user_ids[0])["model_family"] == "lightfm"
    status = client.get("/admin/model-status", headers=admin_headers).get_json()
    assert status["model_family"] == "lightfm" and status["search"] is None
    assert np.isfinite(model.item_biases).all()


def test_a_reload_to_an_als_model_serves_it_and_its_fallbacks(
    make_app, settings_env, admin_headers, cache, model_dir, dead_redis_url, dataset
):
    lightfm = train_model(dataset, ModelConfig(training=FAST))
    publish(cache, model_dir, lightfm, top_k=30)
    client = make_app(settings_env).test_client()
    user = lightfm.user_ids[5]
    assert page(client, user)["model_family"] == "lightfm"

    als = train_als(dataset, FAST, ALS)
    version = publish(cache, model_dir, als, top_k=30, metadata={"model": {"family": "als"}})
    reload = client.post("/admin/reload-model", headers=admin_headers).get_json()
    assert reload["success"] and reload["details"]["current_version"] == version
    expected = [als.item_ids[i] for i in als.top_k([5], 25)[0][0]]
    body = page(client, user)
    assert (body["model_version"], body["model_family"], body["source"]) == (version, "als", "cache")
    assert [r["post_id"] for r in body["recommendations"]] == expected
    assert page(client, "someone-new")["strategy"] == "popular"

    # Redis down: the ALS model itself ranks the page, as a LightFM one would.
    offline = page(make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client(), user)
    assert (offline["source"], offline["model_family"], offline["model_version"]) == ("model", "als", version)
    assert [r["post_id"] for r in offline["recommendations"]] == expected
