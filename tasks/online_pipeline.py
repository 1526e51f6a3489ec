"""The plain functions of :mod:`tasks.online`: move served impressions to PostgreSQL, build the online report.

:func:`move_impressions` reads a batch of served pages from the Redis stream (its own pending entries
first: a batch whose insert failed is read again), inserts one row per post (``ON CONFLICT DO NOTHING``:
a batch read twice writes nothing twice), commits, and only then acknowledges and deletes the entries.
:func:`online_report` joins the impressions with the interactions (``ml.online.day_counts``) and builds
the report (``ml.abtest.report``) that ``GET /admin/experiments``, ``/admin/model-status`` and ``/metrics``
show, kept in Redis.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg2 import extensions

from common.config import Settings
from common.recs_cache import RecsCache, ServedPage
from ml import abtest, online

log = logging.getLogger(__name__)

MOVE_BATCH_PAGES = 2000  # stream entries per batch: about 20 posts each
REPORT_DAYS = abtest.TRAILING_DAYS + 7  # days the report covers, today included


def impressions_of(page: ServedPage) -> list[online.Impression]:
    """One row per post of a served page."""
    shown_at = datetime.fromtimestamp(page.served_ms / 1000, UTC)
    return [
        online.Impression(
            entry_id=page.entry_id,
            position=i,
            user_id=page.user_id,
            post_id=post_id,
            rank=page.first_rank + i,
            experiment=page.experiment,
            variant=page.variant,
            ranking=page.ranking,
            model_version=page.model_version,
            shown_at=shown_at,
        )
        for i, post_id in enumerate(page.post_ids)
    ]


def move_impressions(settings: Settings, cache: RecsCache, conn: extensions.connection) -> dict[str, Any]:
    """Move batches of served pages until the stream has none left unread (or after ten batches)."""
    started = time.monotonic()
    online.create_online_schema(conn, settings.online_schema)
    pages = rows = inserted = 0
    for _ in range(10):
        batch = cache.read_served_pages(MOVE_BATCH_PAGES)
        if not batch:
            break
        new_rows = [row for page in batch for row in impressions_of(page)]
        inserted += online.insert_impressions(conn, settings.online_schema, new_rows)
        conn.commit()
        cache.ack_served_pages([page.entry_id for page in batch])  # after the commit: a crash re-reads them
        pages += len(batch)
        rows += len(new_rows)
        if len(batch) < MOVE_BATCH_PAGES:
            break
    return {
        "status": "moved",
        "pages": pages,
        "rows": rows,
        "inserted": inserted,
        "backlog": cache.served_backlog(),
        "seconds": round(time.monotonic() - started, 3),
    }


def online_report(
    settings: Settings, cache: RecsCache, conn: extensions.connection, now: datetime | None = None
) -> dict[str, Any]:
    """Compute the online report over the last ``REPORT_DAYS`` days, keep it in Redis, and return it."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    today = now.date()
    since = datetime.combine(today - timedelta(days=REPORT_DAYS - 1), datetime.min.time(), UTC)
    online.create_online_schema(conn, settings.online_schema)
    counts = online.day_counts(
        conn,
        settings.online_schema,
        settings.sql_queries["interactions"],
        since,
        now,
        timedelta(hours=settings.attribution_window_hours),
    )
    experiment = settings.experiment
    spec = None
    if experiment is not None:
        spec = {
            "name": experiment.name,
            "control": experiment.control,
            "variants": [v.name for v in experiment.variants],
        }
    result = abtest.report(counts, today, settings.ctr_drop_alert_fraction, spec)
    result["computed_at"] = now.isoformat()
    result["attribution_window_hours"] = settings.attribution_window_hours
    cache.store_online_report(result)
    quality = result["quality"]
    if quality["alert"]:
        log.warning(
            "online click-through of the production model dropped: %.4f today against %.4f over the trailing week",
            quality["ctr_today"],
            quality["ctr_trailing_week"],
        )
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Today's figures of a report, small enough for a task result shown in Flower."""
    quality = report["quality"]
    out: dict[str, Any] = {
        "status": "computed",
        "ctr_today": quality["ctr_today"],
        "ctr_trailing_week": quality["ctr_trailing_week"],
        "alert": quality["alert"],
        "seconds": report["seconds"],
    }
    experiment = report["experiment"]
    if experiment is not None and experiment["days"]:
        today = experiment["days"][0]
        out["experiment"] = experiment["name"]
        out["day"] = today["day"]
        out["variants"] = {
            row["variant"]: {
                "impressions": row["impressions"],
                "ctr": row["ctr"]["any"],
                "vs_control": (row["vs_control"] or {}).get("any"),
            }
            for row in today["variants"]
        }
    return out
