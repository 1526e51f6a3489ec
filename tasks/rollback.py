"""Serve an earlier model version again: ``python -m tasks.rollback VERSION``, or ``--list`` the versions kept.

A rollback re-publishes a version kept in ``MODEL_DIR`` (the current one and ``MODEL_BACKUPS`` before it)
exactly as a training run publishes a new one (:func:`tasks.publication.republish`): it verifies the
artifact, writes every user's list into Redis again (the version's old lists have usually expired), flips the
pointer and announces the version on the channel, so every web worker loads it within seconds; then it points
``MODEL_DIR/CURRENT`` at it and records a ``rolled_back`` outcome for ``/admin/model-status``. It holds the
training lock meanwhile, so it never interleaves with a training run.

Beat keeps training every ``TRAIN_INTERVAL_SECONDS``, and the quality gate then compares new models with the
rolled-back version's metrics: stop beat first if the next run must not replace it. Neither Celery nor its app
is involved: this is a plain command on :mod:`tasks.publication`.
"""

from __future__ import annotations

import argparse
import sys

import ml.artifact
from common.config import Settings, load_settings
from common.recs_cache import RecsCache, release_lock, served_version
from common.redis_clients import worker_client
from ml.errors import ArtifactError
from tasks import limits, publication
from tasks.gate import GATE_METRIC


def list_versions(settings: Settings, cache: RecsCache) -> int:
    """Print the versions kept in MODEL_DIR, newest first, marking the current one."""
    current = served_version(cache.current_version(), settings.model_dir)
    print(f"{'version':<27} {'created_at':<22} {'users':>8} {'posts':>8} {'P@10':>7}")
    for version in reversed(ml.artifact.list_versions(settings.model_dir)):
        try:
            metadata = ml.artifact.read_metadata(settings.model_dir, version)
        except ArtifactError as exc:
            print(f"{version:<27} unreadable: {exc}")
            continue
        precision = ((metadata.get("metrics") or {}).get("model") or {}).get(GATE_METRIC)
        shown = f"{precision:.4f}" if isinstance(precision, float) else "-"
        mark = "  (current)" if version == current else ""
        print(
            f"{version:<27} {metadata['created_at']:<22} {metadata['num_users']:>8} {metadata['num_items']:>8} "
            f"{shown:>7}{mark}"
        )
    return 0


def roll_back(settings: Settings, cache: RecsCache, version: str) -> int:
    """Publish ``version`` from MODEL_DIR again; 0 on success, 1 if it cannot be done now (reason printed)."""
    if version not in ml.artifact.list_versions(settings.model_dir):
        print(f"error: version {version!r} is not kept in {settings.model_dir} (see --list)", file=sys.stderr)
        return 1
    if cache.current_version() == version:
        print(f"version {version} is already the current one")
        return 0
    lock = cache.training_lock(limits.lock_ttl(settings))
    if not lock.acquire():
        print("error: a training run holds the training lock; try again when it ends", file=sys.stderr)
        return 1
    try:
        previous = cache.current_version()
        undone = f" from {previous}" if previous else ""
        reason = f"rolled back{undone} by hand (python -m tasks.rollback)"
        try:
            publication.republish(settings, cache, lock, version, publication.ROLLED_BACK, reason)
        except ArtifactError as exc:
            print(f"error: version {version} cannot be served: {exc}", file=sys.stderr)
            return 1
    finally:
        release_lock(lock)
    print(f"version {version} is current again (was {previous}); the web workers load it within seconds")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve an earlier model version again.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("version", nargs="?", help="a version kept in MODEL_DIR")
    group.add_argument("--list", action="store_true", help="list the versions kept in MODEL_DIR")
    args = parser.parse_args(argv)
    settings = load_settings()
    cache = RecsCache(worker_client(settings.redis_url), settings.redis_prefix)
    return list_versions(settings, cache) if args.list else roll_back(settings, cache, args.version)


if __name__ == "__main__":
    sys.exit(main())
