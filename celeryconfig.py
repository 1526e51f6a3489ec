"""Celery settings (the lowercase names of the Celery docs), all derived from the service's validated settings.

:mod:`tasks.celery` reads the settings from the environment once and configures its app with
:func:`celery_settings`, so the worker, beat, Flower and the ``celery`` CLI agree with the rest of the service,
and a test sees the Celery settings of any configuration without starting a process.
"""

from __future__ import annotations

from typing import Any

from common.config import Settings
from ml.cpus import usable_cpus
from tasks import limits


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery's settings (for ``app.config_from_object``) under the service's ``settings``."""
    hard_limit = limits.hard_time_limit(settings)
    return dict(
        broker_url=settings.celery_broker_url,
        result_backend=settings.celery_result_backend,
        broker_connection_retry_on_startup=True,
        # JSON only: no pickle anywhere, and results stay readable by Flower and the celery CLI.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # Results carry the task name, arguments and worker, so `celery result` and Flower show a run in full.
        result_extended=True,
        result_expires=7 * 86400,
        task_track_started=True,
        # Events on, so Flower (and `celery events`) see every task from the moment it is sent.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # A training run is long and heavy: a worker process reserves one task at a time, so chunk tasks spread
        # over every free process instead of queueing behind a busy one.
        worker_prefetch_multiplier=1,
        # Worker processes: one per usable CPU (Celery's own default, os.cpu_count(), ignores a container's CPU
        # limit), and at least two so that a live refresh never waits behind a training run (`--concurrency`
        # wins).
        worker_concurrency=max(2, usable_cpus()),
        # Acknowledge after the task ran: a message whose worker machine died is delivered again (after the
        # visibility timeout below) instead of being lost. task_reject_on_worker_lost stays off: a child killed
        # by the OOM killer or the hard time limit would be redelivered and killed again in a loop; the next
        # scheduled run retrains from scratch anyway, and a killed run leaves nothing half-published (see
        # tasks.pipeline).
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_soft_time_limit=limits.soft_time_limit(settings),
        task_time_limit=hard_limit,
        # The Redis broker redelivers an unacknowledged message after visibility_timeout; it must exceed the
        # longest run (the hard time limits of training and of the model search) or a task still running would
        # be started a second time.
        broker_transport_options={
            "visibility_timeout": int(max(hard_limit, limits.search_hard_time_limit(settings))) + 600
        },
        # The model search runs on a queue of its own, consumed by a worker of its own (Procfile `search`), so
        # it never takes a process that training or the live refresh needs (tasks.search).
        task_routes={"tasks.search": {"queue": "search"}},
        beat_schedule={
            "train": {
                "task": "tasks.train",
                "schedule": settings.train_interval_seconds,
                # A run not started within one interval (no worker was free) is dropped: the next supersedes it.
                "options": {"expires": settings.train_interval_seconds},
            },
            # The full retrain (tasks.train with full): every row read, a full fit, never overlapping a five-minute
            # run (it waits for the training lock); the runs between start warm (ml.warm). Off with warm starts.
            **(
                {
                    "full-retrain": {
                        "task": "tasks.train",
                        "schedule": settings.full_retrain_interval_seconds,
                        "kwargs": {"full": True},
                        "options": {"expires": settings.full_retrain_interval_seconds},
                    }
                }
                if settings.full_retrain_interval_seconds > 0
                else {}
            ),
            # Publish the current artifact again within 10 s (plus the republish) of Redis losing it
            # (tasks.publication); cheap when all is well. No results kept: 8,640 checks a day would fill the
            # backend.
            "ensure-published": {
                "task": "tasks.ensure_published",
                "schedule": 10.0,
                "options": {"expires": 10.0, "ignore_result": True},
            },
            "refresh": {
                "task": "tasks.refresh",
                "schedule": settings.refresh_interval_seconds,
                # The live feed's incremental read (tasks.refresh); a run not started within one interval is
                # dropped.
                "options": {"expires": settings.refresh_interval_seconds},
            },
            # Served pages (impressions) from the web workers' stream into PostgreSQL (tasks.online); no results
            # kept (Flower shows each run from its events).
            "move-impressions": {
                "task": "tasks.move_impressions",
                "schedule": 10.0,
                "options": {"expires": 10.0, "ignore_result": True},
            },
            # The model search (tasks.search), daily by default; a search not started within one interval is
            # dropped.
            "search": {
                "task": "tasks.search",
                "schedule": settings.search_interval_seconds,
                "options": {"expires": settings.search_interval_seconds},
            },
            "online-report": {
                "task": "tasks.online_report",
                "schedule": settings.online_report_interval_seconds,
                "options": {"expires": settings.online_report_interval_seconds},
            },
        },
    )
