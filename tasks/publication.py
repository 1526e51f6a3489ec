"""Keep the served model published: publish a kept artifact again, under its own version id, without training.

The web serves the version Redis's pointer names, loading its artifact from ``MODEL_DIR`` and its users' lists
from Redis. Two situations leave it without lists or without a model while a good artifact sits on disk:

- Redis came back empty (a restart without persistence): no pointer, no lists, pages computed per request.
- The pointer names a version this ``MODEL_DIR`` does not hold (``make clean`` removed ``var/``, a second
  checkout shares the Redis, a Docker ``models`` volume was dropped): every web worker fails to load it.

:func:`ensure_published` finds them and publishes ``MODEL_DIR``'s current artifact again with
:func:`republish`, the path a rollback takes: lists rewritten, pointer flipped, version announced. Beat runs
it every 10 s through ``tasks.ensure_published`` (``celeryconfig.beat_schedule``), looking only for the first
(a GET and an HGET when all is well); ``tasks.bootstrap`` runs it with ``verify`` before the first training,
which also finds the second. The periodic check leaves the second alone on purpose: a pointer to a version
this ``MODEL_DIR`` lacks while its own current artifact loads means another writer (a second checkout or
deployment on the same Redis and ``REDIS_PREFIX``) published it, and republishing every 10 s would fight it.

The same check covers an experiment's model variants: a variant whose current artifact Redis no longer serves
(its pointer or lists lost) is published again under its own pointer (:mod:`tasks.variants`).
"""

from __future__ import annotations

import logging
from typing import Any

import ml.artifact
from common.config import Settings
from common.recs_cache import Lock, RecsCache, release_lock
from ml.errors import ArtifactError
from tasks import limits, outcomes, pipeline, variants

log = logging.getLogger(__name__)

REPUBLISHED = "republished"
ROLLED_BACK = "rolled_back"


def publication_problem(settings: Settings, cache: RecsCache, verify: bool = False) -> tuple[str | None, str | None]:
    """The version Redis's pointer names, and why it is not served (None if it is).

    Without ``verify`` it only asks Redis whether the pointer and its version's lists are there, cheap enough
    to run every few seconds; ``verify`` also loads the version from ``MODEL_DIR`` (checksums and shapes, as a
    web worker does).
    """
    version = cache.current_version()
    if version is None:
        return None, "Redis holds no current version"
    if not cache.is_published(version):
        return version, f"Redis holds no lists of the current version {version}"
    if verify:
        try:
            ml.artifact.load(settings.model_dir, version)
        except ArtifactError as exc:
            return version, f"the current version {version} does not load from MODEL_DIR: {exc}"
    return version, None


def republish(settings: Settings, cache: RecsCache, lock: Lock, version: str, status: str, reason: str) -> dict:
    """Publish ``version`` of ``MODEL_DIR`` again under the held lock; record and return the outcome.

    Verifies the artifact (raises :class:`ArtifactError` if it does not load), writes every user's list and
    the popularity list, flips the pointer, announces the version and points ``CURRENT`` at it. The outcome
    is a published run's, with ``status`` and ``reason`` saying why (``rolled_back``, ``republished``), so
    ``/admin/model-status`` tells what happened to the served model last.
    """
    model, metadata = ml.artifact.load(settings.model_dir, version)
    candidate = outcomes.Candidate.of_artifact(version, model, metadata)
    stages = outcomes.Stages()
    previous = pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    outcome = outcomes.published_outcome(candidate, stages, previous)
    outcome.update(status=status, reason=reason)
    cache.record_training_outcome(outcome)
    log.info("%s version %s: %s", status.replace("_", " "), version, reason)
    return outcome


def ensure_published(settings: Settings, cache: RecsCache, verify: bool = False) -> dict[str, Any]:
    """Publish ``MODEL_DIR``'s current artifact again if Redis's pointer does not name a version served here.

    Returns ``{"status": "ok", "version"}`` when all is well, else what it did: ``republished`` (the outcome,
    also recorded as the last training outcome), ``skipped`` (a training run holds the lock and is about to
    publish), or ``{"status": "unservable", "reason"}`` (``MODEL_DIR`` has no current version that loads:
    only a training run can help). ``verify`` is :func:`publication_problem`'s. When model variants were
    published again too, the result's ``variants`` says which (:func:`tasks.variants.ensure_variants_published`).
    """
    version, problem = publication_problem(settings, cache, verify)
    if problem is None and not variants.unpublished_variants(settings, cache):
        return {"status": "ok", "version": version}
    lock = cache.training_lock(limits.lock_ttl(settings))
    if not lock.acquire():
        return outcomes.skipped_outcome()
    try:
        version, problem = publication_problem(settings, cache, verify)  # a run may have published meanwhile
        republished = variants.ensure_variants_published(settings, cache, lock)
        if problem is None:
            return {"status": "ok", "version": version, **({"variants": republished} if republished else {})}
        try:
            current = ml.artifact.current_version(settings.model_dir)
            if current is not None:
                outcome = republish(settings, cache, lock, current, REPUBLISHED, problem)
                return {**outcome, "variants": republished} if republished else outcome
            why = f"{settings.model_dir} has no current version"
        except ArtifactError as exc:
            why = str(exc)
        reason = f"{problem}, and MODEL_DIR has nothing to publish instead: {why}"
        log.warning("%s", reason)
        return {"status": "unservable", "reason": reason}
    finally:
        release_lock(lock)
