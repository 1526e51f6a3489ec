"""The benchmark's baseline: a bare Flask endpoint returning a constant, run under the same gunicorn settings.

``gunicorn -c benchmarks/bare.gunicorn.conf.py benchmarks.bare_app:app`` — what the service's own work is
compared with:

- ``GET /bare``: the constant JSON answer;
- ``GET /bare/<user_id>``: the same answer after the one Redis read a feed page makes for a user whose list
  the worker does not hold (``RecsCache.user_reads`` of the clock, the user's exclusions and its list in the
  published version, the list unpacked), on a client made as the service's request client is. It is the
  floor of any feed that reads Redis once per page: what the round trip and the unpack cost, without the
  ranking, the page and the service's bookkeeping. It reads ``REDIS_URL`` and ``REDIS_PREFIX`` as the service
  does and needs a published version there (``benchmarks/side_by_side.py`` serves it).
"""

from __future__ import annotations

import functools

from flask import Flask

from common.config import load_settings
from common.recs_cache import RecsCache, unpack_list
from common.redis_clients import request_client

app = Flask(__name__)

BODY = {"status": "ok"}


@app.get("/bare")
def bare():
    return BODY


@functools.cache
def _published() -> tuple[RecsCache, str]:
    """The reader and the version it reads (made on a worker's first read, after gunicorn's fork)."""
    settings = load_settings()
    cache = RecsCache(request_client(settings.redis_url), settings.redis_prefix)
    version = cache.current_version()
    if version is None:
        raise RuntimeError("no version is published in REDIS_URL: /bare/<user_id> has no list to read")
    return cache, version


@app.get("/bare/<user_id>")
def bare_after_a_read(user_id: str):
    cache, version = _published()
    reads = cache.user_reads(user_id, list_version=version, generation=False)
    if reads.list_blob is not None:
        unpack_list(reads.list_blob)
    return BODY
