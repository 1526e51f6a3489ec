"""Warm starts in the pipeline (issue 14): a run continues the served version's fit on the interactions that
arrived since, gated progressively; a drifted warm start, or an old full fit, means a full fit."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import ml.artifact
import ml.warm
from ml.db.load import load_dataset_dir
from ml.db.schema import create_schema
from testing.service import listed, publish_once, settings_from, write_demo

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


@pytest.mark.parametrize("interval", ["0", "1"])
def test_warm_starts_off_or_a_full_fit_older_than_the_interval_fit_in_full(arriving, cache, service_env, interval):
    settings = settings_from({**service_env, "FULL_RETRAIN_INTERVAL_SECONDS": interval})
    first, _, _, _ = publish_once(settings, cache)
    assert (ml.warm.load_state(settings.model_dir, first.version) is None) == (interval == "0")
    arriving()
    time.sleep(1.1)

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
