"""The Celery app of recsvc: ``celery -A tasks worker | beat | flower | call tasks.train`` finds it here.

The service's settings are read from the environment once, here; :func:`celeryconfig.celery_settings` turns
them into Celery's. The tasks live in :mod:`tasks.training` and :mod:`tasks.refresh` (thin: serialisation,
retries, locks) and call plain functions that are given ``settings``. See docs/OPERATIONS.md for running and
monitoring them.
"""

from celery import Celery

from celeryconfig import celery_settings
from common.config import load_settings

settings = load_settings()

app = Celery("tasks", include=["tasks.training", "tasks.refresh", "tasks.online", "tasks.search"])
app.config_from_object(celery_settings(settings))
