"""Time budgets of a training run, derived from ``TRAIN_TIME_LIMIT_SECONDS`` in one place (and likewise those
of the model search, ``tasks.search``, from ``SEARCH_TIME_LIMIT_SECONDS``).

The soft limit is the setting itself: at that point Celery raises ``SoftTimeLimitExceeded`` inside the task,
which releases the training lock and records the failure. The hard limit, a little later, kills the worker
child if the task did not stop. The training lock and a staged (unpublished) version outlive the hard
limit, so a live run never loses them, yet both disappear on their own soon after a run that was killed.
"""

from __future__ import annotations

from common.config import Settings


def _grace(settings: Settings) -> float:
    return _grace_for(settings.train_time_limit_seconds)


def _grace_for(limit: float) -> float:
    # Time between the soft and the hard limit: long enough to clean up, short next to the budget.
    return max(2.0, 0.1 * limit)


def soft_time_limit(settings: Settings) -> float:
    """Seconds after which a training-pipeline task is asked to stop (``SoftTimeLimitExceeded``)."""
    return settings.train_time_limit_seconds


def hard_time_limit(settings: Settings) -> float:
    """Seconds after which the worker child running a training-pipeline task is killed."""
    return settings.train_time_limit_seconds + _grace(settings)


def lock_ttl(settings: Settings) -> int:
    """Lifetime of the training lock and of a staged version: a whole run, from lock to publish, fits in it."""
    return int(hard_time_limit(settings) + _grace(settings))


def search_soft_time_limit(settings: Settings) -> float:
    """Seconds after which ``tasks.search`` is asked to stop (``SEARCH_TIME_LIMIT_SECONDS``)."""
    return settings.search_time_limit_seconds


def search_hard_time_limit(settings: Settings) -> float:
    """Seconds after which the worker child running ``tasks.search`` is killed."""
    return settings.search_time_limit_seconds + _grace_for(settings.search_time_limit_seconds)


def search_lock_ttl(settings: Settings) -> int:
    """Lifetime of the search lock: outlives a running search, frees itself soon after a killed one."""
    return int(search_hard_time_limit(settings) + _grace_for(settings.search_time_limit_seconds))
