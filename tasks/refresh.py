"""``tasks.refresh``: the live feed's beat task, a thin wrapper around :func:`tasks.refresh_pipeline.refresh`.

Beat sends it every ``REFRESH_INTERVAL_SECONDS``. It takes its own lock (never the training lock: a refresh
neither waits for nor blocks a training run), so runs never overlap; a run that finds the lock held returns
``skipped``. PostgreSQL or Redis being away is retried as ``tasks.train`` retries it; a run that fails leaves
the previous live generation in place, and the next run reads the same rows again. The task result (shown by
Flower and ``celery result``) says what the run found: rows read per table, new posts, changed users,
interactions, the watermarks and the seconds it took.
"""

from __future__ import annotations

import logging
from typing import Any

import ml.db.connection
from common.recs_cache import release_lock
from tasks import refresh_pipeline
from tasks.celery import app, settings
from tasks.training import OUTCOME_REPR_MAXSIZE, RETRY_OPTIONS, recs_cache

log = logging.getLogger(__name__)


def time_limit(interval: float) -> float:
    """The hard time limit of one refresh run, also its lock's TTL: a few intervals, at least a minute."""
    return max(60.0, 4 * interval)


@app.task(
    name="tasks.refresh",
    bind=True,
    resultrepr_maxsize=OUTCOME_REPR_MAXSIZE,
    soft_time_limit=time_limit(settings.refresh_interval_seconds) - 5,
    time_limit=time_limit(settings.refresh_interval_seconds),
    **RETRY_OPTIONS,
)
def refresh(self) -> dict[str, Any]:
    """Publish what is new in PostgreSQL to the live feed, unless another refresh is running."""
    cache = recs_cache()
    lock = cache.refresh_lock(time_limit(settings.refresh_interval_seconds))
    if not lock.acquire(token=self.request.id):
        return {"status": "skipped", "reason": "a refresh is already running"}
    try:
        conn = ml.db.connection.connect(settings.database_url)
        try:
            result = refresh_pipeline.refresh(settings, cache, conn)
        finally:
            conn.close()
    finally:
        release_lock(lock)
    log.info("live refresh %s: %s", result["status"], result)
    return result
