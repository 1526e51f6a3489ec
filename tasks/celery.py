"""The Celery app of recsvc: ``celery -A tasks worker | beat | flower | call tasks.train`` finds it here.

The service's settings are read from the environment once, here; :func:`celeryconfig.celery_settings` turns
them into Celery's. The tasks live in :mod:`tasks.training` and :mod:`tasks.refresh` (thin: serialisation,
retries, locks) and call plain functions that are given ``settings``. See docs/OPERATIONS.md for running and
monitoring them.
"""

import sys

from celery import Celery

from celeryconfig import celery_settings
from common.config import ConfigError, load_settings

try:
    settings = load_settings()
except ConfigError as exc:
    # One line naming the variable, as the web says it (gunicorn.conf.py), rather than Celery's "Unable to load
    # celery application" over a traceback.
    sys.exit(f"recsvc tasks: invalid configuration: {exc}")

app = Celery("tasks", include=["tasks.training", "tasks.refresh", "tasks.online", "tasks.search"])
app.config_from_object(celery_settings(settings))
