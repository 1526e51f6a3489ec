"""ServedLog: a web worker's record of the feed pages it served, written to Redis off the request path.

A request only appends the page to an in-memory queue (bounded: ``QUEUE_PAGES``); a thread of the worker
(started on the first page, so after gunicorn's fork) writes what has queued to the ``served`` stream every
``FLUSH_SECONDS``, in one command (:meth:`common.recs_cache.RecsCache.record_served_pages`). A
page then costs the request a few microseconds instead of a Redis round trip. What can be lost, each counted
in ``recsvc_served_pages_lost_total``: pages queued beyond ``QUEUE_PAGES`` (Redis slower than the traffic),
a batch whose write failed (Redis unreachable, or its reply later than the request timeout: a batch is written
at most once, on a client that never retries, since a retry would repeat pages Redis may have written), and at
most ``FLUSH_SECONDS`` of pages when a worker dies.
"""

from __future__ import annotations

import collections
import logging
import threading

import redis

from app import metrics
from common.recs_cache import RecsCache, ServedEntry

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
QUEUE_PAGES = 20_000  # about 4 MB of queued pages per worker


class ServedLog:
    """Queues served pages and writes them to the ``served`` stream from a thread of its own.

    Parameters
    ----------
    cache : RecsCache
        Where the stream lives (a client with short timeouts and no retry: a failed write drops its batch).
    maxlen : int
        The stream's bound (``SERVED_STREAM_MAXLEN``).

    The log owns ``cache``'s client (a :func:`common.redis_clients.write_once_client`) and closes it.
    """

    def __init__(self, cache: RecsCache, maxlen: int, flush_seconds: float = FLUSH_SECONDS):
        self._cache = cache
        self._maxlen = maxlen
        self._flush_seconds = flush_seconds
        self._queue: collections.deque[ServedEntry] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: see flush

    def record(self, entry: ServedEntry) -> None:
        """Queue one served page (called on the request path: no I/O)."""
        if len(self._queue) >= QUEUE_PAGES:
            metrics.SERVED_PAGES_LOST.inc()
            return
        self._queue.append(entry)
        if self._thread is None:
            self._start()

    def flush(self) -> int:
        """Write every queued page now; returns how many this call wrote (0 when the write failed).

        Flushes take turns: when this returns, every page queued before the call is in the stream (or counted
        lost), including a batch the thread was writing meanwhile. The request path never waits for it.
        """
        with self._flush_lock:
            batch = []
            while self._queue:
                batch.append(self._queue.popleft())
            if not batch:
                return 0
            try:
                self._cache.record_served_pages(batch, self._maxlen)
            except redis.RedisError as exc:
                metrics.SERVED_PAGES_LOST.inc(len(batch))
                log.warning("could not record %d served pages in Redis: %s", len(batch), exc)
                return 0
            return len(batch)

    def close(self) -> None:
        """Stop the thread after a last flush and release the connections (at worker exit, and in tests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        self._cache.client.close()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()
