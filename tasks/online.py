"""``tasks.move_impressions`` and ``tasks.online_report``: thin wrappers around :mod:`tasks.online_pipeline`.

Beat sends ``tasks.move_impressions`` every few seconds: it moves the pages the web workers recorded in the
``served`` stream into recsvc's impressions table (no results kept, like ``tasks.ensure_published``:
Flower still shows each run and its outcome from the task events). ``tasks.online_report`` runs every
``ONLINE_REPORT_INTERVAL_SECONDS``: it computes the experiment's and the production model's online
click-through and keeps the report in Redis for ``/admin/experiments``, ``/admin/model-status`` and
``/metrics``; its result (in Flower and ``celery result``) is a summary of the report. PostgreSQL or Redis
being away is retried as ``tasks.train`` retries it; the served pages wait in the stream meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

import ml.db.connection
from tasks import online_pipeline
from tasks.celery import app, settings
from tasks.training import OUTCOME_REPR_MAXSIZE, RETRY_OPTIONS, recs_cache

log = logging.getLogger(__name__)


@app.task(name="tasks.move_impressions", resultrepr_maxsize=OUTCOME_REPR_MAXSIZE, **RETRY_OPTIONS)
def move_impressions() -> dict[str, Any]:
    """Move the served pages waiting in Redis into PostgreSQL."""
    conn = ml.db.connection.connect(settings.database_url)
    try:
        result = online_pipeline.move_impressions(settings, recs_cache(), conn)
    finally:
        conn.close()
    if result["pages"]:
        log.info(
            "moved %d served pages (%d new rows), %d waiting", result["pages"], result["inserted"], result["backlog"]
        )
    return result


@app.task(name="tasks.online_report", resultrepr_maxsize=OUTCOME_REPR_MAXSIZE, **RETRY_OPTIONS)
def online_report() -> dict[str, Any]:
    """Compute the online report and keep it in Redis; the result summarises today's figures."""
    conn = ml.db.connection.connect(settings.database_url)
    try:
        report = online_pipeline.online_report(settings, recs_cache(), conn)
    finally:
        conn.close()
    return online_pipeline.summary(report)
