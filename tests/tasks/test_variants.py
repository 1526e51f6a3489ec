"""The training pipeline's model variants (tasks.variants) against PostgreSQL, Redis and a model directory:
each variant is trained on the run's data with its own settings, gated, and published under its own version
and pointer; unchanged data, retention, a failed gate, Redis losing everything and an ended experiment."""

from __future__ import annotations

import json

import pytest

import ml.artifact
import ml.warm
from common.experiments import variant_model_dir
from common.recs_cache import release_lock
from tasks import limits, outcomes, pipeline, publication, variants
from testing.service import listed, settings_from

BPR = {"name": "bpr", "share": 0.3, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr"}}
# One epoch at a vanishing learning rate: an untrained model, below the popularity baseline.
UNTRAINED = {
    "name": "untrained",
    "share": 0.2,
    "ranking": "model",
    "training": {"LIGHTFM_LEARNING_RATE": "0.000001", "LIGHTFM_EPOCHS": "1"},
}


def experiment(*model_variants) -> str:
    share = 1.0 - sum(v["share"] for v in model_variants)
    production = {"name": "prod", "share": share, "ranking": "production"}
    return json.dumps({"name": "own-models", "variants": [production, *model_variants]})


@pytest.fixture
def env(service_env):
    return {**service_env, "EXPERIMENT": experiment(BPR, UNTRAINED)}


def run(settings, cache, force=False, production=True):
    """One training run as tasks.train runs it for a single chunk: read once, the variants, then production."""
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    stages = outcomes.Stages()
    try:
        data = pipeline.read_data(settings, stages, cache)
        reports = variants.train_variants(settings, cache, lock, data, stages, force=force)
        if production:
            candidate, model = pipeline.build_candidate(settings, cache, stages, force=force, data=data)
            pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    finally:
        release_lock(lock)
    return reports, stages


def test_each_model_variant_is_trained_with_its_settings_and_published_under_its_own_version(loaded_db, cache, env):
    settings = settings_from(env)
    bpr = settings.experiment.variant("bpr")
    reports, stages = run(settings, cache)

    report = reports["bpr"]
    assert report["status"] == "published" and report["lineage"] == bpr.lineage
    version, production = report["version"], cache.current_version()
    assert cache.variant_version(bpr.lineage) == version != production
    assert {"variants", "load", "fit", "publish"} <= set(stages.durations)  # the variants' cost, on its own
    assert {"evaluate", "fit", "artifact", "precompute", "publish"} <= set(report["stages"])
    own_dir = variant_model_dir(settings.model_dir, bpr.lineage)
    metadata = ml.artifact.read_metadata(own_dir, version)
    assert metadata["params"]["loss"] == "bpr" and metadata["variant"]["lineage"] == bpr.lineage
    assert metadata["data_fingerprint"] == ml.artifact.read_metadata(settings.model_dir, production)["data_fingerprint"]
    assert ml.artifact.read_metadata(settings.model_dir, production)["params"]["loss"] == "warp"
    assert ml.artifact.current_version(own_dir) == version
    assert version not in ml.artifact.list_versions(settings.model_dir)  # rollback and pruning never see it
    model, _ = ml.artifact.load(own_dir, version)
    for user in model.user_ids[:20]:
        items, _ = listed(cache, version, user)
        assert len(items) == min(settings.top_k, model.num_items - len(model.excluded_items(model.user_index(user))))
    # Warm starts: each line keeps its own state, in its own directory.
    assert ml.warm.load_state(own_dir, version) is not None
    assert ml.warm.load_state(settings.model_dir, production) is not None


def test_a_variant_that_fails_the_gate_publishes_nothing_and_the_run_says_why(loaded_db, cache, env):
    settings = settings_from(env)
    untrained = settings.experiment.variant("untrained")
    reports, _ = run(settings, cache)
    report = reports["untrained"]
    assert report["status"] == "rejected" and "popularity baseline" in report["reason"]
    assert report["version"] is None  # nothing of it is served: its users get production, told so
    assert cache.variant_version(untrained.lineage) is None
    assert ml.artifact.list_versions(variant_model_dir(settings.model_dir, untrained.lineage)) == []
    assert reports["bpr"]["status"] == "published" and cache.current_version() is not None  # the others go on


def test_unchanged_data_leaves_a_variant_alone_and_a_new_version_retires_the_old_one(loaded_db, cache, service_env):
    settings = settings_from({**service_env, "EXPERIMENT": experiment(BPR)})
    lineage = settings.experiment.variant("bpr").lineage
    first = run(settings, cache)[0]["bpr"]["version"]
    production = cache.current_version()

    again = run(settings, cache, production=False)[0]["bpr"]
    assert (again["status"], again["version"]) == ("unchanged", first)
    assert set(again["stages"]) == set()  # nothing fitted, written or published

    second = run(settings, cache, force=True, production=False)[0]["bpr"]
    assert second["status"] == "published" and second["previous_version"] == first
    assert cache.variant_version(lineage) == second["version"]
    assert cache.current_version() == production  # the production pointer never moves for a variant
    retain = settings.recs_retain_seconds
    assert 0 < cache.client.ttl(cache.meta_key(first)) <= retain  # scrolls pinned to it can finish
    assert all(0 < cache.client.ttl(key) <= retain for key in cache.client.scan_iter(f"{cache.prefix}recs:{first}:*"))
    assert cache.client.ttl(cache.meta_key(second["version"])) == -1
    # Production's lists are another line: the variant's publish gave them no expiry.
    assert all(cache.client.ttl(key) == -1 for key in cache.client.scan_iter(f"{cache.prefix}recs:{production}:*"))


def test_redis_restarted_empty_republishes_the_variants_lists_too(loaded_db, cache, service_env):
    settings = settings_from({**service_env, "EXPERIMENT": experiment(BPR)})
    bpr = settings.experiment.variant("bpr")
    version = run(settings, cache)[0]["bpr"]["version"]
    production = cache.current_version()
    user = ml.artifact.load(variant_model_dir(settings.model_dir, bpr.lineage), version)[0].user_ids[0]
    expected = listed(cache, version, user)

    cache.client.flushdb()  # a Redis restart without persistence
    outcome = publication.ensure_published(settings, cache)
    assert (outcome["status"], outcome["version"]) == ("republished", production)
    assert outcome["variants"] == {"bpr": {"status": "republished", "version": version}}
    assert cache.variant_version(bpr.lineage) == version and cache.is_published(version)
    items, scores = listed(cache, version, user)
    assert items.tolist() == expected[0].tolist()
    assert publication.ensure_published(settings, cache) == {"status": "ok", "version": production}

    cache.client.delete(cache.variant_key(bpr.lineage))  # only the variant's pointer lost: found by the cheap check
    assert publication.ensure_published(settings, cache)["variants"]["bpr"]["status"] == "republished"


def test_a_variant_no_longer_declared_expires_after_the_retention(loaded_db, cache, service_env):
    settings = settings_from({**service_env, "EXPERIMENT": experiment(BPR)})
    lineage = settings.experiment.variant("bpr").lineage
    version = run(settings, cache)[0]["bpr"]["version"]

    ended = settings_from(service_env)  # the experiment removed
    assert run(ended, cache, production=False)[0] == {}
    retain = settings.recs_retain_seconds
    for key in (cache.variant_key(lineage), cache.meta_key(version)):
        assert 0 < cache.client.ttl(key) <= retain
    assert not cache.client.sismember(cache.variants_key, lineage)
