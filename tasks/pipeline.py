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
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import ml.artifact
import ml.db.connection
import ml.db.read
import ml.evaluate
import ml.families
import ml.incremental
import ml.model_config
import ml.post_age
import ml.similar
import ml.training
import ml.warm
from common.config import Settings
from common.recs_cache import Lock, RecsCache, renew_lock, served_version
from ml.dataset import Dataset
from ml.errors import DatasetError, TrainingError
from ml.model import RecModel
from tasks import limits, priority
from tasks.data_checks import (
    data_fingerprint,
    data_snapshot,
    data_window,
    unchanged_version,
    warn_of_unrequestable_users,
)
from tasks.gate import GATE_METRIC, current_gate_value, quality_gate, warm_gate
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


@dataclass(frozen=True)
class RunData:
    """What a run read from PostgreSQL: the dataset, its fingerprint and its counts (shared by the variants)."""

    dataset: Dataset
    fingerprint: str
    counts: dict[str, int]
    read: ml.incremental.Read | None = None  # how it was read (incremental or full, and why)
    full: bool = False  # a full retrain: every model of the run fits in full


def read_data(settings: Settings, stages: Stages, cache: RecsCache | None = None, full: bool = False) -> RunData:
    """Read the data once for the whole run (stage ``load``); RunRejected if it is invalid.

    With ``cache``, a run that is not a ``full`` retrain reads only the interactions since the served version's
    data and merges them with that data's snapshot (:mod:`ml.incremental`); otherwise it reads everything.
    """
    with stages.time("load"):
        try:
            dataset, read = _read(settings, cache, full)
        except DatasetError as exc:
            raise RunRejected(f"the data in PostgreSQL is invalid: {exc}") from exc
        fingerprint = data_fingerprint(dataset)
    counts = {
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_interactions": dataset.num_interactions,
    }
    return RunData(dataset, fingerprint, counts, read, full)


def _read(settings: Settings, cache: RecsCache | None, full: bool) -> tuple[Dataset, ml.incremental.Read]:
    """The training data, read incrementally when :func:`read_data` may, else whole (and why)."""
    conn = ml.db.connection.connect(settings.database_url)
    try:
        if full or cache is None or settings.full_retrain_interval_seconds == 0:
            dataset = ml.db.read.read_dataset(conn, settings.sql_queries)
            why = "a full retrain reads everything" if full else "warm starts are off: every run reads everything"
            return dataset, ml.incremental.Read("full", why, rows_read=dataset.num_interactions)
        snapshot = ml.incremental.load(settings.model_dir, served_version(cache.current_version(), settings.model_dir))
        return ml.incremental.read(conn, settings.sql_queries, snapshot, settings.refresh_lookback_seconds)
    finally:
        conn.close()


def build_candidate(
    settings: Settings,
    cache: RecsCache,
    stages: Stages,
    force: bool = False,
    data: RunData | None = None,
    full: bool = False,
) -> tuple[Candidate, RecModel]:
    """Load the data (unless ``data`` was read already), evaluate on a holdout, apply the quality gate, fit and
    save the artifact (not current).

    Raises :class:`RunUnchanged` when the served version was trained on the same data with the same
    parameters (unless ``force``), and :class:`RunRejected` for unusable data or a model that fails the gate;
    nothing is written in either case. A ``full`` retrain (beat's, :func:`read_data`) reads every row and fits
    in full, and replaces a warm-started served version even on unchanged data.
    """
    data = data or read_data(settings, stages, cache, full)
    dataset, fingerprint, counts = data.dataset, data.fingerprint, data.counts
    served = None if force else unchanged_version(settings, cache, fingerprint)
    recorded = ml.artifact.read_metadata(settings.model_dir, served) if served is not None else {}
    if data.full and recorded.get("fit") == "warm":
        served = None  # the full retrain is what corrects a line of warm starts, even on the same data
    if recorded.get("max_post_age_days", 0.0) != settings.max_post_age_days:
        served = None  # it ranks other posts
    if served is not None:
        log.info("the data is unchanged since version %s (fingerprint %s); nothing to publish", served, fingerprint)
        raise RunUnchanged(served, **counts)
    check_trainable(data)
    warn_of_unrequestable_users(dataset)

    current_version, current_value = current_gate_value(settings, cache)
    candidate, model = fit_candidate(settings, data, training_config(settings), current_version, current_value, stages)
    kept = (current_version,) if current_version else ()
    with stages.time("similar"):  # every post's first neighbours, which the web workers map (ml.similar)
        ml.similar.save_neighbours(settings.model_dir, candidate.version, model, keep=kept)
    if settings.full_retrain_interval_seconds > 0:  # what the next run's read merges with (ml.incremental)
        started = time.perf_counter()
        ml.incremental.save(settings.model_dir, candidate.version, dataset, settings.sql_queries, keep=kept)
        stages.record("artifact", stages.durations.get("artifact", 0.0) + time.perf_counter() - started)
    return candidate, model


def check_trainable(data: RunData) -> None:
    """RunRejected when the data cannot be learnt from (:func:`ml.training.check_trainable`)."""
    try:
        ml.training.check_trainable(data.dataset)
    except TrainingError as exc:
        raise RunRejected(str(exc), **data.counts) from exc


def fit_candidate(
    settings: Settings,
    data: RunData,
    config: ml.model_config.ModelConfig,
    current_version: str | None,
    current_value: float | None,
    stages: Stages,
    metadata: dict[str, Any] | None = None,
) -> tuple[Candidate, RecModel]:
    """Fit ``config`` on ``data`` (a warm start, else a holdout evaluation, the gate and a full fit) and save
    the artifact in ``settings.model_dir``, not current.

    ``current_version`` is the version the candidate would replace (its warm-start state and its gate value
    ``current_value``); ``metadata`` is added to the artifact's. Raises :class:`RunRejected` when the model
    fails the gate or cannot be fitted. A model variant's run (:mod:`tasks.variants`) calls this too, with its
    own directory, configuration and current version.
    """
    dataset, fingerprint, counts = data.dataset, data.fingerprint, data.counts
    model, fit = _warm_start(settings, dataset, config, current_version, stages, data.full)
    metrics = fit.metrics if model is not None else None
    if model is None:
        metrics = _full_evaluation(dataset, config, current_version, counts, stages)
        report = fit.report(data.read)
        gate = quality_gate(metrics, current_value, settings.quality_gate_margin) if metrics else None
        if gate:
            raise RunRejected(gate, metrics=metrics, current_version=current_version, fit=report, **counts)
        with stages.time("fit"):
            try:
                if config.family == "lightfm":
                    model, estimator, features = ml.training.fitted(dataset, config.training)
                    fit = _Fit(estimator, features, time.time(), metrics, reason=fit.reason, full_metrics=metrics)
                else:
                    model = ml.families.train_model(dataset, config)
            except TrainingError as exc:
                raise RunRejected(f"training failed: {exc}", metrics=metrics, fit=report, **counts) from exc
    if settings.max_post_age_days:
        model = ml.post_age.recent_posts_only(model, dataset, settings.max_post_age_days)

    with stages.time("artifact"):
        metadata = {
            **(metadata or {}),
            "metrics": metrics,
            "params": asdict(config.training),
            "model": config.to_json(),
            "counts": counts,
            "data_window": data_window(dataset),
            "data_snapshot": data_snapshot(dataset),
            "data_fingerprint": fingerprint,
            "fit": fit.kind,
            **{f"fit_{key}": value for key, value in fit.report(data.read).items() if key != "kind"},
            "max_post_age_days": settings.max_post_age_days,
        }
        version = ml.artifact.save(model, settings.model_dir, metadata, keep=settings.model_backups, make_current=False)
        created_at = ml.artifact.read_metadata(settings.model_dir, version)["created_at"]
        if fit.estimator is not None and settings.full_retrain_interval_seconds > 0:
            state = ml.warm.state_of(
                fit.estimator,
                fit.features,
                config.training,
                float(dataset.inter_time.max()),
                fit.full_fit_at,
                fit.reference,
                fit.full_metrics,
            )
            ml.warm.save_state(settings.model_dir, version, state, keep=(current_version,) if current_version else ())
    log.info("trained version %s (%s fit): %s", version, fit.kind, counts)
    counts = {**counts, "num_items": model.num_items}  # the posts it ranks (MAX_POST_AGE_DAYS)
    report = fit.report(data.read)
    return Candidate(version=version, created_at=created_at, metrics=metrics, fit=report, **counts), model


@dataclass(frozen=True)
class _Fit:
    """How a run's model was fitted: the LightFM estimator and features a warm start continues (None for
    another family), when the full fit it descends from ran, and its holdout figures."""

    estimator: Any = None
    features: Any = None
    full_fit_at: float = 0.0
    metrics: dict | None = None
    reference: float | None = None  # see ml.warm.WarmState
    reason: str = ""  # why this kind of fit
    full_metrics: dict | None = None  # the temporal holdout figures of that full fit

    @property
    def kind(self) -> str:
        return "warm" if self.metrics and self.metrics.get("protocol") == "progressive" else "full"

    def report(self, read: ml.incremental.Read | None) -> dict[str, Any]:
        """What the outcome and the artifact say of the fit: warm or full and why, how the data was read, and a
        warm start's figures next to those of the full fit it descends from (``full_fit_metrics``)."""
        report = {"kind": self.kind, "reason": self.reason, "read": read.as_json() if read else None}
        if self.kind == "warm":
            report["full_fit_metrics"] = self.full_metrics
        return report


def _warm_start(
    settings: Settings,
    dataset: Dataset,
    config: ml.model_config.ModelConfig,
    current_version: str | None,
    stages: Stages,
    full: bool = False,
) -> tuple[RecModel | None, _Fit]:
    """Continue the served version's fit on the interactions since (:mod:`ml.warm`), if allowed and good enough.

    Returns ``(None, _Fit(reason=why))`` when the run must fit in full instead: it is a ``full`` retrain (beat's,
    every ``FULL_RETRAIN_INTERVAL_SECONDS``), warm starts are off (that interval 0), the last full fit is older
    than twice the interval (beat's full retrain did not happen), the family is not LightFM, the served version
    left no usable state or was fitted with other hyperparameters, nothing new can be measured, or the
    warm-started model fails :func:`tasks.gate.warm_gate` on the new interactions (it drifted).
    """
    interval = settings.full_retrain_interval_seconds
    if full:
        return None, _Fit(reason="a full retrain (beat's, every FULL_RETRAIN_INTERVAL_SECONDS, or asked for)")
    if interval <= 0:
        return None, _Fit(reason="warm starts are off (FULL_RETRAIN_INTERVAL_SECONDS=0)")
    state = ml.warm.load_state(settings.model_dir, current_version)
    why_not = None
    if state is None:
        why_not = "the served version left no warm-start state"
    elif config.family != "lightfm":
        why_not = f"the model family is {config.family}, and only LightFM starts warm"
    else:
        why_not = ml.warm.compatible(state, config.training)
    if why_not is None and time.time() - state.full_fit_at >= 2 * interval:
        why_not = f"the last full fit is older than twice FULL_RETRAIN_INTERVAL_SECONDS ({interval:g} s)"
    if why_not is None and not (dataset.inter_time > state.trained_until).any():
        why_not = "no interaction since the served version's data"
    if why_not is None:
        with stages.time("warm_evaluate"):
            try:
                prepared = ml.warm.prepare(dataset, state, config.training)
            except TrainingError as exc:  # the grown model is not finite: start afresh
                why_not = f"the warm start failed ({exc})"
        if why_not is None and prepared.metrics is None:
            why_not = "no new interaction to measure a warm start on"
        elif why_not is None:
            why_not = warm_gate(prepared.metrics, state.reference, settings.quality_gate_margin)
    if why_not is None:
        with stages.time("warm_fit"):
            try:
                model = ml.warm.warm_fit(dataset, prepared, config.training)
            except TrainingError as exc:
                why_not = f"the warm start failed ({exc})"
    if why_not is not None:
        log.info("full fit: %s", why_not)
        return None, _Fit(reason=why_not)
    reference = state.reference
    if reference is None:
        reference = float(prepared.metrics["model"][GATE_METRIC])
    value, baseline = (float(prepared.metrics[side][GATE_METRIC]) for side in ("model", "popularity"))
    reason = (
        f"continued {current_version}'s fit on {int(prepared.newer.sum())} new interactions: progressive "
        f"{GATE_METRIC} {value:.4f} (popularity {baseline:.4f}, first warm start since the full fit {reference:.4f})"
    )
    grown = (prepared.estimator, prepared.features, state.full_fit_at, prepared.metrics)
    return model, _Fit(*grown, reference, reason, state.full_metrics)


def _full_evaluation(
    dataset: Dataset, config: ml.model_config.ModelConfig, current_version: str | None, counts: dict, stages: Stages
) -> dict | None:
    """The temporal holdout of DESIGN section 9 (a fit on the train part); None for a first model without one."""
    with stages.time("evaluate"):
        try:
            return ml.evaluate.evaluate(
                dataset, config.training, k=10, trainer=lambda train_set: ml.families.train_model(train_set, config)
            )
        except DatasetError as exc:
            if current_version is not None:
                raise RunRejected(f"holdout evaluation failed: {exc}", **counts) from exc
            # A young deployment: no user has the history a holdout needs yet. With no model at all every
            # feed is a 503, so its first model is published unmeasured; later runs are gated again.
            log.warning("no holdout possible (%s); publishing the first model without the quality gate", exc)
            return None
        except TrainingError as exc:
            raise RunRejected(f"holdout evaluation failed: {exc}", **counts) from exc


def stage_version(settings: Settings, cache: RecsCache, candidate: Candidate, model: RecModel) -> None:
    """Write the version's item metadata and popularity list to Redis, staged (expiring) until published."""
    items = list(zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True))
    popular_items, popular_scores = model.popular(settings.top_k)
    meta = {"created_at": candidate.created_at, "num_users": candidate.num_users, "num_items": candidate.num_items}
    cache.stage_version(candidate.version, items, popular_items, popular_scores, meta, ttl=limits.lock_ttl(settings))


def precompute_users(settings: Settings, cache: RecsCache, version: str, model: RecModel, start: int, stop: int) -> int:
    """Rank and write the top-K lists of users ``start..stop-1`` (indices into ``model.user_ids``).

    Returns the number of users written. Lists keep the staging TTL until the version is published. So that
    serving keeps its latency while a version is written, each block of :data:`PRECOMPUTE_BLOCK_USERS` is ranked
    and written at a lower CPU priority (``PRECOMPUTE_NICENESS``, :mod:`tasks.priority`), and the writes are
    paced to at most ``PUBLISH_WRITE_RATE`` users per second (per process; 0: unpaced), a pause after each block.
    """
    ttl = limits.lock_ttl(settings)
    rate = settings.publish_write_rate

    def rank_and_write(block: int, block_stop: int) -> None:
        items, scores = model.top_k(np.arange(block, block_stop, dtype=np.int32), settings.top_k)
        cache.write_user_lists(version, model.user_ids[block:block_stop], items, scores, ttl=ttl)

    started = time.monotonic()
    with priority.lowered(settings.precompute_niceness) as run:
        for block in range(start, stop, PRECOMPUTE_BLOCK_USERS):
            block_stop = min(block + PRECOMPUTE_BLOCK_USERS, stop)
            run(rank_and_write, block, block_stop)
            if rate:  # paced: the writes share Redis with the web workers' reads (PUBLISH_WRITE_RATE)
                time.sleep(max(0.0, started + (block_stop - start) / rate - time.monotonic()))
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
