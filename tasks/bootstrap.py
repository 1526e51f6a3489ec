"""Make sure a model is served before the first request: publish the current artifact again, or train one.

``python -m tasks.bootstrap [--force] [--through-worker]`` runs before the service takes traffic. If Redis's
pointer names a version that loads from this ``MODEL_DIR``, it does nothing. Otherwise (Redis is empty, or
its pointer was left by another checkout, by a ``make clean`` or by a dropped Docker volume) it publishes
``MODEL_DIR``'s current artifact again when that loads (:mod:`tasks.publication`: same version id, no
training), and trains a first model when it does not. ``--force`` trains in any case.

Two ways to run it:

- in this process (the default; ``docker/init.sh``): the check and ``tasks.train`` run here (``Task.apply``),
  with the same lock, stages, quality gate and publish, needing neither a broker nor a worker;
- ``--through-worker`` (the Procfile's beat line, before beat starts): it waits for a worker to answer, sends
  ``tasks.ensure_published`` and, if needed, ``tasks.train`` through the broker and waits for their results,
  so the first training run shows in Flower like every later one. Flower sees only the events sent while it
  listens: ``--wait-for-flower`` first waits (a while, not for ever) for Flower, started alongside, to answer.

Exit status 0 when a model is published (now or before), 1 when none could be (the outcome, with its reason,
is printed), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from celery import Task

from tasks import limits, outcomes, publication
from tasks.celery import app, settings
from tasks.training import ensure_published, recs_cache, train

# How long --through-worker waits for a worker to answer a ping (the worker starts alongside, under honcho).
WORKER_WAIT_SECONDS = 120
# How long --wait-for-flower waits for Flower before going on without it (Flower only watches).
FLOWER_WAIT_SECONDS = 30
# Between two tries while a training run holds the lock.
LOCK_POLL_SECONDS = 2

Runner = Callable[[Task, dict[str, Any]], Any]


def run_here(task: Task, kwargs: dict[str, Any]) -> Any:
    """Run ``task`` in this process; its result, or the exception it ended with."""
    if task is ensure_published:
        # The plain function, so that an unreachable Redis is an error here rather than a logged warning.
        return publication.ensure_published(settings, recs_cache(), **kwargs)
    return task.apply(kwargs=kwargs).get(propagate=False)


def run_on_worker(task: Task, kwargs: dict[str, Any]) -> Any:
    """Send ``task`` through the broker and wait for its result (or the exception it ended with)."""
    result = task.apply_async(kwargs=kwargs, ignore_result=False)
    return result.get(timeout=limits.lock_ttl(settings), propagate=False)


def wait_for_worker(timeout: float) -> bool:
    """Whether a worker answered a ping within ``timeout`` seconds."""
    print(f"waiting for a Celery worker to answer (up to {timeout:.0f} s)", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=1.0):
            return True
    return False


def wait_for_flower(timeout: float) -> bool:
    """Whether Flower (``FLOWER_ADDRESS``:``FLOWER_PORT``) answered its health check within ``timeout`` seconds."""
    host = "127.0.0.1" if settings.flower_address in ("0.0.0.0", "::") else settings.flower_address
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.flower_port}/healthcheck"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    print(f"note: Flower did not answer at {url} within {timeout:.0f} s; its task list may miss this run")
    return False


def train_once(run: Runner) -> tuple[int | None, str]:
    """Run ``tasks.train``, forced (no model is served, or ``--force``); exit status, or None to try again."""
    outcome = run(train, {"force": True})
    if isinstance(outcome, outcomes.RunRejected):
        outcome = recs_cache().last_training_outcome() or {"status": "rejected", "reason": str(outcome)}
    elif isinstance(outcome, BaseException):
        return 1, f"error: the training run failed: {type(outcome).__name__}: {outcome}"
    if outcome["status"] == "skipped":
        return None, ""
    return (0 if outcome["status"] == "published" else 1), json.dumps(outcome, indent=2)


def check_once(run: Runner) -> tuple[int | None, str]:
    """Publish the current artifact again if needed, or train if MODEL_DIR cannot serve; None to try again."""
    check = run(ensure_published, {"verify": True})
    if isinstance(check, BaseException) or check is None:
        return 1, f"error: cannot check the published model: {check!r}"
    if check["status"] == "ok":
        return 0, f"model {check['version']} is already published and loads from MODEL_DIR; nothing to do"
    if check["status"] == "republished":
        return 0, json.dumps(check, indent=2)
    if check["status"] == "skipped":
        return None, ""
    print(f"{check['reason']}: training a model", flush=True)
    return train_once(run)


def bootstrap(run: Runner, force: bool) -> int:
    """Publish or train until a model is served; exit status as the module says."""
    deadline = time.monotonic() + limits.lock_ttl(settings)
    waiting = False
    while True:
        status, message = train_once(run) if force else check_once(run)
        if status is not None:
            print(message, file=sys.stderr if status else sys.stdout)
            return status
        if time.monotonic() > deadline:
            print("error: a training run held the training lock for too long", file=sys.stderr)
            return 1
        if not waiting:
            print("a training run holds the training lock: waiting for it to end", flush=True)
            waiting = True
        time.sleep(LOCK_POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish the current model again, or train one, unless one is served.")
    parser.add_argument("--force", action="store_true", help="train even if a published model exists")
    parser.add_argument(
        "--through-worker",
        action="store_true",
        help="run the tasks on a Celery worker (waiting for one to answer), so Flower shows them",
    )
    parser.add_argument(
        "--wait-for-flower",
        action="store_true",
        help=f"with --through-worker: first wait up to {FLOWER_WAIT_SECONDS} s for Flower to answer",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.through_worker:
            if not wait_for_worker(WORKER_WAIT_SECONDS):
                print(f"error: no Celery worker answered within {WORKER_WAIT_SECONDS} s", file=sys.stderr)
                return 1
            if args.wait_for_flower:
                wait_for_flower(FLOWER_WAIT_SECONDS)
            return bootstrap(run_on_worker, args.force)
        return bootstrap(run_here, args.force)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
