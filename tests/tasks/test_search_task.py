"""``tasks.search`` with real processes: its queue and worker, its lock, a SIGKILL midway, and training fitting
the configuration it chose (an ALS model published and served through the same lists)."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest

import ml.artifact
import ml.model_config
from celeryconfig import celery_settings
from ml.model_config import AlsSettings, ModelConfig, read_search, write_search
from tasks import limits
from testing.polling import wait_until
from testing.processes import start_worker
from testing.service import listed, run_train, settings_from


def start_search_worker(services, env, name="search"):
    """The worker of the ``search`` queue, as the Procfile's ``search`` line starts it."""
    worker = services(
        f"worker-{name}",
        ["worker", "-Q", "search", "--loglevel=INFO", f"--hostname={name}@%h", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--pool=prefork"],
        env,
    )  # fmt: skip
    worker.wait_for_log(r"\bready\.")
    return worker


def send_search(celery_client, **kwargs):
    # The celery CLI and beat route tasks.search to its queue (task_routes); this bare client says it itself.
    return celery_client.send_task("tasks.search", kwargs=kwargs, queue="search")


def test_search_runs_on_its_own_queue_daily_with_its_own_time_limit(service_env):
    config = celery_settings(settings_from({**service_env, "SEARCH_TIME_LIMIT_SECONDS": "5000"}))
    assert config["task_routes"]["tasks.search"] == {"queue": "search"}
    assert config["beat_schedule"]["search"]["schedule"] == 86400.0
    assert config["broker_transport_options"]["visibility_timeout"] > 5000


def test_search_records_its_choice_and_training_fits_it(loaded_db, cache, service_env, services, celery_client):
    settings = settings_from(service_env)
    start_search_worker(services, service_env)
    result = send_search(celery_client, trials=2).get(timeout=300)

    assert result["status"] in ("adopted", "kept"), result
    recorded = read_search(settings.model_dir)
    assert result["chosen"] == recorded["chosen"] and result["reason"] == recorded["reason"]
    assert result["pinned"] == ["epochs"]  # LIGHTFM_EPOCHS is set in the test environment
    assert {t["config"]["training"]["epochs"] for t in recorded["trials"] if t["family"] == "lightfm"} == {30}
    assert not cache.client.exists(cache.search_lock_key)

    # A chosen ALS model is trained, gated, published and ranked through the same lists.
    als = ModelConfig(family="als", training=settings.training, als=AlsSettings(factors=16, iterations=8))
    write_search(settings.model_dir, {**recorded, "chosen": als.to_json()})
    start_worker(services, service_env)
    outcome = run_train(celery_client)
    assert outcome["status"] == "published", outcome
    model, metadata = ml.artifact.load(settings.model_dir, outcome["version"])
    assert metadata["model"]["family"] == "als" and metadata["model"]["als"]["factors"] == 16
    assert model.num_components == 16 and not model.item_biases.any()
    user = next(i for i in range(model.num_users) if len(model.excluded_items(i)))
    written = listed(cache, outcome["version"], model.user_ids[user])
    expected, _ = model.top_k([user], 10)
    assert written is not None and list(written[0][:10]) == expected[0].tolist()
    # Unchanged data and configuration: the next run publishes nothing.
    assert run_train(celery_client, force=False)["status"] == "unchanged"


def test_a_search_never_overlaps_itself(loaded_db, cache, service_env, services, celery_client):
    settings = settings_from(service_env)
    held = cache.search_lock(limits.search_lock_ttl(settings))
    assert held.acquire(token="another-search")
    start_search_worker(services, service_env)
    assert send_search(celery_client, trials=1).get(timeout=60)["status"] == "skipped"
    assert read_search(settings.model_dir) is None


def test_search_killed_midway_leaves_the_configuration_in_force_and_never_blocks_training(
    loaded_db, cache, service_env, services, celery_client
):
    env = {**service_env, "SEARCH_BUDGET_SECONDS": "600", "SEARCH_TIME_LIMIT_SECONDS": "900"}
    settings = settings_from(env)
    chosen = ModelConfig(training=dataclasses.replace(settings.training, components=12, learning_rate=0.07))
    write_search(settings.model_dir, {"reason": "an earlier search", "chosen": chosen.to_json()})
    before = (Path(settings.model_dir) / ml.model_config.SEARCH_FILE).read_bytes()

    searcher = start_search_worker(services, env)
    send_search(celery_client)
    wait_until(lambda: cache.client.exists(cache.search_lock_key), 60, "the search to take its lock")

    # Training goes on meanwhile, on its own worker, fitting the configuration in force.
    start_worker(services, env)
    outcome = run_train(celery_client, timeout=120)
    assert outcome["status"] == "published", outcome
    assert ml.artifact.read_metadata(settings.model_dir, outcome["version"])["model"] == json.loads(
        json.dumps(chosen.to_json())
    )
    assert cache.client.exists(cache.search_lock_key)  # the search was still running

    searcher.signal(signal.SIGKILL)
    assert (Path(settings.model_dir) / ml.model_config.SEARCH_FILE).read_bytes() == before
    assert not list(Path(settings.model_dir).glob(".tmp*"))
    assert 0 < cache.client.ttl(cache.search_lock_key) <= limits.search_lock_ttl(settings)
    config = ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)
    assert config == chosen


@pytest.mark.parametrize("family", ["lightfm", "blend"])
def test_the_family_of_a_version_is_in_its_metadata(loaded_db, cache, service_env, services, celery_client, family):
    settings = settings_from(service_env)
    config = ModelConfig(
        family=family,
        training=settings.training,
        als=AlsSettings(factors=8, iterations=4) if family == "blend" else None,
        blend_weight=0.6 if family == "blend" else None,
    )
    write_search(settings.model_dir, {"chosen": config.to_json()})
    start_worker(services, service_env)
    outcome = run_train(celery_client)
    assert outcome["status"] == "published", outcome
    model, metadata = ml.artifact.load(settings.model_dir, outcome["version"])
    assert metadata["model"]["family"] == family
    assert np.isfinite(model.top_k(np.arange(model.num_users), 5)[1][:, 0]).all()
