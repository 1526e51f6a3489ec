"""The pipeline's stages run in-process against the real PostgreSQL, Redis and a model directory.

These pin the ordering guarantees (nothing is current before every list is written; a run that stops midway
changes nothing a reader sees) and the refusals, without the cost of starting Celery processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ml.artifact
from tasks import limits, pipeline
from tests.tasks.conftest import next_update, publish_once, settings_from


def test_chunk_ranges_cover_every_user_once():
    assert pipeline.chunk_ranges(250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert pipeline.chunk_ranges(100, 100) == [(0, 100)]
    assert pipeline.chunk_ranges(0, 100) == []


@pytest.mark.parametrize(
    ("candidate", "popularity", "current", "margin", "refusal"),
    [
        (0.20, 0.10, None, 0.2, None),
        (0.09, 0.10, None, 0.2, "below the popularity baseline's 0.1000"),
        (0.17, 0.10, 0.20, 0.2, None),  # 15% below the current model: within a 20% margin
        (0.15, 0.10, 0.20, 0.2, "more than 20% below the current model's 0.2000"),
        (0.199, 0.10, 0.20, 0.0, "more than 0% below the current model's 0.2000"),
    ],
)
def test_quality_gate(candidate, popularity, current, margin, refusal):
    metrics = {"model": {"precision@10": candidate}, "popularity": {"precision@10": popularity}}
    reason = pipeline.quality_gate(metrics, current, margin)
    if refusal is None:
        assert reason is None
    else:
        assert refusal in reason


def test_run_writes_every_list_then_flips_and_announces(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    updates = cache.subscribe()

    candidate, model, previous, stages = publish_once(settings, cache)

    assert previous is None
    assert cache.current_version() == candidate.version
    assert ml.artifact.current_version(settings.model_dir) == candidate.version
    assert set(stages.durations) == {"load", "evaluate", "fit", "artifact", "precompute", "publish"}
    assert (candidate.num_users, candidate.num_items) == (model.num_users, model.num_items)
    expected_items, expected_scores = model.top_k(np.arange(model.num_users), settings.top_k)
    for user, user_id in enumerate(model.user_ids):
        items, scores = cache.user_list(candidate.version, user_id)
        length = int((expected_items[user] >= 0).sum())
        np.testing.assert_array_equal(items, expected_items[user, :length])
        np.testing.assert_allclose(scores, expected_scores[user, :length], rtol=1e-6)
    popular_items, _ = cache.popular_list(candidate.version)
    np.testing.assert_array_equal(popular_items, model.popular(settings.top_k)[0])
    assert [post_id for post_id, _, _ in cache.version_items(candidate.version)] == model.item_ids
    assert next_update(cache, updates) == candidate.update_message()
    _, metadata = ml.artifact.load(settings.model_dir, candidate.version)
    assert metadata["metrics"] == candidate.metrics
    assert metadata["counts"]["num_interactions"] == candidate.num_interactions

    second, _, previous, _ = publish_once(settings, cache)

    assert previous == candidate.version and cache.current_version() == second.version
    # The previous version stays readable for clients that pinned it, then expires.
    assert cache.user_list(candidate.version, model.user_ids[0]) is not None
    assert 0 < cache.client.ttl(cache.recs_key(candidate.version)) <= settings.recs_retain_seconds
    assert cache.client.ttl(cache.recs_key(second.version)) == -1


def test_run_that_stops_before_publishing_changes_nothing_a_reader_sees(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, model, _, _ = publish_once(settings, cache)

    # A second run that dies in the middle of its precompute.
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    candidate, new_model = pipeline.build_candidate(settings, cache, pipeline.Stages())
    pipeline.stage_version(settings, cache, candidate, new_model)
    pipeline.precompute_users(settings, cache, candidate.version, new_model, 0, new_model.num_users // 2)

    assert cache.current_version() == first.version
    assert ml.artifact.current_version(settings.model_dir) == first.version
    assert cache.user_list(first.version, model.user_ids[-1]) is not None
    for key in (cache.recs_key(candidate.version), cache.meta_key(candidate.version)):
        assert 0 < cache.client.ttl(key) <= limits.lock_ttl(settings)
    assert not cache.is_published(candidate.version)


def test_run_that_lost_its_lock_does_not_publish(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    candidate, model = pipeline.build_candidate(settings, cache, pipeline.Stages())
    # The lock expired (the run overran its time budget) and another run took it.
    cache.client.delete(cache.lock_key)
    assert cache.training_lock(60).acquire()

    with pytest.raises(pipeline.RunAborted, match="lost the training lock"):
        pipeline.precompute_and_publish(settings, cache, lock, candidate, model, pipeline.Stages())

    assert cache.current_version() is None
    assert ml.artifact.current_version(settings.model_dir) is None


def test_publish_task_adopts_the_runs_lock_by_token(cache, service_env):
    settings = settings_from(service_env)
    owner = cache.training_lock(limits.lock_ttl(settings))
    assert owner.acquire(token="run-1")

    assert pipeline.held_lock(settings, cache, "run-1").owned()
    assert not pipeline.held_lock(settings, cache, "run-2").owned()
    pipeline.release_lock(pipeline.held_lock(settings, cache, "run-1"))
    assert not owner.locked()


@pytest.mark.parametrize(
    ("delete_sql", "reason"),
    [
        ("DELETE FROM interactions", "no interactions to learn from"),
        (
            "DELETE FROM interactions WHERE user_id <> (SELECT min(user_id) FROM interactions)",
            "interactions come from 1 user; a model needs at least 2",
        ),
    ],
)
def test_degenerate_data_is_refused_and_writes_nothing(loaded_db, cache, service_env, delete_sql, reason):
    with loaded_db.cursor() as cur:
        cur.execute(delete_sql)
    loaded_db.commit()
    settings = settings_from(service_env)

    with pytest.raises(pipeline.RunRejected) as refused:
        pipeline.build_candidate(settings, cache, pipeline.Stages())

    assert refused.value.reason == reason
    assert refused.value.details["num_users"] > 0
    assert ml.artifact.list_versions(settings.model_dir) == []


def test_model_worse_than_the_current_one_is_not_published(loaded_db, cache, service_env):
    settings = settings_from({**service_env, "QUALITY_GATE_MARGIN": "0"})
    first, _, _, _ = publish_once(settings, cache)
    # Record an unbeatable holdout precision for the current model.
    metadata_path = Path(settings.model_dir) / f"{first.version}.json"
    document = json.loads(metadata_path.read_text())
    document["metrics"]["model"]["precision@10"] = 1.0
    metadata_path.write_text(json.dumps(document))

    with pytest.raises(pipeline.RunRejected, match="below the current model's 1.0000") as refused:
        pipeline.build_candidate(settings, cache, pipeline.Stages())

    assert refused.value.details["current_version"] == first.version
    assert ml.artifact.list_versions(settings.model_dir) == [first.version]
    assert cache.current_version() == first.version


# Keeps each user's first four distinct posts: no user has the five a holdout needs (DESIGN section 9).
KEEP_FOUR_POSTS_PER_USER = """
DELETE FROM interactions i USING (
    SELECT user_id, post_id, dense_rank() OVER (PARTITION BY user_id ORDER BY post_id) AS n
    FROM (SELECT DISTINCT user_id, post_id FROM interactions) AS pairs
) AS ranked
WHERE i.user_id = ranked.user_id AND i.post_id = ranked.post_id AND ranked.n > 4
"""


def test_young_deployment_without_a_holdout_still_gets_its_first_model(loaded_db, cache, service_env):
    with loaded_db.cursor() as cur:
        cur.execute(KEEP_FOUR_POSTS_PER_USER)
    loaded_db.commit()
    settings = settings_from(service_env)

    candidate, _, previous, _ = publish_once(settings, cache)

    assert previous is None
    assert candidate.metrics is None  # nothing to measure yet, and nothing to compare with
    assert cache.current_version() == candidate.version


def test_data_without_a_holdout_does_not_replace_an_evaluated_model(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, _, _, _ = publish_once(settings, cache)
    with loaded_db.cursor() as cur:
        cur.execute(KEEP_FOUR_POSTS_PER_USER)
    loaded_db.commit()

    with pytest.raises(pipeline.RunRejected, match="holdout evaluation failed"):
        pipeline.build_candidate(settings, cache, pipeline.Stages())

    assert cache.current_version() == first.version


def test_users_the_api_cannot_serve_are_trained_on_and_reported(loaded_db, cache, service_env, caplog):
    """An id with '/' cannot be a path segment of GET /recommendations/<user_id>: the operator is told."""
    with loaded_db.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, role, created_at) VALUES ('fan/1', 'fan', now()), (E'fan\\n2', 'fan', now())"
        )
        cur.execute(
            "INSERT INTO interactions (user_id, post_id, type, created_at) "
            "SELECT new.id, i.post_id, i.type, i.created_at FROM (VALUES ('fan/1'), (E'fan\\n2')) AS new (id), "
            "(SELECT * FROM interactions ORDER BY created_at LIMIT 20) AS i"
        )
    loaded_db.commit()
    settings = settings_from(service_env)

    with caplog.at_level("WARNING", logger="tasks.pipeline"):
        candidate, model = pipeline.build_candidate(settings, cache, pipeline.Stages())

    assert model.user_index("fan/1") is not None  # trained on: its interactions still count
    warnings = [r.getMessage() for r in caplog.records if "cannot be requested" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"2 of {candidate.num_users} user ids cannot be requested over the API")
    assert "'fan/1'" in warnings[0] and "'fan\\n2'" in warnings[0]


def test_no_warning_when_every_user_can_be_requested(loaded_db, cache, service_env, caplog):
    with caplog.at_level("WARNING", logger="tasks.pipeline"):
        pipeline.build_candidate(settings_from(service_env), cache, pipeline.Stages())
    assert not [r for r in caplog.records if "cannot be requested" in r.getMessage()]
