"""``tasks.search``: the model search (:mod:`ml.search`) in the background, bounded and never in training's way.

Beat sends it every ``SEARCH_INTERVAL_SECONDS`` (default daily); ``celery -A tasks call tasks.search`` runs one
on demand (``--kwargs '{"budget_seconds": 120}'`` or ``'{"trials": 20}'`` overrides the budget). It runs on
its own queue, ``search``, which a worker of its own consumes (``celery -A tasks worker -Q search
--concurrency 1``), so a search never occupies a process that training or the live refresh needs; it takes
its own lock (``lock:search``), never the training lock, so it never overlaps itself and never holds up
training; and it has its own time limit (``SEARCH_TIME_LIMIT_SECONDS``).

The search reads the data, searches within ``SEARCH_BUDGET_SECONDS`` (and ``SEARCH_TRIALS`` per family when
set), and writes its record, ``MODEL_DIR/search.json``, atomically at the very end: a search killed at any
point (SIGKILL, the hard time limit) leaves the configuration in force untouched, and its lock expires after
:func:`tasks.limits.search_lock_ttl`. A search still running at the soft time limit stops cleanly: it records
the trials it ran and each family's best so far (:func:`ml.search.interrupted_record`), keeps the
configuration in force and frees its lock. The next training run fits the chosen configuration
(:func:`ml.model_config.effective_config`). The task's result, which Flower shows, is the record's headline
(:func:`ml.model_config.summary`) with a ``status``: ``adopted``, ``kept``, ``stopped`` (the soft time limit),
``skipped`` (another search holds the lock) or ``failed``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

import ml.model_config
import ml.search
from common.config import Settings
from common.recs_cache import RecsCache, release_lock
from common.redis_clients import worker_client
from ml.errors import DatasetError, TrainingError
from tasks import limits, pipeline
from tasks.celery import app, settings

log = logging.getLogger(__name__)

# Room for the headline (without the trials) in Flower's task events.
RESULT_REPR_MAXSIZE = 8192


@functools.cache
def recs_cache() -> RecsCache:
    """This process's RecsCache, for the search lock."""
    return RecsCache(worker_client(settings.redis_url), settings.redis_prefix)


@app.task(
    name="tasks.search",
    bind=True,
    soft_time_limit=limits.search_soft_time_limit(settings),
    time_limit=limits.search_hard_time_limit(settings),
    resultrepr_maxsize=RESULT_REPR_MAXSIZE,
)
def search(self, budget_seconds: float | None = None, trials: int | None = None) -> dict[str, Any]:
    """Search model families and hyperparameters on the deployment's data; adopt the best only if it beats
    the configuration in force on the gating holdout (:func:`ml.search.run_search`)."""
    lock = recs_cache().search_lock(limits.search_lock_ttl(settings))
    if not lock.acquire(token=self.request.id):
        log.info("model search skipped: another search holds the lock")
        return {"status": "skipped", "reason": "a model search is already running"}
    progress = ml.search.Progress()
    try:
        return run(settings, budget_seconds, trials, progress)
    except (DatasetError, TrainingError) as exc:
        log.warning("model search failed: %s", exc)
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    except SoftTimeLimitExceeded:
        return stopped(settings, progress, budget_seconds, trials)
    finally:
        release_lock(lock)


def run(
    settings: Settings,
    budget_seconds: float | None = None,
    trials: int | None = None,
    progress: ml.search.Progress | None = None,
) -> dict[str, Any]:
    """Load the data, search, record the result in ``MODEL_DIR``; return the headline with its ``status``.

    The budget defaults to ``SEARCH_BUDGET_SECONDS`` and ``SEARCH_TRIALS`` (0: no cap on trials);
    ``progress`` is filled as the search goes.
    """
    dataset = pipeline.load_dataset(settings)
    current = ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)
    budget_seconds, trials = budget(settings, budget_seconds, trials)
    document = ml.search.run_search(
        dataset, current, settings.pinned_training, budget_seconds, trials, progress=progress
    )
    ml.model_config.write_search(settings.model_dir, document)
    log.info("model search: %s", document["reason"])
    return {"status": "adopted" if document["adopted"] else "kept", **ml.model_config.summary(document)}


def stopped(
    settings: Settings, progress: ml.search.Progress, budget_seconds: float | None, trials: int | None
) -> dict[str, Any]:
    """Record a search the soft time limit stopped: what it found, with the configuration in force kept."""
    current = ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)
    reason = (
        f"stopped by SEARCH_TIME_LIMIT_SECONDS ({settings.search_time_limit_seconds:g} s) after "
        f"{len(progress.trials)} trials; the configuration in force is kept"
    )
    budget_seconds, trials = budget(settings, budget_seconds, trials)
    document = ml.search.interrupted_record(progress, current, settings.pinned_training, reason, budget_seconds, trials)
    ml.model_config.write_search(settings.model_dir, document)
    log.warning("model search: %s", reason)
    return {"status": "stopped", **ml.model_config.summary(document)}


def budget(settings: Settings, budget_seconds: float | None, trials: int | None) -> tuple[float | None, int | None]:
    """The search's budget: the task's arguments, or ``SEARCH_BUDGET_SECONDS`` and ``SEARCH_TRIALS`` when
    it has none."""
    if budget_seconds is None and trials is None:
        return settings.search_budget_seconds, settings.search_trials or None
    return budget_seconds, trials
