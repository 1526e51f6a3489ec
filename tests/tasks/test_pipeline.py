"""The pipeline's stages run in-process against the real PostgreSQL, Redis and a model directory.

These pin the ordering guarantees (nothing is current before every list is written; a run that stops midway
changes nothing a reader sees) and the refusals, without the cost of starting Celery processes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import ml.artifact
from common.recs_cache import release_lock
from tasks import data_checks, gate, limits, outcomes, pipeline
from testing.service import listed, next_update, popular_listed, publish_once, settings_from, version_items


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
    reason = gate.quality_gate(metrics, current, margin)
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
    assert set(stages.durations) == {"load", "evaluate", "fit", "artifact", "similar", "precompute", "publish"}
    assert (candidate.num_users, candidate.num_items) == (model.num_users, model.num_items)
    expected_items, expected_scores = model.top_k(np.arange(model.num_users), settings.top_k)
    for user, user_id in enumerate(model.user_ids):
        items, scores = listed(cache, candidate.version, user_id)
        length = int((expected_items[user] >= 0).sum())
        np.testing.assert_array_equal(items, expected_items[user, :length])
        np.testing.assert_allclose(scores, expected_scores[user, :length], rtol=1e-6)
    popular_items, _ = popular_listed(cache, candidate.version)
    np.testing.assert_array_equal(popular_items, model.popular(settings.top_k)[0])
    assert [post_id for post_id, _, _ in version_items(cache, candidate.version)] == model.item_ids
    assert next_update(cache, updates) == candidate.update_message()
    _, metadata = ml.artifact.load(settings.model_dir, candidate.version)
    assert metadata["metrics"] == candidate.metrics
    assert metadata["counts"]["num_interactions"] == candidate.num_interactions

    second, _, previous, _ = publish_once(settings, cache)

    assert previous == candidate.version and cache.current_version() == second.version
    # The previous version stays readable for clients that pinned it, then expires.
    assert listed(cache, candidate.version, model.user_ids[0]) is not None
    assert 0 < cache.client.ttl(cache.recs_key(candidate.version, model.user_ids[0])) <= settings.recs_retain_seconds
    assert cache.client.ttl(cache.recs_key(second.version, model.user_ids[0])) == -1


def test_run_that_stops_before_publishing_changes_nothing_a_reader_sees(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, model, _, _ = publish_once(settings, cache)

    # A second run that dies in the middle of its precompute.
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    candidate, new_model = pipeline.build_candidate(settings, cache, outcomes.Stages(), force=True)
    pipeline.stage_version(settings, cache, candidate, new_model)
    pipeline.precompute_users(settings, cache, candidate.version, new_model, 0, new_model.num_users // 2)

    assert cache.current_version() == first.version
    assert ml.artifact.current_version(settings.model_dir) == first.version
    assert listed(cache, first.version, model.user_ids[-1]) is not None
    for key in (cache.recs_key(candidate.version, new_model.user_ids[0]), cache.meta_key(candidate.version)):
        assert 0 < cache.client.ttl(key) <= limits.lock_ttl(settings)
    assert not cache.is_published(candidate.version)


def test_run_that_lost_its_lock_does_not_publish(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    candidate, model = pipeline.build_candidate(settings, cache, outcomes.Stages())
    # The lock expired (the run overran its time budget) and another run took it.
    cache.client.delete(cache.lock_key)
    assert cache.training_lock(60).acquire()

    with pytest.raises(outcomes.RunAborted, match="lost the training lock"):
        pipeline.precompute_and_publish(settings, cache, lock, candidate, model, outcomes.Stages())

    assert cache.current_version() is None
    assert ml.artifact.current_version(settings.model_dir) is None


def test_publish_task_adopts_the_runs_lock_by_token(cache, service_env):
    settings = settings_from(service_env)
    owner = cache.training_lock(limits.lock_ttl(settings))
    assert owner.acquire(token="run-1")

    assert cache.adopt_training_lock(limits.lock_ttl(settings), "run-1").owned()
    assert not cache.adopt_training_lock(limits.lock_ttl(settings), "run-2").owned()
    release_lock(cache.adopt_training_lock(limits.lock_ttl(settings), "run-1"))
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

    with pytest.raises(outcomes.RunRejected) as refused:
        pipeline.build_candidate(settings, cache, outcomes.Stages())

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

    with pytest.raises(outcomes.RunRejected, match="below the current model's 1.0000") as refused:
        pipeline.build_candidate(settings, cache, outcomes.Stages(), force=True)

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

    with pytest.raises(outcomes.RunRejected, match="holdout evaluation failed"):
        pipeline.build_candidate(settings, cache, outcomes.Stages())

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
        candidate, model = pipeline.build_candidate(settings, cache, outcomes.Stages())

    assert model.user_index("fan/1") is not None  # trained on: its interactions still count
    warnings = [r.getMessage() for r in caplog.records if "cannot be requested" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"2 of {candidate.num_users} user ids cannot be requested over the API")
    assert "'fan/1'" in warnings[0] and "'fan\\n2'" in warnings[0]


def test_no_warning_when_every_user_can_be_requested(loaded_db, cache, service_env, caplog):
    with caplog.at_level("WARNING", logger="tasks.pipeline"):
        pipeline.build_candidate(settings_from(service_env), cache, outcomes.Stages())
    assert not [r for r in caplog.records if "cannot be requested" in r.getMessage()]


def _insert_interaction(conn) -> None:
    """One more like, as the backend would write it: the data is no longer what the current model learnt."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO interactions (user_id, post_id, type, created_at)"
            " SELECT u.id, p.id, 'like', now() FROM users u, posts p ORDER BY u.id, p.id DESC LIMIT 1"
        )
    conn.commit()


def test_unchanged_data_since_the_current_version_builds_nothing(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, _, _, _ = publish_once(settings, cache)
    stages = outcomes.Stages()

    with pytest.raises(outcomes.RunUnchanged) as unchanged:
        pipeline.build_candidate(settings, cache, stages)

    assert unchanged.value.version == first.version
    assert list(stages.durations) == ["load"]  # neither evaluated nor fitted
    assert ml.artifact.list_versions(settings.model_dir) == [first.version]
    result = outcomes.unchanged_outcome(unchanged.value, stages)
    assert set(result) == set(outcomes.outcome("published"))
    assert (result["status"], result["version"]) == ("unchanged", first.version)
    assert first.version in result["reason"]
    assert (result["num_users"], result["num_interactions"]) == (first.num_users, first.num_interactions)

    # force retrains all the same; new data is a new version without force.
    forced, _ = pipeline.build_candidate(settings, cache, outcomes.Stages(), force=True)
    assert forced.version != first.version
    _insert_interaction(loaded_db)
    changed, _ = pipeline.build_candidate(settings, cache, outcomes.Stages())
    assert changed.num_interactions == first.num_interactions + 1


def test_fingerprint_is_recorded_and_compared_with_the_served_version_only(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, _, _, _ = publish_once(settings, cache)
    metadata = ml.artifact.read_metadata(settings.model_dir, first.version)
    assert metadata["data_fingerprint"] == data_checks.data_fingerprint(pipeline.load_dataset(settings))

    # A version recorded before fingerprints existed counts as changed.
    metadata_path = Path(settings.model_dir) / f"{first.version}.json"
    document = json.loads(metadata_path.read_text())
    del document["data_fingerprint"]
    metadata_path.write_text(json.dumps(document))
    second, _ = pipeline.build_candidate(settings, cache, outcomes.Stages())
    assert second.version != first.version

    # Other training parameters are a reason to retrain, even on the same data.
    second, _, _, _ = publish_once(settings, cache)
    epochs = str(settings.training.epochs + 1)
    third, _ = pipeline.build_candidate(
        settings_from({**service_env, "LIGHTFM_EPOCHS": epochs}), cache, outcomes.Stages()
    )
    assert third.version != second.version

    # Nothing published in Redis (it came back empty): the run publishes again rather than leave it empty.
    cache.client.delete(cache.current_key)
    fourth, _ = pipeline.build_candidate(settings, cache, outcomes.Stages())
    assert fourth.version != second.version


def test_fingerprint_ignores_row_order_and_sees_every_change(loaded_db, service_env):
    settings = settings_from(service_env)
    dataset = pipeline.load_dataset(settings)
    reordered = np.random.default_rng(3).permutation(dataset.num_interactions)
    shuffled = dataclasses.replace(
        dataset,
        inter_user=dataset.inter_user[reordered],
        inter_item=dataset.inter_item[reordered],
        inter_type=dataset.inter_type[reordered],
        inter_time=dataset.inter_time[reordered],
        follow_user=dataset.follow_user[::-1],
        follow_community=dataset.follow_community[::-1],
    )
    assert data_checks.data_fingerprint(shuffled) == data_checks.data_fingerprint(dataset)

    inter_type = dataset.inter_type.copy()
    inter_type[0] = (inter_type[0] + 1) % 3
    tags = [("retagged",), *dataset.item_tags[1:]]
    roles = ["artist" if role != "artist" else "fan" for role in dataset.user_roles]
    for changed in (
        dataclasses.replace(dataset, inter_type=inter_type),
        dataclasses.replace(dataset, item_tags=tags),
        dataclasses.replace(dataset, user_roles=roles),
        dataclasses.replace(dataset, item_time=dataset.item_time + 1),
        dataclasses.replace(
            dataset, follow_user=dataset.follow_user[1:], follow_community=dataset.follow_community[1:]
        ),
    ):
        assert data_checks.data_fingerprint(changed) != data_checks.data_fingerprint(dataset)
