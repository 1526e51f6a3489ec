"""The service's own paths, driven the way the tests and benchmarks need: publish a given model, run the
training pipeline once in-process, send ``tasks.train`` by name, read the next announced update, write demo
data, find its most active users and their tastes. Each calls the service's code rather than copying it, so
the tests exercise what production runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from celery import Celery

import ml.artifact
from common.config import Settings, load_settings
from common.recs_cache import RecsCache, release_lock, unpack_list
from ml.model import RecModel
from tasks import limits, pipeline
from tasks.outcomes import Candidate, Stages
from testing.processes import REPO

# Small enough that a run takes a second or two on a busy 2-core machine, big enough to beat popularity.
DEMO_USERS, DEMO_POSTS, DEMO_INTERACTIONS = 150, 240, 4000


def settings_from(env: dict[str, str]) -> Settings:
    """The settings the service's processes read from ``env``."""
    return load_settings(env, dotenv=False)


def write_demo(out_dir: Path, users: int, posts: int, interactions: int, seed: int = 7) -> Path:
    """Write a demo dataset directory with ``python -m ml.demo`` (the command users run)."""
    subprocess.run(
        [sys.executable, "-m", "ml.demo", "--out", str(out_dir), "--users", str(users), "--posts", str(posts),
         "--interactions", str(interactions), "--seed", str(seed)],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out_dir


def most_active_users(conn, count: int) -> list[str]:
    """The ``count`` users with the most interactions in PostgreSQL (``conn``), most first, ties by id."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT user_id FROM interactions GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT %s", (count,)
        )
        return [row[0] for row in cur.fetchall()]


def favourite_taste(conn, user_id: str) -> tuple[str, list[str]]:
    """The community ``user_id`` interacts with most, and its two favourite tags there."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT p.community_id, p.tags FROM interactions i JOIN posts p ON p.id = i.post_id WHERE i.user_id = %s",
            (user_id,),
        )
        rows = cur.fetchall()
    community = Counter(c for c, _ in rows).most_common(1)[0][0]
    tags = Counter(t for c, tags in rows if c == community for t in tags)
    return community, [t for t, _ in tags.most_common(2)]


def publish(
    cache: RecsCache,
    model_dir: Path | str,
    model: RecModel,
    top_k: int = 100,
    retain_seconds: int = 1800,
    skip_users: tuple[str, ...] = (),
    before_publish: Callable[[str], None] | None = None,
    metadata: dict | None = None,
    precompute_niceness: int = Settings.precompute_niceness,
    publish_write_rate: int = Settings.publish_write_rate,
) -> str:
    """Publish an already-fitted ``model`` through the training pipeline's own stages; return its version.

    Saves the artifact, stages the version, writes every user's list (at ``precompute_niceness``, as
    ``PRECOMPUTE_NICENESS``, paced at ``publish_write_rate`` users a second, as ``PUBLISH_WRITE_RATE``), then
    flips the Redis pointer and the on-disk one (:func:`tasks.pipeline.publish`, under the training lock).
    ``skip_users`` are left without a list (as if a write had been lost); ``before_publish`` is called with the
    version once its artifact is saved (e.g. to damage it); ``metadata`` is added to the artifact's (e.g. the
    model family).
    """
    settings = Settings(
        model_dir=str(model_dir),
        top_k=top_k,
        recs_retain_seconds=retain_seconds,
        precompute_niceness=precompute_niceness,
        publish_write_rate=publish_write_rate,
    )
    version = ml.artifact.save(model, model_dir, {"metrics": {"ndcg@10": 0.25}, **(metadata or {})}, make_current=False)
    created_at = ml.artifact.read_metadata(model_dir, version)["created_at"]
    if before_publish is not None:
        before_publish(version)
    candidate = Candidate(version, created_at, model.num_users, model.num_items, 0, {"ndcg@10": 0.25})
    pipeline.stage_version(settings, cache, candidate, model)
    for start, stop in _runs_without(model, skip_users):
        pipeline.precompute_users(settings, cache, version, model, start, stop)
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire(blocking=True, blocking_timeout=30), "the training lock stayed taken for 30 s"
    try:
        pipeline.publish(settings, cache, lock, candidate)
    finally:
        release_lock(lock)
    return version


def _runs_without(model: RecModel, users: tuple[str, ...]) -> Iterator[tuple[int, int]]:
    """The ranges ``[start, stop)`` of user indices that leave out ``users``."""
    start = 0
    for skipped in sorted(index for index in map(model.user_index, users) if index is not None):
        if start < skipped:
            yield start, skipped
        start = skipped + 1
    if start < model.num_users:
        yield start, model.num_users


def publish_once(settings: Settings, cache: RecsCache):
    """One whole forced in-process training run with the lock held, as the train task does for a single chunk.

    Returns the candidate, its model, the previously current version and the stages' durations.
    """
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    try:
        stages = Stages()
        candidate, model = pipeline.build_candidate(settings, cache, stages, force=True)
        previous = pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    finally:
        release_lock(lock)
    return candidate, model, previous, stages


def run_train(celery_client: Celery, timeout: float = 90.0, force: bool = True) -> dict:
    """Send ``tasks.train`` by name, as beat and the CLI do, and wait for its result.

    Forced by default: most tests retrain on the data of the version already published, which an unforced
    run answers with ``unchanged``.
    """
    return celery_client.send_task("tasks.train", kwargs={"force": force}).get(timeout=timeout)


def next_update(cache: RecsCache, pubsub, timeout: float = 10.0) -> dict:
    """The next well-formed update message on the model-updates channel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = cache.parse_update(pubsub.get_message(timeout=0.2))
        if update:
            return update
    raise AssertionError(f"no model update announced within {timeout:.0f} s")


def listed(cache: RecsCache, version: str, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The user's list in ``version`` as the pipeline wrote it, or None (the web reads it in ``user_reads``)."""
    blob = cache.client.hget(cache.recs_key(version, user_id), user_id)
    return unpack_list(blob) if blob is not None else None


def popular_listed(cache: RecsCache, version: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The popularity list staged with ``version``, or None if the version is gone."""
    blob = cache.client.hget(cache.meta_key(version), "popular")
    return unpack_list(blob) if blob is not None else None


def version_items(cache: RecsCache, version: str) -> list[tuple[str, tuple[str, ...], str]] | None:
    """(post id, tags, community) of every item index staged with ``version``, or None if it is gone."""
    blob = cache.client.hget(cache.meta_key(version), "items")
    return None if blob is None else [(post, tuple(tags), community) for post, tags, community in json.loads(blob)]
