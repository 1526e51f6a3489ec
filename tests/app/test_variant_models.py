"""A ``model`` variant served by its own model: the variant's version ranks its users' feeds, scrolls stay
exact across a variant publish, a missing model falls back to production and says so, and the served stream
attributes each page to the model that ranked it."""

from __future__ import annotations

import json

import pytest

import ml.artifact
from app.reloader import ModelReloader
from common.config import load_settings
from common.experiments import Variant, variant_model_dir
from common.recs_cache import RecsCache
from tasks import limits, variants
from tasks.outcomes import Candidate, Stages
from testing.factories import random_model
from testing.service import publish

EXPERIMENT = {
    "name": "own-model",
    "control": "prod",
    "variants": [
        {"name": "prod", "share": 0.5, "ranking": "production"},
        {"name": "bpr", "share": 0.5, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr"}},
    ],
}
USERS = 40


@pytest.fixture
def env(settings_env):
    return {**settings_env, "EXPERIMENT": json.dumps(EXPERIMENT), "SERVED_STREAM_MAXLEN": "1000"}


@pytest.fixture
def variant(env) -> Variant:
    return load_settings(env, dotenv=False).experiment.variant("bpr")


@pytest.fixture
def production(cache, model_dir):
    return publish(cache, model_dir, random_model(num_users=USERS, num_items=60, seed=1), top_k=30)


def publish_variant(env, cache: RecsCache, variant: Variant, seed: int) -> str:
    """Save a model in the variant's directory and publish it through tasks.variants' own stages."""
    settings = load_settings(env, dotenv=False)
    own = variants.variant_settings(settings, variant)
    model = random_model(num_users=USERS, num_items=60, seed=seed)
    metadata = {"variant": {"lineage": variant.lineage, "name": variant.name}}
    version = ml.artifact.save(model, own.model_dir, metadata, make_current=False)
    created_at = ml.artifact.read_metadata(own.model_dir, version)["created_at"]
    candidate = Candidate(version, created_at, model.num_users, model.num_items, 0, None)
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    try:
        variants.precompute_and_publish_variant(own, cache, lock, variant, candidate, model, Stages())
    finally:
        lock.release()
    return version


def users_of(experiment, ranking: str) -> list[str]:
    return [f"user-{u}" for u in range(USERS) if experiment.assign(f"user-{u}").ranking == ranking]


def load_variants(app, cache: RecsCache) -> None:
    """What a gunicorn worker's reloader does at start and on every poll."""
    ModelReloader(app.extensions["recsvc"].holder, cache).load_variants()


def test_a_variant_user_gets_its_variants_version_and_others_production(make_app, env, cache, production, variant):
    own = publish_variant(env, cache, variant, seed=2)
    assert cache.current_version() == production  # the variant never moves the production pointer
    app = make_app(env)
    client = app.test_client()
    load_variants(app, cache)
    experiment = load_settings(env, dotenv=False).experiment
    for user in users_of(experiment, "model"):
        body = client.get(f"/recommendations/{user}?limit=10").get_json()
        assert (body["variant"], body["model_version"], body["variant_fallback"]) == ("bpr", own, False)
        assert body["token"].startswith(own + ".")
        listed = ml.artifact.load(variant_model_dir(env["MODEL_DIR"], variant.lineage), own)[0]
        user_index = listed.user_index(user)
        expected = [listed.item_ids[i] for i in listed.top_k([user_index], 10)[0][0]]
        assert [r["post_id"] for r in body["recommendations"]] == expected  # the variant model's ranking
    for user in users_of(experiment, "production"):
        body = client.get(f"/recommendations/{user}?limit=10").get_json()
        assert (body["variant"], body["model_version"], body["variant_fallback"]) == ("prod", production, False)


def test_without_the_variants_model_its_users_get_production_and_are_told(make_app, env, cache, production, variant):
    app = make_app(env)
    client = app.test_client()
    load_variants(app, cache)  # nothing published for the variant
    user = users_of(load_settings(env, dotenv=False).experiment, "model")[0]
    body = client.get(f"/recommendations/{user}?limit=5").get_json()
    assert (body["model_version"], body["variant_fallback"]) == (production, True)
    # Published later, the reloader's next poll picks it up and the next new scroll is the variant's.
    own = publish_variant(env, cache, variant, seed=2)
    load_variants(app, cache)
    body = client.get(f"/recommendations/{user}?limit=5").get_json()
    assert (body["model_version"], body["variant_fallback"]) == (own, False)


def test_a_variants_lists_lost_from_redis_fall_back_to_production(make_app, env, cache, production, variant):
    own = publish_variant(env, cache, variant, seed=2)
    app = make_app(env)
    client = app.test_client()
    load_variants(app, cache)
    cache.client.delete(cache.meta_key(own))  # as if Redis lost the version (ensure_published republishes it)
    user = users_of(load_settings(env, dotenv=False).experiment, "model")[0]
    body = client.get(f"/recommendations/{user}?limit=5").get_json()
    assert (body["model_version"], body["variant_fallback"]) == (production, True)


def test_a_variant_users_scroll_stays_exact_across_a_variant_publish(make_app, env, cache, production, variant):
    first = publish_variant(env, cache, variant, seed=2)
    app = make_app(env)
    client = app.test_client()
    load_variants(app, cache)
    user = users_of(load_settings(env, dotenv=False).experiment, "model")[0]
    whole = client.get(f"/recommendations/{user}?limit=25").get_json()
    page = client.get(f"/recommendations/{user}?limit=10").get_json()
    second = publish_variant(env, cache, variant, seed=3)
    load_variants(app, cache)
    assert app.extensions["recsvc"].holder.variant(variant.lineage).version == second
    rest = client.get(f"/recommendations/{user}?limit=15&offset=10&token={page['token']}").get_json()
    assert (rest["model_version"], rest["variant_fallback"], rest["version_fallback"]) == (first, False, False)
    scrolled = [r["post_id"] for r in page["recommendations"] + rest["recommendations"]]
    assert scrolled == [r["post_id"] for r in whole["recommendations"]]  # no post twice, none skipped
    fresh = client.get(f"/recommendations/{user}?limit=10").get_json()
    assert (fresh["model_version"], fresh["variant_fallback"]) == (second, False)
    # The superseded variant version expires like a superseded production version (RECS_RETAIN_SECONDS).
    assert 0 < cache.client.ttl(cache.meta_key(first)) <= 1800
    assert cache.client.ttl(cache.meta_key(second)) == -1


def test_the_served_stream_attributes_each_page_to_the_model_that_ranked_it(make_app, env, cache, production, variant):
    own = publish_variant(env, cache, variant, seed=2)
    app = make_app(env)
    client = app.test_client()
    experiment = load_settings(env, dotenv=False).experiment
    user = users_of(experiment, "model")[0]
    client.get(f"/recommendations/{user}?limit=5")  # before the worker holds the variant's model: fallback
    load_variants(app, cache)
    client.get(f"/recommendations/{user}?limit=5")
    other = users_of(experiment, "production")[0]
    client.get(f"/recommendations/{other}?limit=5")
    app.extensions["recsvc"].served_log.flush()
    pages = [(p.user_id, p.variant, p.ranking, p.model_version) for p in cache.read_served_pages(10)]
    assert pages == [
        (user, "bpr", "production", production),
        (user, "bpr", "model", own),
        (other, "prod", "production", production),
    ]


def test_a_worker_loads_a_pinned_variant_version_it_never_held(make_app, env, cache, production, variant):
    """A scroll begun on another worker (or before a restart) names a variant version this worker must find in
    the variant's directory."""
    first = publish_variant(env, cache, variant, seed=2)
    publish_variant(env, cache, variant, seed=3)
    app = make_app(env)
    client = app.test_client()
    user = users_of(load_settings(env, dotenv=False).experiment, "model")[0]
    token = client.get(f"/recommendations/{user}?limit=5").get_json()["token"]  # production: no variant held
    pinned = token.replace(production, first)
    body = client.get(f"/recommendations/{user}?limit=5&offset=5&token={pinned}").get_json()
    assert (body["model_version"], body["variant_fallback"], body["version_fallback"]) == (first, False, False)


def test_the_variants_model_is_never_the_production_pointer_nor_in_its_versions(env, cache, production, variant):
    own = publish_variant(env, cache, variant, seed=2)
    assert cache.current_version() == production and cache.variant_version(variant.lineage) == own
    assert own not in ml.artifact.list_versions(env["MODEL_DIR"])  # rollback --list and pruning never see it
    assert ml.artifact.current_version(env["MODEL_DIR"]) == production
    assert cache.client.ttl(cache.meta_key(production)) == -1  # the variant's publish expired nothing of it
