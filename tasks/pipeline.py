"""The training pipeline as plain functions: load, evaluate, gate, fit, save, precompute, publish.

The Celery tasks in :mod:`tasks.training` call these in order; they add only retries, the training lock and
the split of the precompute into chunk tasks. Nothing here imports Celery, so every stage can be run and
tested on its own against PostgreSQL, Redis and a model directory.

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

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

import ml.artifact
import ml.db
import ml.evaluate
import ml.training
from common.config import Settings
from common.ids import is_requestable_user_id
from common.recs_cache import RecsCache
from ml.dataset import Dataset
from ml.errors import ArtifactError, DatasetError, TrainingError
from ml.model import RecModel
from tasks import limits

log = logging.getLogger(__name__)

# The metric the quality gate compares (DESIGN section 9).
GATE_METRIC = "precision@10"

# Users ranked per RecModel.top_k call: bounds the score matrix held in memory (block x items floats).
PRECOMPUTE_BLOCK_USERS = 2000

SKIPPED_REASON = "training already running"


class RunRejected(Exception):
    """The run refuses to publish: unusable data or a model that fails the quality gate.

    Not an error of the service: the current model stays, and the reason goes into the run's outcome.
    ``details`` carries what was known when the run stopped (counts, metrics).
    """

    def __init__(self, reason: str, **details: Any):
        super().__init__(reason)
        self.reason = reason
        self.details = details


class RunUnchanged(Exception):
    """The data and training parameters are those the served version was trained on: nothing to publish.

    Retraining would only reshuffle every feed (LightFM's parallel fit gives another model on the same data) and
    fill the kept versions with copies. ``version`` is the served version; ``details`` carries the counts.
    """

    def __init__(self, version: str, **details: Any):
        super().__init__(f"the data and training parameters are unchanged since version {version}")
        self.reason = str(self)
        self.version = version
        self.details = details


class RunAborted(RuntimeError):
    """The run cannot finish safely (it lost the training lock, or a chunk wrote fewer lists than expected)."""


class Stages:
    """Wall-clock seconds of each pipeline stage, in the order they ran."""

    def __init__(self, durations: Mapping[str, float] | None = None):
        self.durations: dict[str, float] = dict(durations or {})

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        log.info("training stage %s started", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - start)

    def record(self, name: str, seconds: float) -> None:
        self.durations[name] = round(seconds, 3)


@dataclass(frozen=True)
class Candidate:
    """A trained model saved as an artifact (not yet current), with what its outcome reports.

    ``metrics`` is None for a first model trained before any user had enough history for a holdout.
    """

    version: str
    created_at: str
    num_users: int
    num_items: int
    num_interactions: int
    metrics: dict[str, Any] | None

    def update_message(self) -> dict[str, Any]:
        """The message announced on the model-updates channel (DESIGN section 6)."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "num_users": self.num_users,
            "num_items": self.num_items,
        }


def outcome(status: str, reason: str | None = None, stages: Stages | None = None, **fields: Any) -> dict[str, Any]:
    """A run's result: JSON-ready, the same keys for every status (``published``, ``unchanged``, ``skipped``,
    ``rejected``, ``failed``)."""
    result = {
        "status": status,
        "reason": reason,
        "version": None,
        "num_users": None,
        "num_items": None,
        "num_interactions": None,
        "metrics": None,
        "stages": dict(stages.durations) if stages else {},
    }
    result.update(fields)
    result["finished_at"] = _now_iso()
    return result


def skipped_outcome() -> dict[str, Any]:
    """The outcome of a run that found another one holding the training lock."""
    return outcome("skipped", SKIPPED_REASON)


def published_outcome(candidate: Candidate, stages: Stages, previous_version: str | None, **fields: Any) -> dict:
    """The outcome of a run whose version is now current."""
    return outcome(
        "published",
        None,
        stages,
        version=candidate.version,
        previous_version=previous_version,
        num_users=candidate.num_users,
        num_items=candidate.num_items,
        num_interactions=candidate.num_interactions,
        metrics=candidate.metrics,
        **fields,
    )


def rejected_outcome(exc: RunRejected, stages: Stages) -> dict[str, Any]:
    """The outcome of a run that refused to publish; the current model stays."""
    return outcome("rejected", exc.reason, stages, **exc.details)


def unchanged_outcome(exc: RunUnchanged, stages: Stages) -> dict[str, Any]:
    """The outcome of a run that found nothing new to learn; ``version`` is the one still served."""
    return outcome("unchanged", exc.reason, stages, version=exc.version, **exc.details)


# --- stages ---


def load_dataset(settings: Settings) -> Dataset:
    """Read the five tables from PostgreSQL with the configured queries (DESIGN section 4)."""
    conn = ml.db.connect(settings.database_url)
    try:
        return ml.db.read_dataset(conn, settings.sql_queries)
    finally:
        conn.close()


def data_fingerprint(dataset: Dataset) -> str:
    """A sha256 (hex) of everything a training run learns from: equal prints mean the same model input.

    It covers every field of the :class:`Dataset` the five queries produce: users (id, role), communities
    (id, name), follows, posts (id, community, author, tags, created_at) and interactions (user, post, type,
    created_at; repeats count). Users, communities and posts are hashed in the reader's order (by id, so
    their indices are canonical too); follows and interactions are sorted first, so a query returning its
    rows in another order prints the same. Columns the dataset drops (users' and follows' created_at) are
    not covered: a change to them alone changes no model. One pass over the arrays already in memory.
    """
    digest = hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        digest.update(f"{name}:{len(data)}:".encode())
        digest.update(data)

    def add_strings(name: str, values: Any) -> None:
        add(name, json.dumps(values, ensure_ascii=False).encode("utf-8"))

    def add_array(name: str, values: np.ndarray, dtype: str) -> None:
        add(name, np.ascontiguousarray(values, dtype=dtype).tobytes())

    add_strings("user_ids", dataset.user_ids)
    add_strings("user_roles", dataset.user_roles)
    add_strings("community_ids", dataset.community_ids)
    add_strings("community_names", dataset.community_names)
    follows = np.lexsort((dataset.follow_community, dataset.follow_user))
    add_array("follow_user", dataset.follow_user[follows], "<i4")
    add_array("follow_community", dataset.follow_community[follows], "<i4")
    add_strings("item_ids", dataset.item_ids)
    add_array("item_community", dataset.item_community, "<i4")
    add_array("item_author", dataset.item_author, "<i4")
    add_strings("item_tags", dataset.item_tags)
    add_array("item_time", dataset.item_time, "<i8")
    interactions = np.lexsort((dataset.inter_time, dataset.inter_type, dataset.inter_item, dataset.inter_user))
    add_array("inter_user", dataset.inter_user[interactions], "<i4")
    add_array("inter_item", dataset.inter_item[interactions], "<i4")
    add_array("inter_type", dataset.inter_type[interactions], "<i1")
    add_array("inter_time", dataset.inter_time[interactions], "<i8")
    return digest.hexdigest()


def unchanged_version(settings: Settings, cache: RecsCache, fingerprint: str) -> str | None:
    """The served version if it was trained on data printing ``fingerprint`` with today's parameters, else None.

    Only a version Redis serves counts: if Redis lost its pointer (or MODEL_DIR lost the version's files), a
    run publishes again rather than leave the cache empty. A version whose metadata records no fingerprint
    (one trained before fingerprints existed) counts as changed.
    """
    version = cache.current_version()
    if version is None or not cache.is_published(version):
        return None
    if version not in ml.artifact.list_versions(settings.model_dir):
        return None
    try:
        metadata = ml.artifact.read_metadata(settings.model_dir, version)
    except ArtifactError as exc:
        log.warning("cannot read the served version %s (%s); training as if the data changed", version, exc)
        return None
    params = json.loads(json.dumps(asdict(settings.training)))
    if metadata.get("data_fingerprint") != fingerprint or metadata.get("params") != params:
        return None
    return version


def dataset_refusal(dataset: Dataset) -> str | None:
    """Why ``dataset`` cannot yield a model worth publishing, or None if it can.

    Catches the degenerate cases up front with a plain message; subtler ones surface as ``TrainingError``
    from the fit.
    """
    if dataset.num_interactions == 0:
        return "no interactions to learn from"
    active_users = np.unique(dataset.inter_user).size
    if active_users < 2:
        return f"interactions come from {active_users} user; a model needs at least 2"
    if np.unique(dataset.inter_item).size < 2:
        return "interactions touch only 1 post; a model needs at least 2"
    return None


def warn_of_unrequestable_users(dataset: Dataset) -> int:
    """Log users whose id the API cannot take in its path (``common.ids``); returns how many there are.

    They are trained on like everyone else (their interactions still teach the model about posts), but
    their lists can never be asked for, so the operator should hear of it rather than wonder.
    """
    unrequestable = [user_id for user_id in dataset.user_ids if not is_requestable_user_id(user_id)]
    if unrequestable:
        log.warning(
            "%d of %d user ids cannot be requested over the API (they hold '/', control characters, line "
            "separators or bidi controls), so their feeds are never served; e.g. %s",
            len(unrequestable),
            dataset.num_users,
            ", ".join(repr(user_id) for user_id in unrequestable[:3]),
        )
    return len(unrequestable)


def current_gate_value(settings: Settings, cache: RecsCache) -> tuple[str | None, float | None]:
    """The version being served and its recorded holdout metric, or None where unknown.

    The served version is Redis's pointer (falling back to the on-disk one before the first publish); its
    metric comes from the artifact's metadata, written when that version was trained.
    """
    version = cache.current_version() or ml.artifact.current_version(settings.model_dir)
    if version is None:
        return None, None
    try:
        metadata = ml.artifact.read_metadata(settings.model_dir, version)
    except ArtifactError as exc:
        log.warning(
            "quality gate: cannot read the current version %s (%s); comparing with popularity only", version, exc
        )
        return version, None
    try:
        return version, float(metadata["metrics"]["model"][GATE_METRIC])
    except (KeyError, TypeError, ValueError):
        log.warning("quality gate: version %s records no %s; comparing with popularity only", version, GATE_METRIC)
        return version, None


def quality_gate(metrics: Mapping[str, Any], current_value: float | None, margin: float) -> str | None:
    """Why the candidate must not be published, or None if it passes.

    It fails if its holdout ``precision@10`` is below the popularity baseline's on the same split, or more
    than ``margin`` (a fraction, ``QUALITY_GATE_MARGIN``) below the current model's recorded value.
    """
    value = float(metrics["model"][GATE_METRIC])
    baseline = float(metrics["popularity"][GATE_METRIC])
    if value < baseline:
        return f"quality gate: holdout {GATE_METRIC} {value:.4f} is below the popularity baseline's {baseline:.4f}"
    if current_value is not None and value < current_value * (1.0 - margin):
        return (
            f"quality gate: holdout {GATE_METRIC} {value:.4f} is more than {margin:.0%} below the current "
            f"model's {current_value:.4f}"
        )
    return None


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
    refusal = dataset_refusal(dataset)
    if refusal:
        raise RunRejected(refusal, **counts)
    warn_of_unrequestable_users(dataset)

    current_version, current_value = current_gate_value(settings, cache)
    with stages.time("evaluate"):
        try:
            metrics = ml.evaluate.evaluate(dataset, settings.training, k=10)
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
            model = ml.training.train(dataset, settings.training)
        except TrainingError as exc:
            raise RunRejected(f"training failed: {exc}", metrics=metrics, **counts) from exc

    with stages.time("artifact"):
        created_at = _now_iso()
        metadata = {
            "metrics": metrics,
            "params": asdict(settings.training),
            "counts": counts,
            "data_window": _data_window(dataset),
            "data_snapshot": _data_snapshot(dataset),
            "data_fingerprint": fingerprint,
        }
        version = ml.artifact.save(model, settings.model_dir, metadata, keep=settings.model_backups, make_current=False)
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
    try:
        lock.reacquire()
    except LockNotOwnedError as exc:
        raise RunAborted(
            f"version {candidate.version} not published: the run lost the training lock (it took longer than "
            f"{limits.lock_ttl(settings)} s, see TRAIN_TIME_LIMIT_SECONDS)"
        ) from exc
    previous = cache.publish_version(candidate.version, candidate.update_message(), settings.recs_retain_seconds)
    ml.artifact.set_current(settings.model_dir, candidate.version)
    log.info("published version %s (previous %s)", candidate.version, previous)
    return previous


def held_lock(settings: Settings, cache: RecsCache, token: str) -> Lock:
    """The training lock as held by the run whose token is ``token`` (a chunked run's publish task uses it).

    redis-py keeps a lock's token on ``lock.local``; with ``thread_local=False`` (as RecsCache creates it)
    that is the supported way to hand a held lock to another process.
    """
    lock = cache.training_lock(limits.lock_ttl(settings))
    lock.local.token = lock.redis.get_encoder().encode(token)
    return lock


def release_lock(lock: Lock) -> None:
    """Release the training lock; a lock that already expired (or was taken over) is only logged."""
    try:
        lock.release()
    except LockNotOwnedError:
        log.warning("the training lock had expired before the run released it")


def _data_window(dataset: Dataset) -> dict[str, str | None]:
    """The time span of the interactions the model learnt from (ISO 8601, UTC)."""
    if dataset.num_interactions == 0:
        return {"first_interaction": None, "last_interaction": None}
    return {
        "first_interaction": _iso(int(dataset.inter_time.min())),
        "last_interaction": _iso(int(dataset.inter_time.max())),
    }


def _data_snapshot(dataset: Dataset) -> dict[str, str | None]:
    """Where the model's data end: the newest ``created_at`` of the posts and interactions it read (ISO 8601).

    ``tasks.refresh`` starts its watermarks there when this version is published, so what was written after
    the read reaches the live feed (rows up to it are known to the model and skipped).
    """
    return {
        "posts": _iso(int(dataset.item_time.max())) if dataset.num_items else None,
        "interactions": _iso(int(dataset.inter_time.max())) if dataset.num_interactions else None,
    }


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
