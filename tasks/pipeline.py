"""The training pipeline as plain functions: load, evaluate, gate, fit, save, precompute, publish.

The Celery tasks in :mod:`tasks.training` call these in order, passing the settings; they add only retries,
the training lock and the split of the precompute into chunk tasks. Nothing here imports Celery, so every
stage can be run and tested on its own against PostgreSQL, Redis and a model directory. The gate policy is
:mod:`tasks.gate`, the data checks :mod:`tasks.data_checks`, the outcomes :mod:`tasks.outcomes`.

The order of the stages is what makes a run safe to kill at any point:

1. the artifact is written with ``make_current=False`` (files move into place atomically, the on-disk
   pointer does not move);
2. every user's list is written under the new version, which carries a TTL while staged;
3. :meth:`RecsCache.publish_version` flips the Redis pointer, lets the previous version expire after
   ``RECS_RETAIN_SECONDS`` and announces the version, in one atomic step;
4. only then does the on-disk pointer move (:func:`ml.artifact.set_current`).

A run that dies before step 3 leaves the pointer on the old, complete version; its staged keys expire and its
artifact files are pruned by the next save.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

import ml.artifact
import ml.db.connection
import ml.db.read
import ml.evaluate
import ml.families
import ml.model_config
import ml.training
from common.config import Settings
from common.recs_cache import Lock, RecsCache, renew_lock
from ml.dataset import Dataset
from ml.errors import DatasetError, TrainingError
from ml.model import RecModel
from tasks import limits
from tasks.data_checks import (
    data_fingerprint,
    data_snapshot,
    data_window,
    unchanged_version,
    warn_of_unrequestable_users,
)
from tasks.gate import current_gate_value, quality_gate
from tasks.outcomes import Candidate, RunAborted, RunRejected, RunUnchanged, Stages

log = logging.getLogger(__name__)

# Users ranked per RecModel.top_k call: bounds the score matrix held in memory (block x items floats).
PRECOMPUTE_BLOCK_USERS = 2000


def load_dataset(settings: Settings) -> Dataset:
    """Read the five tables from PostgreSQL with the configured queries (DESIGN section 4)."""
    conn = ml.db.connection.connect(settings.database_url)
    try:
        return ml.db.read.read_dataset(conn, settings.sql_queries)
    finally:
        conn.close()


def training_config(settings: Settings) -> ml.model_config.ModelConfig:
    """What a run fits: the model search's choice in ``MODEL_DIR`` with the environment's pinned
    hyperparameters, or the environment's LightFM before any search (:func:`ml.model_config.effective_config`)."""
    return ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)


def build_candidate(
    settings: Settings, cache: RecsCache, stages: Stages, force: bool = False
) -> tuple[Candidate, RecModel]:
    """Load the data, evaluate on a holdout, apply the quality gate, fit and save the artifact (not current).

    Raises :class:`RunUnchanged` when the served version was trained on the same data with the same
    parameters (unless ``force``), and :class:`RunRejected` for unusable data or a model that fails the gate;
    nothing is written in either case.
    """
    with stages.time("load"):
        try:
            dataset = load_dataset(settings)
        except DatasetError as exc:
            raise RunRejected(f"the data in PostgreSQL is invalid: {exc}") from exc
        fingerprint = data_fingerprint(dataset)
    counts = {
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_interactions": dataset.num_interactions,
    }
    served = None if force else unchanged_version(settings, cache, fingerprint)
    if served is not None:
        log.info("the data is unchanged since version %s (fingerprint %s); nothing to publish", served, fingerprint)
        raise RunUnchanged(served, **counts)
    try:
        ml.training.check_trainable(dataset)
    except TrainingError as exc:
        raise RunRejected(str(exc), **counts) from exc
    warn_of_unrequestable_users(dataset)

    current_version, current_value = current_gate_value(settings, cache)
    config = training_config(settings)
    with stages.time("evaluate"):
        try:
            metrics = ml.evaluate.evaluate(
                dataset, config.training, k=10, trainer=lambda train_set: ml.families.train_model(train_set, config)
            )
        except DatasetError as exc:
            if current_version is not None:
                raise RunRejected(f"holdout evaluation failed: {exc}", **counts) from exc
            # A young deployment: no user has the history a holdout needs yet. With no model at all every
            # feed is a 503, so its first model is published unmeasured; later runs are gated again.
            log.warning("no holdout possible (%s); publishing the first model without the quality gate", exc)
            metrics = None
        except TrainingError as exc:
            raise RunRejected(f"holdout evaluation failed: {exc}", **counts) from exc
    gate = quality_gate(metrics, current_value, settings.quality_gate_margin) if metrics else None
    if gate:
        raise RunRejected(gate, metrics=metrics, current_version=current_version, **counts)

    with stages.time("fit"):
        try:
            model = ml.families.train_model(dataset, config)
        except TrainingError as exc:
            raise RunRejected(f"training failed: {exc}", metrics=metrics, **counts) from exc

    with stages.time("artifact"):
        metadata = {
            "metrics": metrics,
            "params": asdict(config.training),
            "model": config.to_json(),
            "counts": counts,
            "data_window": data_window(dataset),
            "data_snapshot": data_snapshot(dataset),
            "data_fingerprint": fingerprint,
        }
        version = ml.artifact.save(model, settings.model_dir, metadata, keep=settings.model_backups, make_current=False)
        created_at = ml.artifact.read_metadata(settings.model_dir, version)["created_at"]
    log.info("trained version %s: %s", version, counts)
    return Candidate(version=version, created_at=created_at, metrics=metrics, **counts), model


def stage_version(settings: Settings, cache: RecsCache, candidate: Candidate, model: RecModel) -> None:
    """Write the version's item metadata and popularity list to Redis, staged (expiring) until published."""
    items = list(zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True))
    popular_items, popular_scores = model.popular(settings.top_k)
    meta = {"created_at": candidate.created_at, "num_users": candidate.num_users, "num_items": candidate.num_items}
    cache.stage_version(candidate.version, items, popular_items, popular_scores, meta, ttl=limits.lock_ttl(settings))


def precompute_users(settings: Settings, cache: RecsCache, version: str, model: RecModel, start: int, stop: int) -> int:
    """Rank and write the top-K lists of users ``start..stop-1`` (indices into ``model.user_ids``).

    Returns the number of users written. Lists keep the staging TTL until the version is published.
    """
    ttl = limits.lock_ttl(settings)
    for block in range(start, stop, PRECOMPUTE_BLOCK_USERS):
        block_stop = min(block + PRECOMPUTE_BLOCK_USERS, stop)
        items, scores = model.top_k(np.arange(block, block_stop, dtype=np.int32), settings.top_k)
        cache.write_user_lists(version, model.user_ids[block:block_stop], items, scores, ttl=ttl)
    return stop - start


def precompute_and_publish(
    settings: Settings, cache: RecsCache, lock: Lock, candidate: Candidate, model: RecModel, stages: Stages
) -> str | None:
    """Precompute every user's list in this process, then publish; return the previously current version."""
    with stages.time("precompute"):
        stage_version(settings, cache, candidate, model)
        precompute_users(settings, cache, candidate.version, model, 0, candidate.num_users)
    with stages.time("publish"):
        return publish(settings, cache, lock, candidate)


def chunk_ranges(num_users: int, chunk_users: int) -> list[tuple[int, int]]:
    """User index ranges ``[start, stop)`` of at most ``chunk_users`` users each, covering every user."""
    return [(start, min(start + chunk_users, num_users)) for start in range(0, num_users, chunk_users)]


def publish(settings: Settings, cache: RecsCache, lock: Lock, candidate: Candidate) -> str | None:
    """Make the candidate current in Redis (flip, expire the previous version, announce), then on disk.

    The run must still hold the training lock: a run that outlived it (and so may overlap a newer run) does
    not publish. Re-acquiring also restarts the lock's TTL, so it cannot expire during the flip. Returns the
    previously current version.
    """
    if not renew_lock(lock):
        raise RunAborted(
            f"version {candidate.version} not published: the run lost the training lock (it took longer than "
            f"{limits.lock_ttl(settings)} s, see TRAIN_TIME_LIMIT_SECONDS)"
        )
    previous = cache.publish_version(candidate.version, candidate.update_message(), settings.recs_retain_seconds)
    ml.artifact.set_current(settings.model_dir, candidate.version)
    log.info("published version %s (previous %s)", candidate.version, previous)
    return previous
