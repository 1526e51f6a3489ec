"""The model reloader of a web worker: a daemon thread that keeps the held model on the published version.

It listens on the cache's update channel and loads each announced version. Pub/sub drops messages while a
connection is down, so it also polls the current-version pointer every ``poll_interval`` seconds (and right
after each reconnect); a lost message is caught within one interval. When Redis is away it reconnects with
capped exponential backoff. A version whose load failed is retried only after ``retry_failed_after``
seconds, so a broken artifact does not make the worker re-read it every poll. The gauge
``recsvc_reloader_listening`` is 1 while the subscription stands (Redis confirmed it) and 0 while it reconnects.

With an experiment's model variants (the holder's ``variant_dirs``), every poll and every production update
also reads the variant pointers (one MGET) and loads each variant's new version into the holder
(:meth:`ModelHolder.reload_variant`), with the same retry rule; a variant publish sends no message, so it is
picked up within one poll interval.

Given the feed's :class:`app.feed.mirror.LiveMirror`, the same subscription also follows the live channels
(new live generations, users whose exclusions changed) and keeps the mirror exact; the mirror answers only
while the subscription stands.

Under gunicorn, :func:`start` runs in ``post_worker_init`` (in each worker after the fork, never in the
master and never at import) and :func:`stop` in ``worker_exit``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from flask import Flask

from app.feed.mirror import LiveMirror
from app.metrics import RELOADER_LISTENING
from app.model_holder import ModelHolder
from app.runtime import Runtime
from common.recs_cache import RecsCache
from common.redis_clients import subscriber_client

log = logging.getLogger(__name__)


class ModelReloader(threading.Thread):
    """Keeps ``holder`` on the version ``cache`` publishes.

    Parameters
    ----------
    holder : ModelHolder
        The worker's model.
    cache : RecsCache
        A cache on a dedicated client (the subscription occupies its connection).
    poll_interval : float
        Seconds between checks of the current-version pointer.
    max_backoff : float
        Cap of the wait between reconnection attempts.
    retry_failed_after : float
        Seconds before a version that failed to load is tried again.
    on_loaded : callable, optional
        Called with each version swapped in (the feed drops what belonged to the replaced version; it prepared
        the new one before the swap, ``ModelHolder.prepare``).
    live : LiveMirror, optional
        The feed's mirror of the live state, kept up to date from the live channels.
    """

    def __init__(
        self,
        holder: ModelHolder,
        cache: RecsCache,
        poll_interval: float = 2.0,
        max_backoff: float = 30.0,
        retry_failed_after: float = 30.0,
        on_loaded: Callable[[str], None] | None = None,
        live: LiveMirror | None = None,
    ):
        super().__init__(name="model-reloader", daemon=True)
        self._holder = holder
        self._cache = cache
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._retry_failed_after = retry_failed_after
        self._on_loaded = on_loaded
        self._live = live
        self._stopping = threading.Event()
        self._failed: dict[str, float] = {}  # version -> monotonic time of its failed load

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish and wait for it (it notices within one poll interval)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def close(self) -> None:
        """Release the reloader's Redis connection (after :meth:`stop`)."""
        self._cache.client.close()

    def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            pubsub = None
            try:
                pubsub = self._cache.subscribe(live=self._live is not None)
                RELOADER_LISTENING.set(1)
                if self._live is not None:
                    state = self._cache.live_state()  # read after the subscription: no update falls between
                    self._live.connected(state.generation if state is not None else 0)
                backoff = 0.5
                self._follow(pubsub)
            except redis.RedisError as exc:
                log.warning("model reloader lost Redis (%s); reconnecting in %.1fs", exc, backoff)
            except Exception:  # the thread must survive anything to keep the worker's model fresh
                log.exception("model reloader failed; restarting it in %.1fs", backoff)
            finally:
                RELOADER_LISTENING.set(0)
                if self._live is not None:
                    self._live.disconnected()
                if pubsub is not None:
                    _close_quietly(pubsub)
            if self._stopping.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)

    def _follow(self, pubsub: redis.client.PubSub) -> None:
        """Load announced versions, and poll the pointer, until stopped or Redis fails."""
        self._check_pointer()  # catches anything published while we were not subscribed
        next_poll = time.monotonic() + self._poll_interval
        while not self._stopping.is_set():
            wait = max(0.0, min(next_poll - time.monotonic(), 1.0))
            message = pubsub.get_message(timeout=wait)
            if self._live is None or not self._live.handle(self._cache, message):
                update = self._cache.parse_update(message)
                if update is not None:
                    self._load(str(update["version"]))
                    self._check_variants()  # a run publishes its variants just before its production version
            if time.monotonic() >= next_poll:
                self._check_pointer()
                next_poll = time.monotonic() + self._poll_interval

    def _check_pointer(self) -> None:
        version = self._cache.current_version()
        if version is not None:
            self._load(version)
        self._check_variants()

    def load_variants(self) -> None:
        """Load each model variant's published version now (a worker does before it serves); if Redis cannot
        say, the thread does once it can."""
        try:
            self._check_variants()
        except redis.RedisError as exc:
            log.warning("cannot read the model variants' versions now (%s); the reloader will", exc)

    def _check_variants(self) -> None:
        for lineage, version in self._cache.variant_versions(list(self._holder.variant_dirs)).items():
            if version is not None:
                self._load(version, lineage)

    def _load(self, version: str, lineage: str | None = None) -> None:
        """Load ``version`` as the production model, or as model variant ``lineage``'s, unless it is held."""
        held = self._holder.current if lineage is None else self._holder.variant(lineage)
        if held is not None and held.version == version:
            return
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < self._retry_failed_after:
            return
        outcome = self._holder.reload(version) if lineage is None else self._holder.reload_variant(lineage, version)
        if outcome.success:
            self._failed.pop(version, None)
            if outcome.reloaded and self._on_loaded is not None:
                self._on_loaded(version)
        else:
            self._failed[version] = time.monotonic()


def _close_quietly(pubsub: redis.client.PubSub) -> None:
    try:
        pubsub.close()
    except redis.RedisError:
        pass  # the connection is already gone; nothing to release


def start(app: Flask) -> ModelReloader:
    """Load the model and the model variants' now (before the worker serves) and start the reloader thread."""
    runtime: Runtime = app.extensions["recsvc"]
    runtime.holder.reload()  # the version's pages are prepared before it is held (ModelHolder.prepare)
    reloader = ModelReloader(
        runtime.holder,
        RecsCache(subscriber_client(runtime.settings.redis_url), runtime.settings.redis_prefix),
        on_loaded=runtime.feed.after_swap,
        live=runtime.feed.mirror,
    )
    runtime.reloader = reloader
    reloader.load_variants()
    reloader.start()
    return reloader


def stop(app: Flask) -> None:
    """Stop the worker's reloader thread, if it runs, and release its connection."""
    reloader = app.extensions["recsvc"].reloader
    if reloader is not None:
        reloader.stop()
        reloader.close()
