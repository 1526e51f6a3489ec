"""Publishing model versions the way the training task does (artifact on disk, lists in Redis, flip).

Shared by the web app's unit tests and the end-to-end tests that run gunicorn.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.recs_cache import RecsCache
from ml import artifact
from ml.model import RecModel

STAGING_TTL = 600
# Pub/sub channels are server-wide (not per database): a prefix of this run's own keeps other test runs'
# model updates off the channel the web workers under test listen to.
REDIS_PREFIX = f"recsvc-test-app-{os.getpid()}:"


def publish(
    cache: RecsCache,
    model_dir: Path | str,
    model: RecModel,
    top_k: int = 100,
    retain_seconds: int = 1800,
    skip_users: tuple[str, ...] = (),
    before_publish: Callable[[str], None] | None = None,
) -> str:
    """Save ``model`` as a new version, write its lists to Redis, publish it and point CURRENT at it.

    ``skip_users`` are left without a cached list (as if a write had been lost); ``before_publish`` is
    called with the version once its artifact is saved (e.g. to damage it).
    """
    version = artifact.save(model, model_dir, {"metrics": {"ndcg@10": 0.25}}, make_current=False)
    if before_publish is not None:
        before_publish(version)
    items = list(zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True))
    meta = {"created_at": f"{version[:4]}-{version[4:6]}-{version[6:8]}", "num_users": model.num_users}
    meta["num_items"] = model.num_items
    cache.stage_version(version, items, model.popular_items, model.popular_scores, meta, STAGING_TTL)
    users = [u for u in range(model.num_users) if model.user_ids[u] not in skip_users]
    ranked, scores = model.top_k(np.array(users, dtype=np.int64), top_k)
    cache.write_user_lists(version, [model.user_ids[u] for u in users], ranked, scores, STAGING_TTL)
    cache.publish_version(version, {"version": version, **meta}, retain_seconds)
    artifact.set_current(model_dir, version)
    return version


def with_features(model: RecModel, fan: str) -> RecModel:
    """``model`` with feature embeddings: posts of community "hot" fit user ``fan`` best, "cold" ones worst.

    A user with role "student" or following "hot" gets a representation too (the features strategy).
    """
    dim = model.item_embeddings.shape[1]
    hot = model.user_embeddings[model.user_index(fan)] * 20
    return replace(
        model,
        item_feature_names=["community:hot", "community:cold", "tag:x"],
        item_feature_embeddings=np.stack([hot, -hot, np.zeros(dim)]).astype(np.float32),
        item_feature_biases=np.zeros(3, dtype=np.float32),
        user_feature_names=["role:student", "follows:hot"],
        user_feature_embeddings=np.stack([np.ones(dim), hot / 20]).astype(np.float32),
        user_feature_biases=np.array([0.5, 0.25], dtype=np.float32),
    )
