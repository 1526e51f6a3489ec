"""Code shared by the web app (``app/``) and the Celery tasks (``tasks/``).

It holds the configuration (read and validated once) and the Redis cache module (the one owner of every
Redis key, the pub/sub channel and the training lock). It never imports Flask or Celery.
"""
