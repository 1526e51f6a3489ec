"""Warm starts in the pipeline (issue 14): a run continues the served version's fit on the interactions that
arrived since, gated progressively, reading only those; a drifted warm start, beat's full retrain, or a full fit
older than twice its interval, means a full fit of everything read. The last test runs them in a real worker."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import ml.artifact
import ml.post_age
import ml.warm
from common.recs_cache import release_lock
from ml.db.load import load_dataset_dir
from ml.db.schema import create_schema
from tasks import data_checks, gate, limits, outcomes, pipeline
from testing.polling import wait_until
from testing.processes import start_worker
from testing.service import listed, publish_once, run_train, settings_from, write_demo

# The newest fifth of the demo's interactions arrive after the first model, in two halves.
HOLD_BACK = """
CREATE TABLE later AS SELECT user_id, post_id, type, created_at FROM interactions
    WHERE created_at > (SELECT percentile_disc(0.8) WITHIN GROUP (ORDER BY created_at) FROM interactions);
DELETE FROM interactions WHERE (user_id, post_id, type, created_at) IN (SELECT * FROM later);
"""
ARRIVE = """
CREATE TEMP TABLE arrived ON COMMIT DROP AS SELECT * FROM later
    WHERE created_at <= (SELECT percentile_disc(%(fraction)s) WITHIN GROUP (ORDER BY created_at) FROM later);
DELETE FROM later WHERE (user_id, post_id, type, created_at) IN (SELECT * FROM arrived);
INSERT INTO users (id, role, created_at) VALUES ('zz-new-user', 'fan', now()) ON CONFLICT DO NOTHING;
INSERT INTO interactions (user_id, post_id, type, created_at) SELECT * FROM arrived;
INSERT INTO interactions (user_id, post_id, type, created_at)
    SELECT 'zz-new-user', post_id, 'like', max(created_at) FROM arrived GROUP BY post_id ORDER BY post_id LIMIT 5;
"""


@pytest.fixture(scope="module")
def warm_demo_dir(tmp_path_factory) -> Path:
    """Demo data large enough that popularity scores on the new pairs too (the gate's lift is defined)."""
    return write_demo(tmp_path_factory.mktemp("warm-demo"), users=600, posts=400, interactions=15_000)


@pytest.fixture
def arriving(pg_conn, warm_demo_dir):
    """The demo data without its newest tenth of interactions; calling it makes them (and a new user) arrive."""
    create_schema(pg_conn)
    load_dataset_dir(pg_conn, warm_demo_dir)
    with pg_conn.cursor() as cur:
        cur.execute(HOLD_BACK)
    pg_conn.commit()

    def arrive(fraction: float = 1.0) -> None:
        with pg_conn.cursor() as cur:
            cur.execute(ARRIVE, {"fraction": fraction})
        pg_conn.commit()

    return arrive


def _metadata(settings, version) -> dict:
    return ml.artifact.read_metadata(settings.model_dir, version)


def test_a_run_continues_the_served_fit_on_what_arrived(arriving, cache, service_env):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": "86400"})
    first, _, _, stages = publish_once(settings, cache)
    assert {"evaluate", "fit"} <= set(stages.durations) and _metadata(settings, first.version)["fit"] == "full"
    assert ml.warm.load_state(settings.model_dir, first.version) is not None
    arriving()

    second, model, previous, stages = publish_once(settings, cache)

    assert previous == first.version
    assert {"warm_evaluate", "warm_fit"} <= set(stages.durations)
    assert not {"evaluate", "fit"} & set(stages.durations)  # no full fit, no second fit for the gate
    metadata = _metadata(settings, second.version)
    assert metadata["fit"] == "warm" and metadata["metrics"]["protocol"] == "progressive"
    assert metadata["metrics"]["model"]["precision@10"] > metadata["metrics"]["popularity"]["precision@10"]
    assert "zz-new-user" in model.user_ids and listed(cache, second.version, "zz-new-user") is not None
    # The state moves on with the served version; the previous one is kept, older ones are removed.
    state = ml.warm.load_state(settings.model_dir, second.version)
    assert state.full_fit_at == ml.warm.load_state(settings.model_dir, first.version).full_fit_at
    assert sorted(p.name for p in Path(settings.model_dir).glob(f"*{ml.warm.STATE_SUFFIX}")) == sorted(
        f"{v}{ml.warm.STATE_SUFFIX}" for v in (first.version, second.version)
    )


def test_a_warm_start_that_drifted_below_the_gate_fits_in_full(arriving, cache, service_env):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": "86400"})
    publish_once(settings, cache)
    arriving(0.5)
    # The line of warm starts set a reference (its first progressive figure) that it has since fallen below.
    first, _, _, stages = publish_once(settings, cache)
    assert "warm_fit" in stages.durations
    state = ml.warm.load_state(settings.model_dir, first.version)
    assert state.reference == first.metrics["model"]["precision@10"]
    ml.warm.save_state(settings.model_dir, first.version, dataclasses.replace(state, reference=1.0))
    arriving()

    second, _, _, stages = publish_once(settings, cache)

    assert {"warm_evaluate", "evaluate", "fit"} <= set(stages.durations) and "warm_fit" not in stages.durations
    assert _metadata(settings, second.version)["fit"] == "full"
    assert "protocol" not in second.metrics  # the temporal holdout of the full fit
    assert second.fit["kind"] == "full" and "drifted more than 20% below 1.0000" in second.fit["reason"]


@pytest.mark.parametrize("interval", ["0", "1"])
def test_warm_starts_off_or_a_full_fit_older_than_the_interval_fit_in_full(arriving, cache, service_env, interval):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": interval})
    first, _, _, _ = publish_once(settings, cache)
    assert (ml.warm.load_state(settings.model_dir, first.version) is None) == (interval == "0")
    arriving()
    time.sleep(2.1)  # beat's full retrain did not come: a run fits in full after twice the interval

    second, _, _, stages = publish_once(settings, cache)

    assert {"evaluate", "fit"} <= set(stages.durations) and "warm_fit" not in stages.durations
    assert _metadata(settings, second.version)["fit"] == "full"


def test_a_state_that_cannot_give_a_finite_model_means_a_full_fit(arriving, cache, service_env):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": "86400"})
    first, _, _, _ = publish_once(settings, cache)
    state = ml.warm.load_state(settings.model_dir, first.version)
    blown = {**state.arrays, "item_embeddings": state.arrays["item_embeddings"] * 1e30}
    ml.warm.save_state(settings.model_dir, first.version, dataclasses.replace(state, arrays=blown))
    arriving()

    second, _, _, stages = publish_once(settings, cache)

    assert {"warm_evaluate", "evaluate", "fit"} <= set(stages.durations) and "warm_fit" not in stages.durations
    assert _metadata(settings, second.version)["fit"] == "full"


def test_a_scheduled_run_reads_only_what_arrived_and_the_full_retrain_reads_everything(arriving, cache, service_env):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": "86400"})
    first, _, _, _ = publish_once(settings, cache)
    assert (first.fit["kind"], first.fit["read"]["mode"]) == ("full", "full")
    arriving(0.5)

    second, _, _, _ = publish_once(settings, cache)

    read = second.fit["read"]
    assert (second.fit["kind"], read["mode"]) == ("warm", "incremental")
    assert read["rows_read"] + read["rows_kept"] == second.num_interactions
    assert read["rows_read"] < second.num_interactions / 5
    assert second.fit["reason"].startswith(f"continued {first.version}'s fit on ")
    # Side by side: the warm start's progressive figures and those of the full fit it descends from.
    assert second.fit["full_fit_metrics"] == first.metrics and second.metrics["protocol"] == "progressive"
    metadata = _metadata(settings, second.version)
    assert metadata["fit_read"] == read and metadata["fit_full_fit_metrics"] == first.metrics
    # The gate compares a later full fit with that full fit's figure, not with the progressive one.
    assert gate.current_gate_value(settings, cache) == (second.version, first.metrics["model"]["precision@10"])

    # The merged data prints as a whole read does: a run on unchanged data still publishes nothing.
    assert metadata["data_fingerprint"] == data_checks.data_fingerprint(pipeline.load_dataset(settings))
    stages = outcomes.Stages()
    with pytest.raises(outcomes.RunUnchanged):
        pipeline.build_candidate(settings, cache, stages)
    assert list(stages.durations) == ["load"]

    # Beat's full retrain replaces the warm-started version even so, reading everything.
    third, _ = pipeline.build_candidate(settings, cache, outcomes.Stages(), full=True)
    assert (third.fit["kind"], third.fit["read"]["mode"]) == ("full", "full")
    assert third.fit["reason"].startswith("a full retrain")
    assert third.num_interactions == second.num_interactions


def test_max_post_age_days_ranks_only_the_posts_that_can_still_be_shown(loaded_db, cache, service_env):
    settings = settings_from({**service_env, "MAX_POST_AGE_DAYS": "30"})
    dataset = pipeline.load_dataset(settings)
    recent = {dataset.item_ids[i] for i in ml.post_age.recent_posts(dataset, 30)}
    assert 0 < len(recent) < dataset.num_items

    candidate, model, _, _ = publish_once(settings, cache)

    assert set(model.item_ids) == recent and candidate.num_items == len(recent)
    for user_id in model.user_ids:
        items, _ = listed(cache, candidate.version, user_id)
        assert {model.item_ids[i] for i in items if i >= 0} <= recent
    loaded, metadata = ml.artifact.load(settings.model_dir, candidate.version)
    assert loaded.item_ids == model.item_ids and metadata["max_post_age_days"] == 30
    # Another limit is other candidates: the same data is not "unchanged".
    other, _ = pipeline.build_candidate(settings_from(service_env), cache, outcomes.Stages())
    assert other.num_items == dataset.num_items


def test_in_a_worker_the_full_retrain_waits_for_the_lock_and_a_drifted_warm_start_fits_in_full(
    arriving, cache, service_env, services, celery_client
):
    # A tenth of TRAIN_INTERVAL_SECONDS: the full retrain looks at the lock again every second.
    env = {**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": "86400", "TRAIN_INTERVAL_SECONDS": "10"}
    settings = settings_from(env)
    start_worker(services, env, concurrency=2)
    first = run_train(celery_client, force=False)
    assert (first["status"], first["fit"]["kind"]) == ("published", "full")
    assert first["fit"]["reason"] == "the served version left no warm-start state"
    arriving(0.5)

    # A five-minute run holds the lock: the full retrain waits (RETRY in Flower), a scheduled run is skipped.
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire(token="a-five-minute-run")
    full = celery_client.send_task("tasks.train", kwargs={"full": True})
    wait_until(lambda: full.state == "RETRY", 30, "the full retrain to wait for the lock")
    assert run_train(celery_client, force=False)["status"] == "skipped"
    release_lock(lock)
    result = full.get(timeout=90)
    assert (result["status"], result["fit"]["kind"], result["fit"]["read"]["mode"]) == ("published", "full", "full")
    assert result["fit"]["reason"].startswith("a full retrain")
    assert cache.last_training_outcome()["fit"] == result["fit"]  # what /admin/model-status shows

    # The next run starts warm from it; once that line has drifted below the gate, a run fits in full.
    arriving(0.75)
    warm = run_train(celery_client, force=False)
    assert (warm["fit"]["kind"], warm["fit"]["read"]["mode"]) == ("warm", "incremental")
    assert warm["fit"]["full_fit_metrics"] == result["metrics"]
    state = ml.warm.load_state(settings.model_dir, warm["version"])
    ml.warm.save_state(settings.model_dir, warm["version"], dataclasses.replace(state, reference=1.0))
    arriving()
    drifted = run_train(celery_client, force=False)
    assert (drifted["status"], drifted["fit"]["kind"]) == ("published", "full")
    assert "drifted more than 20% below 1.0000" in drifted["fit"]["reason"]
    assert {"warm_evaluate", "evaluate", "fit"} <= set(drifted["stages"])
