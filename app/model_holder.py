"""The model a web worker holds in memory, and how it is replaced.

Each worker process holds one :class:`LoadedModel`. Requests read :attr:`ModelHolder.current` without a
lock; a reload builds the new model completely and then swaps it in with one assignment, so a request sees
either the old or the new model, never a mix. Loads are serialised by a lock (the reloader thread and an
admin request may ask at the same time). A failed load is logged and recorded, and the old model stays.

A scroll pinned to an earlier version needs that version's model (to score fresh posts for the user and
to rank beyond the precomputed list), so the holder also keeps up to ``kept`` older versions
(``API_MODELS_KEPT``): the model a swap replaces, and versions loaded from disk on demand by :meth:`at`,
the least recently used dropped first.

With an experiment declaring ``model`` variants, the holder also holds each variant's published model
(:meth:`variant`), loaded from the variant's own artifact directory by :meth:`reload_variant` (the reloader
keeps it on the variant's pointer) and swapped with one assignment; the model a variant swap replaces is kept
like an older version, so a scroll pinned to it finishes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app import metrics
from common.recs_cache import served_version
from ml import artifact
from ml.errors import ArtifactError
from ml.model import RecModel
from ml.model_config import family_of

log = logging.getLogger(__name__)


def iso_time(timestamp: float | None) -> str | None:
    """Unix time as ISO 8601 UTC, or None."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model version in memory, with when it was trained and loaded."""

    version: str
    model: RecModel
    metadata: dict[str, Any]
    loaded_at: float  # Unix time
    created_at: float | None = field(default=None)  # Unix time of training

    @property
    def num_users(self) -> int:
        return len(self.model.user_ids)

    @property
    def family(self) -> str:
        """The model family that ranks this version's feeds: ``lightfm``, ``als`` or ``blend``."""
        return family_of(self.metadata)

    @property
    def num_items(self) -> int:
        return len(self.model.item_ids)

    @property
    def lineage(self) -> str | None:
        """The model variant line this version belongs to (its artifact's ``variant``), None for production's."""
        return (self.metadata.get("variant") or {}).get("lineage")

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since training, or None if unknown."""
        return None if self.created_at is None else (now or time.time()) - self.created_at

    def item(self, index: int) -> tuple[str, Any, str]:
        """(post_id, tags, community_id) of an item index of this model."""
        m = self.model
        return m.item_ids[index], m.item_tags[index], m.item_community_ids[index]


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: ``success`` is False only when a load was attempted and failed."""

    success: bool
    reloaded: bool
    reason: str
    previous: LoadedModel | None
    current: LoadedModel | None


class ModelHolder:
    """Holds the worker's current model and replaces it on request.

    Parameters
    ----------
    model_dir : str
        The artifact directory (``MODEL_DIR``).
    published_version : callable
        Returns the version Redis says is current, or None when there is none or Redis cannot be reached;
        the disk's ``CURRENT`` pointer is used then.
    kept : int
        How many older versions to keep in memory for pinned scrolls (0: none).
    variant_dirs : mapping, optional
        The experiment's model variants: lineage -> artifact directory
        (:func:`common.experiments.model_variant_dirs`).

    Attributes
    ----------
    prepare : callable or None
        Called with each loaded production version before it is swapped in (the feed builds what its pages
        need: ``FeedService.prepare``), so that requests keep the old version until the new one is ready
        rather than wait for it; an exception refuses the version, as a damaged artifact is refused.
    """

    # After a failed load of an older version, how long :meth:`at` answers None without trying the disk.
    RETRY_SECONDS = 30.0

    def __init__(
        self,
        model_dir: str,
        published_version: Callable[[], str | None],
        kept: int = 0,
        variant_dirs: Mapping[str, str] | None = None,
    ):
        self._model_dir = model_dir
        self._published_version = published_version
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._attempted = False
        self.last_error: dict[str, Any] | None = None
        self._kept = kept
        self._older: OrderedDict[str, LoadedModel] = OrderedDict()
        self._failed: dict[str, float] = {}  # version -> monotonic time of its failed load
        self._older_lock = threading.Lock()
        self.prepare: Callable[[LoadedModel], None] | None = None
        self.variant_dirs = dict(variant_dirs or {})
        self._variants: dict[str, LoadedModel] = {}  # lineage -> its published model, replaced whole on a swap
        self._variant_lock = threading.Lock()

    @property
    def model_dir(self) -> str:
        """The artifact directory of production's versions (``MODEL_DIR``)."""
        return self._model_dir

    @property
    def current(self) -> LoadedModel | None:
        """The model in use (None before the first successful load)."""
        return self._current

    def get(self) -> LoadedModel | None:
        """The model in use, loading it first if no load was tried yet.

        Under gunicorn the worker loads before serving (``post_worker_init``); under Flask's test client
        and dev server this first-use load is what loads the model.
        """
        if self._current is None and not self._attempted:
            self.reload()
        return self._current

    def reload(self, version: str | None = None) -> ReloadOutcome:
        """Load ``version`` (default: the published one, else the disk's current) unless it is held already."""
        with self._load_lock:
            self._attempted = True
            previous = self._current
            target = version
            started = time.perf_counter()
            try:
                target = target or served_version(self._published_version(), self._model_dir)
                if target is None:
                    return ReloadOutcome(True, False, "no model has been published yet", previous, previous)
                if previous is not None and previous.version == target:
                    return ReloadOutcome(True, False, f"version {target} is already loaded", previous, previous)
                model, metadata = artifact.load(self._model_dir, target)
                loaded = LoadedModel(target, model, metadata, time.time(), artifact.created_timestamp(target, metadata))
                if self.prepare is not None:
                    self.prepare(loaded)
            except Exception as exc:  # any failure must leave the worker serving its old model
                # An ArtifactError names the file and the reason; anything else is unexpected: keep its traceback.
                log.error(
                    "loading model version %s failed, keeping %s: %s",
                    target,
                    _name(previous),
                    exc,
                    exc_info=None if isinstance(exc, ArtifactError) else exc,
                )
                self.last_error = {"version": target, "error": str(exc), "at": iso_time(time.time())}
                metrics.MODEL_LOADS.labels("failed").inc()
                reason = f"loading version {target} failed: {exc}; still serving {_name(previous)}"
                return ReloadOutcome(False, False, reason, previous, previous)
            self._current = loaded  # the swap: one assignment
            if previous is not None:
                self._keep(previous)
            self.last_error = None
            metrics.MODEL_LOADS.labels("loaded").inc()
            metrics.record_model_swap(previous.version if previous else None, target, loaded.created_at)
            log.info(
                "loaded model version %s (%d users, %d items) in %.0f ms, replacing %s",
                target,
                loaded.num_users,
                loaded.num_items,
                (time.perf_counter() - started) * 1000,
                _name(previous),
            )
            return ReloadOutcome(True, True, f"loaded version {target}", previous, loaded)

    def at(self, version: str) -> LoadedModel | None:
        """The model of ``version``: the current one, a kept older one, or loaded now from disk and kept.

        None when it cannot be had: keeping older versions is off, the artifact is gone or unreadable
        (then the disk is not tried again for :attr:`RETRY_SECONDS`). Loads of older versions are
        serialised by their own lock, so they never delay a reload of the current version.
        """
        current = self._current
        if current is not None and current.version == version:
            return current
        for held in self._variants.values():
            if held.version == version:
                return held
        if not self._kept:
            return None
        with self._older_lock:
            found = self._older.get(version)
            if found is not None:
                self._older.move_to_end(version)
                return found
            failed_at = self._failed.get(version)
            if failed_at is not None and time.monotonic() - failed_at < self.RETRY_SECONDS:
                return None
            try:
                model, metadata = artifact.load(self._directory_of(version), version)
            except Exception as exc:  # an unreadable older version only ends the pinned scroll
                log.warning("cannot load model version %s for a pinned scroll: %s", version, exc)
                self._failed[version] = time.monotonic()
                while len(self._failed) > 64:
                    self._failed.pop(next(iter(self._failed)))
                return None
            self._failed.pop(version, None)
            loaded = LoadedModel(version, model, metadata, time.time(), artifact.created_timestamp(version, metadata))
            log.info("loaded older model version %s for pinned scrolls", version)
            self._keep_locked(loaded)
            return loaded

    def variant(self, lineage: str) -> LoadedModel | None:
        """The published model of model variant ``lineage``, or None while none is loaded."""
        return self._variants.get(lineage)

    def lineage_of(self, version: str) -> str | None:
        """The variant line a held version (a variant's current or a kept older one) belongs to; None for a
        production version or one not held."""
        for held in self._variants.values():
            if held.version == version:
                return held.lineage
        with self._older_lock:
            older = self._older.get(version)
        return older.lineage if older is not None else None

    def reload_variant(self, lineage: str, version: str) -> ReloadOutcome:
        """Load ``version`` of model variant ``lineage`` from its directory and swap it in, unless held already.

        A failed load is logged and counted (``recsvc_model_loads_total{outcome="failed"}``), and the variant's
        previous model, if any, stays; the replaced one is kept for pinned scrolls.
        """
        with self._variant_lock:
            previous = self._variants.get(lineage)
            if previous is not None and previous.version == version:
                return ReloadOutcome(True, False, f"version {version} is already loaded", previous, previous)
            try:
                model, metadata = artifact.load(self.variant_dirs[lineage], version)
            except Exception as exc:  # the variant's users keep the previous variant model, or production's
                log.error(
                    "loading variant %s version %s failed, keeping %s: %s", lineage, version, _name(previous), exc
                )
                metrics.MODEL_LOADS.labels("failed").inc()
                reason = f"loading variant version {version} failed: {exc}"
                return ReloadOutcome(False, False, reason, previous, previous)
            loaded = LoadedModel(version, model, metadata, time.time(), artifact.created_timestamp(version, metadata))
            self._variants = {**self._variants, lineage: loaded}  # the swap: one assignment
            if previous is not None:
                self._keep(previous)
            metrics.MODEL_LOADS.labels("loaded").inc()
            log.info("loaded variant %s model version %s, replacing %s", lineage, version, _name(previous))
            return ReloadOutcome(True, True, f"loaded variant version {version}", previous, loaded)

    def _directory_of(self, version: str) -> str:
        """The artifact directory holding ``version``: a variant's if one lists it, else ``MODEL_DIR``."""
        for directory in self.variant_dirs.values():
            if version in artifact.list_versions(directory):
                return directory
        return self._model_dir

    def _keep(self, loaded: LoadedModel) -> None:
        with self._older_lock:
            self._keep_locked(loaded)

    def _keep_locked(self, loaded: LoadedModel) -> None:
        if not self._kept:
            return
        self._older[loaded.version] = loaded
        self._older.move_to_end(loaded.version)
        while len(self._older) > self._kept:
            self._older.popitem(last=False)


def _name(loaded: LoadedModel | None) -> str:
    return loaded.version if loaded is not None else "no model"
