"""``tasks.search`` with real processes: its queue and worker, the celery CLI and Flower, its lock, its soft
time limit, a SIGKILL midway, and training fitting the configuration it chose (an ALS model published and
served through the same lists)."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import requests

import ml.artifact
import ml.model_config
from celeryconfig import celery_settings
from ml.model_config import AlsSettings, ModelConfig, read_search, write_search
from tasks import limits
from testing.polling import wait_until
from testing.processes import free_port, start_worker
from testing.service import listed, run_train, settings_from
from tests.tasks.test_flower_cli import FLOWER_PASSWORD, FLOWER_USER, celery_cli


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


def start_flower(services, env):
    """Flower on a free port with basic auth; returns a function giving the task ``task_id`` as Flower shows
    it once it has finished, else None."""
    port = free_port()
    flower = services("flower", ["flower", "--address=127.0.0.1", f"--port={port}"], env)
    flower.wait_for_log(r"Visit me at")

    def finished(task_id: str) -> dict | None:
        response = requests.get(
            f"http://127.0.0.1:{port}/api/task/info/{task_id}", auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=5
        )
        task = response.json() if response.ok else None
        return task if task and task["state"] in ("SUCCESS", "FAILURE") else None

    return finished


def test_search_runs_on_its_own_queue_daily_with_its_own_time_limit(service_env):
    config = celery_settings(settings_from({**service_env, "SEARCH_TIME_LIMIT_SECONDS": "5000"}))
    assert config["task_routes"]["tasks.search"] == {"queue": "search"}
    assert config["beat_schedule"]["search"]["schedule"] == 86400.0
    assert config["broker_transport_options"]["visibility_timeout"] > 5000


def test_search_records_its_choice_and_training_fits_it(loaded_db, cache, service_env, services, celery_client):
    env = {**service_env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    settings = settings_from(env)
    in_flower = start_flower(services, env)
    start_search_worker(services, env)
    # On demand from the celery CLI, as docs/OPERATIONS.md says (task_routes sends it to the search queue).
    task_id = celery_cli(env, "call", "tasks.search", "--kwargs", '{"trials": 2}').strip()
    result = celery_client.AsyncResult(task_id).get(timeout=300)

    assert result["status"] in ("adopted", "kept"), result
    recorded = read_search(settings.model_dir)
    assert result["chosen"] == recorded["chosen"] and result["reason"] == recorded["reason"]
    # Flower shows the run: its state and the headline (status, reason, each family's figures).
    shown = wait_until(lambda: in_flower(task_id), 30, "the search to appear in Flower as finished")
    assert (shown["name"], shown["state"]) == ("tasks.search", "SUCCESS")
    assert shown["result"].startswith(f"{{'status': '{result['status']}'") and recorded["reason"] in shown["result"]
    assert all(f"'{family}': {{'validation'" in shown["result"] for family in ml.model_config.FAMILIES)
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
    # Trials have completed (a search that recorded as it went would have changed search.json by now).
    searcher.wait_for_log(r"lightfm trial \d+ COMPLETE", timeout=120)

    searcher.signal(signal.SIGKILL)
    assert (Path(settings.model_dir) / ml.model_config.SEARCH_FILE).read_bytes() == before
    assert not list(Path(settings.model_dir).glob(".tmp*"))
    assert 0 < cache.client.ttl(cache.search_lock_key) <= limits.search_lock_ttl(settings)
    config = ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)
    assert config == chosen


def test_a_search_past_its_soft_time_limit_stops_cleanly_and_records_what_it_found(
    loaded_db, cache, service_env, services, celery_client
):
    env = {
        **service_env,
        "SEARCH_BUDGET_SECONDS": "5",
        "SEARCH_TIME_LIMIT_SECONDS": "20",
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
    }
    settings = settings_from(env)
    chosen = ModelConfig(training=dataclasses.replace(settings.training, components=12, learning_rate=0.07))
    write_search(settings.model_dir, {"reason": "an earlier search", "chosen": chosen.to_json()})
    in_flower = start_flower(services, env)
    searcher = start_search_worker(services, env)

    # A budget of trials alone sets no time target: this search would run far past the 20 s limit.
    task_id = celery_cli(env, "call", "tasks.search", "--kwargs", '{"trials": 100000}').strip()
    result = celery_client.AsyncResult(task_id).get(timeout=limits.search_hard_time_limit(settings) + 60)

    assert result["status"] == "stopped", result
    recorded = read_search(settings.model_dir)
    assert recorded["interrupted"] is True and recorded["adopted"] is False
    assert recorded["chosen"] == json.loads(json.dumps(chosen.to_json()))
    assert recorded["reason"] == result["reason"] and "SEARCH_TIME_LIMIT_SECONDS (20 s)" in recorded["reason"]
    # What it found: the trials it ran (the configuration in force first) and LightFM's best so far.
    completed = [t for t in recorded["trials"] if t["state"] == "COMPLETE"]
    assert completed[0]["family"] == "current" and any(t["family"] == "lightfm" for t in completed)
    best = max((t for t in completed if t["family"] == "lightfm"), key=lambda t: t["validation"]["precision@10"])
    assert recorded["families"]["lightfm"]["validation"]["precision@10"] == best["validation"]["precision@10"]
    assert 19 <= recorded["seconds"] < limits.search_hard_time_limit(settings)
    assert result["trials"]["complete"] == len(completed)
    # Stopped cleanly: the child was not killed by the hard limit, the lock is free, training keeps its config.
    assert "Soft time limit (20" in searcher.log() and "Hard time limit" not in searcher.log()
    assert not cache.client.exists(cache.search_lock_key)
    assert not list(Path(settings.model_dir).glob(".tmp*"))
    assert ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training) == chosen
    shown = wait_until(lambda: in_flower(task_id), 30, "the stopped search in Flower")
    assert shown["state"] == "SUCCESS" and shown["result"].startswith("{'status': 'stopped'")


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
