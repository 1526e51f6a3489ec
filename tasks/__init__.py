"""The Celery app of recsvc: ``celery -A tasks worker | beat | flower | call tasks.train``.

The settings are read from the environment once, here, and :mod:`celeryconfig` turns them into Celery's
settings. The tasks themselves live in :mod:`tasks.training` (thin: serialisation, retries, the lock) and
call the plain functions of :mod:`tasks.pipeline`; the live feed's ``tasks.refresh`` lives in
:mod:`tasks.refresh` and calls :mod:`tasks.refresh_pipeline`. See docs/OPERATIONS.md for running and monitoring them.
"""

from celery import Celery

from common.config import load_settings

settings = load_settings()

app = Celery("tasks", include=["tasks.training", "tasks.refresh"])
app.config_from_object("celeryconfig")
