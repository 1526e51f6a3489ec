"""The Celery tasks of the training pipeline: thin wrappers around :mod:`tasks.pipeline`.

``tasks.train`` (scheduled by beat, or ``celery -A tasks call tasks.train``) takes the training lock, builds and
saves a candidate model, and then either precomputes every user's list itself and publishes, or, above
``PRECOMPUTE_CHUNK_USERS`` users, replaces itself with a chord: ``tasks.precompute_chunk`` tasks that any
worker process may run, then ``tasks.publish_version``. The chord inherits the train task's id, so the
result a caller waits for is the final outcome either way. The lock is held by the run, not by a process:
its token (the train task's id) travels to ``tasks.publish_version``, which publishes only if the run still
holds it and then releases it, or to ``tasks.abandon_run`` (the chord's errback) if a chunk or the publish
fails for good. A run whose worker dies keeps it until its TTL (:func:`tasks.limits.lock_ttl`) ends.

Outcomes are JSON dicts (see :func:`tasks.outcomes.outcome`); failures are task failures after retries. A
rejected run is a task failure too (:class:`tasks.outcomes.RunRejected`, raised once its outcome is recorded),
so Flower's Failed filter finds it; published, skipped and the other outcomes succeed, their status in the
result. ``tasks.ensure_published`` (beat, every few seconds) publishes the current artifact again when Redis
lost it (:mod:`tasks.publication`). With an experiment declaring ``model`` variants, the run first trains and
publishes each variant's model on the same data (:mod:`tasks.variants`); the outcome's ``variants`` says
what each did, and its ``variants`` stage what they cost.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any

import psycopg2
import redis
from celery import Task, chord, group, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded

import ml.artifact
from common.recs_cache import RecsCache, release_lock
from common.redis_clients import worker_client
from ml.model import RecModel
from tasks import limits, outcomes, pipeline, publication, variants
from tasks.celery import app, settings

log = logging.getLogger(__name__)

# Outages worth waiting out. The retries are short on purpose: beat starts a fresh run every interval,
# which is the long-term retry. Without jitter: Celery's full jitter draws each wait from 0 to its backoff, so a
# run could spend its three retries within a second of an outage; 2, 4 and 8 s wait out a restart.
RETRY_ON = (psycopg2.OperationalError, redis.ConnectionError, redis.TimeoutError)
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": RETRY_ON,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": False,
    "max_retries": 3,
}

# Task events carry the result's repr, cut at this size (Celery's default is 1024): room for a whole outcome
# in Flower.
OUTCOME_REPR_MAXSIZE = 4096


@functools.cache
def recs_cache() -> RecsCache:
    """This process's RecsCache (redis-py reconnects, and resets its pool in a forked worker child)."""
    return RecsCache(worker_client(settings.redis_url), settings.redis_prefix)


@functools.lru_cache(maxsize=1)
def _model(model_dir: str, version: str) -> RecModel:
    # A worker process runs many chunks of one version in a row: load (and verify) the artifact once.
    model, _ = ml.artifact.load(model_dir, version)
    return model


def _finish(result: dict[str, Any]) -> dict[str, Any]:
    """Record the run's outcome for /admin/model-status and return it as the task result."""
    level = logging.WARNING if result["status"] == "failed" else logging.INFO
    log.log(level, "training run %s%s", result["status"], f": {result['reason']}" if result["reason"] else "")
    try:
        recs_cache().record_training_outcome(result)
    except redis.RedisError as exc:
        # The outcome is also the task result; failing the run here would retrain for nothing.
        log.warning("could not record the training outcome in Redis: %s", exc)
    return result


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"the run took longer than TRAIN_TIME_LIMIT_SECONDS ({settings.train_time_limit_seconds:g} s)"
    return f"{type(exc).__name__}: {exc}"


class TrainTask(Task):
    """Base of ``tasks.train``: a final failure (after the retries) is recorded as the last training outcome."""

    resultrepr_maxsize = OUTCOME_REPR_MAXSIZE

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, outcomes.RunRejected):
            return  # its outcome is recorded already
        _finish(outcomes.outcome("failed", _failure_reason(exc), task_id=task_id))


# throws: a rejection is an expected end, logged without a traceback (but still a FAILURE in Flower).
@app.task(name="tasks.train", bind=True, base=TrainTask, throws=(outcomes.RunRejected,), **RETRY_OPTIONS)
def train(self, force: bool = False, full: bool = False) -> dict[str, Any]:
    """Train, evaluate and publish a new model version, unless another run holds the training lock.

    A run on the data (and parameters) the served version was trained on ends ``unchanged``, publishing
    nothing, unless ``force`` (``celery -A tasks call tasks.train --kwargs '{"force": true}'``). ``full`` is beat's
    full retrain (``full-retrain``, every ``FULL_RETRAIN_INTERVAL_SECONDS``): it reads every row and fits in full,
    and finding the lock taken it waits for it (a retry every tenth of ``TRAIN_INTERVAL_SECONDS``, at most a
    minute) instead of ending ``skipped``, so it never overlaps a five-minute run and is not lost to one.
    """
    cache = recs_cache()
    lock = cache.training_lock(limits.lock_ttl(settings))
    if not lock.acquire(token=self.request.id):
        if full:
            every = min(60.0, settings.train_interval_seconds / 10)
            waited = outcomes.RunAborted(f"the full retrain found the lock taken for {limits.lock_ttl(settings)} s")
            raise self.retry(countdown=every, max_retries=math.ceil(limits.lock_ttl(settings) / every), exc=waited)
        return _finish(outcomes.skipped_outcome())
    handed_over = False
    try:
        stages = outcomes.Stages()
        trained: dict[str, Any] = {}  # the experiment's model variants: name -> what the run did with it
        try:
            data = pipeline.read_data(settings, stages, cache, full)
            trained = variants.train_variants(settings, cache, lock, data, stages, force=force)
            candidate, model = pipeline.build_candidate(settings, cache, stages, force=force, data=data)
        except outcomes.RunUnchanged as exc:
            return _finish({**outcomes.unchanged_outcome(exc, stages), "variants": trained})
        except outcomes.RunRejected as exc:
            _finish({**outcomes.rejected_outcome(exc, stages), "variants": trained})
            raise

        ranges = pipeline.chunk_ranges(candidate.num_users, settings.precompute_chunk_users)
        if len(ranges) == 1:
            previous = pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
            return _finish(outcomes.published_outcome(candidate, stages, previous, variants=trained))

        dispatched_at = time.time()
        pipeline.stage_version(settings, cache, candidate, model)
        log.info("precomputing %d users of %s in %d chunk tasks", candidate.num_users, candidate.version, len(ranges))
        header = group(precompute_chunk.s(candidate.version, start, stop) for start, stop in ranges)
        callback = publish_version.s(
            candidate=dataclasses.asdict(candidate),
            stages=stages.durations,
            dispatched_at=dispatched_at,
            lock_token=self.request.id,
            trained=trained,
        ).on_error(abandon_run.s(lock_token=self.request.id))
        # The chord runs the rest of this training run and releases the lock when it publishes
        # (publish_version) or fails for good (abandon_run): sent to the workers (replace raises Ignore), or,
        # when this task runs in-process (Task.apply, as tasks.bootstrap does), run here before replace returns.
        try:
            result = self.replace(chord(header, callback))
        except Ignore:
            handed_over = True
            raise
        handed_over = True
        return result
    finally:
        if not handed_over:
            release_lock(lock)


@app.task(name="tasks.precompute_chunk", bind=True, **RETRY_OPTIONS)
def precompute_chunk(self, version: str, start: int, stop: int) -> dict[str, Any]:
    """Write the top-K lists of users ``start..stop-1`` of a staged version (one part of a chunked run)."""
    began = time.perf_counter()
    model = _model(settings.model_dir, version)
    written = pipeline.precompute_users(settings, recs_cache(), version, model, start, stop)
    return {"users": written, "seconds": round(time.perf_counter() - began, 3), "worker": self.request.hostname}


@app.task(name="tasks.publish_version", resultrepr_maxsize=OUTCOME_REPR_MAXSIZE, **RETRY_OPTIONS)
def publish_version(
    chunk_results: list[dict[str, Any]],
    candidate: dict[str, Any],
    stages: dict[str, float],
    dispatched_at: float,
    lock_token: str,
    trained: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a version once every chunk of it is written, then release the run's training lock.

    ``trained`` is what the run did with the experiment's model variants (the outcome's ``variants``).

    On a final failure the lock is left to :func:`abandon_run`, the chord's errback; between retries the
    run keeps it.
    """
    cache = recs_cache()
    run = outcomes.Candidate(**candidate)
    timings = outcomes.Stages(stages)
    timings.record("precompute", time.time() - dispatched_at)
    written = sum(result["users"] for result in chunk_results)
    if written != run.num_users:
        raise outcomes.RunAborted(f"chunks wrote {written} of {run.num_users} user lists of {run.version}")
    lock = cache.adopt_training_lock(limits.lock_ttl(settings), lock_token)
    with timings.time("publish"):
        previous = pipeline.publish(settings, cache, lock, run)
    release_lock(lock)
    chunks = {"count": len(chunk_results), "workers": sorted({result["worker"] for result in chunk_results})}
    return _finish(outcomes.published_outcome(run, timings, previous, chunks=chunks, variants=trained or {}))


@app.task(name="tasks.abandon_run")
def abandon_run(request, exc, traceback, lock_token: str) -> None:
    """Errback of a chunked run: a chunk or the publish failed for good, so free the lock and say why.

    Celery calls it in the worker that saw the failure, with the failed task's request and exception. The
    staged version is left to expire; the current model stays.
    """
    release_lock(recs_cache().adopt_training_lock(limits.lock_ttl(settings), lock_token))
    _finish(outcomes.outcome("failed", f"chunked run {lock_token} failed: {_failure_reason(exc)}"))


@app.task(name="tasks.ensure_published", ignore_result=True, resultrepr_maxsize=OUTCOME_REPR_MAXSIZE)
def ensure_published(verify: bool = False) -> dict[str, Any] | None:
    """Publish the current artifact again if Redis lost it (:func:`tasks.publication.ensure_published`).

    Beat sends it every few seconds, without keeping its result; ``tasks.bootstrap`` asks for the result.
    Redis being unreachable is only logged: the next check comes soon.
    """
    try:
        return publication.ensure_published(settings, recs_cache(), verify=verify)
    except RETRY_ON as exc:
        log.warning("cannot check the published model now: %s", exc)
        return None


# The tasks beat sends every 10 s, and how a run that found nothing to do starts its result's repr.
QUIET_WHEN_IDLE = {
    "tasks.ensure_published": "{'status': 'ok'",
    "tasks.move_impressions": "{'status': 'moved', 'pages': 0,",
}


class QuietChecks(logging.Filter):
    """Drops the INFO lines of ``tasks.ensure_published`` checks that found all well, and of
    ``tasks.move_impressions`` runs that found no page to move.

    Beat sends each every 10 s: Celery's "Sending due task", "received" and "succeeded" lines would fill the
    logs (36 lines a minute under ``make run``) with nothing to say. A run that acts logs what it did, and
    its "succeeded" line (the ``republished`` outcome, the pages moved) and any failure stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "celery.beat":  # "Scheduler: Sending due task %s (%s)", entry name, task name
            return not (isinstance(args, tuple) and bool(args) and args[-1] in QUIET_WHEN_IDLE)
        if isinstance(args, dict) and args.get("name") in QUIET_WHEN_IDLE:
            if record.name == "celery.worker.strategy":  # "received"
                return False
            return not str(args.get("return_value", "")).startswith(QUIET_WHEN_IDLE[args["name"]])
        return True


@signals.after_setup_logger.connect
def _quiet_checks(**_: Any) -> None:
    # The loggers of beat's sends, the worker's "received" and the tracer's "succeeded" lines.
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).addFilter(QuietChecks())
