"""recsvc's Celery side: the app (:mod:`tasks.celery`, which ``celery -A tasks`` finds), its thin tasks
(:mod:`tasks.training`, :mod:`tasks.refresh`) and the plain functions they run (:mod:`tasks.pipeline`,
:mod:`tasks.publication`, :mod:`tasks.refresh_pipeline`). Importing the package builds nothing.
"""
