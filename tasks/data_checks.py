"""What a training run checks and records about its data before it trains: the fingerprint that finds unchanged
data, the users the API cannot serve, and the time span the model covers.

Whether a dataset can be learnt from at all is :func:`ml.training.check_trainable`'s to say.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np

import ml.artifact
import ml.model_config
from common.config import Settings
from common.recs_cache import RecsCache
from ml.dataset import Dataset
from ml.errors import ArtifactError
from ml.ids import is_requestable_user_id

log = logging.getLogger(__name__)


def data_fingerprint(dataset: Dataset) -> str:
    """A sha256 (hex) of everything a training run learns from: equal prints mean the same model input.

    It covers every field of the :class:`Dataset` the five queries produce: users (id, role), communities
    (id, name), follows, posts (id, community, author, tags, created_at) and interactions (user, post, type,
    created_at; repeats count). Users, communities and posts are hashed in the reader's order (by id, so
    their indices are canonical too); follows and interactions are sorted first, so a query returning its
    rows in another order prints the same. Columns the dataset drops (users' and follows' created_at) are
    not covered: a change to them alone changes no model. One pass over the arrays already in memory.
    """
    digest = hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        digest.update(f"{name}:{len(data)}:".encode())
        digest.update(data)

    def add_strings(name: str, values: Any) -> None:
        add(name, json.dumps(values, ensure_ascii=False).encode("utf-8"))

    def add_array(name: str, values: np.ndarray, dtype: str) -> None:
        add(name, np.ascontiguousarray(values, dtype=dtype).tobytes())

    add_strings("user_ids", dataset.user_ids)
    add_strings("user_roles", dataset.user_roles)
    add_strings("community_ids", dataset.community_ids)
    add_strings("community_names", dataset.community_names)
    follows = np.lexsort((dataset.follow_community, dataset.follow_user))
    add_array("follow_user", dataset.follow_user[follows], "<i4")
    add_array("follow_community", dataset.follow_community[follows], "<i4")
    add_strings("item_ids", dataset.item_ids)
    add_array("item_community", dataset.item_community, "<i4")
    add_array("item_author", dataset.item_author, "<i4")
    add_strings("item_tags", dataset.item_tags)
    add_array("item_time", dataset.item_time, "<i8")
    interactions = np.lexsort((dataset.inter_time, dataset.inter_type, dataset.inter_item, dataset.inter_user))
    add_array("inter_user", dataset.inter_user[interactions], "<i4")
    add_array("inter_item", dataset.inter_item[interactions], "<i4")
    add_array("inter_type", dataset.inter_type[interactions], "<i1")
    add_array("inter_time", dataset.inter_time[interactions], "<i8")
    return digest.hexdigest()


def unchanged_version(settings: Settings, cache: RecsCache, fingerprint: str) -> str | None:
    """The served version if it was trained on data printing ``fingerprint`` with the configuration in force
    (:func:`ml.model_config.effective_config`: family and parameters), else None.

    Only a version Redis serves counts: if Redis lost its pointer (or MODEL_DIR lost the version's files), a
    run publishes again rather than leave the cache empty. A version whose metadata records no fingerprint
    (one trained before fingerprints existed) counts as changed.
    """
    version = cache.current_version()
    if version is None or not cache.is_published(version):
        return None
    config = ml.model_config.effective_config(settings.training, settings.model_dir, settings.pinned_training)
    return version if trained_alike(settings.model_dir, version, fingerprint, config) else None


def trained_alike(model_dir: str, version: str, fingerprint: str, config: ml.model_config.ModelConfig) -> bool:
    """Whether ``version`` of ``model_dir`` was trained on data printing ``fingerprint`` with ``config``."""
    if version not in ml.artifact.list_versions(model_dir):
        return False
    try:
        metadata = ml.artifact.read_metadata(model_dir, version)
    except ArtifactError as exc:
        log.warning("cannot read the served version %s (%s); training as if the data changed", version, exc)
        return False
    expected = json.loads(json.dumps(config.to_json()))
    # A version from before the model search records only its params: it was the environment's LightFM.
    recorded = metadata.get("model") or {
        "family": "lightfm",
        "training": metadata.get("params"),
        "als": None,
        "blend_weight": None,
    }
    return metadata.get("data_fingerprint") == fingerprint and recorded == expected


def warn_of_unrequestable_users(dataset: Dataset) -> int:
    """Log users whose id the API cannot take in its path (``ml.ids``); returns how many there are.

    They are trained on like everyone else (their interactions still teach the model about posts), but
    their lists can never be asked for, so the operator should hear of it rather than wonder.
    """
    unrequestable = [user_id for user_id in dataset.user_ids if not is_requestable_user_id(user_id)]
    if unrequestable:
        log.warning(
            "%d of %d user ids cannot be requested over the API (they hold '/', control characters, line "
            "separators or bidi controls), so their feeds are never served; e.g. %s",
            len(unrequestable),
            dataset.num_users,
            ", ".join(repr(user_id) for user_id in unrequestable[:3]),
        )
    return len(unrequestable)


def data_window(dataset: Dataset) -> dict[str, str | None]:
    """The time span of the interactions the model learnt from (ISO 8601, UTC)."""
    if dataset.num_interactions == 0:
        return {"first_interaction": None, "last_interaction": None}
    return {
        "first_interaction": _iso(int(dataset.inter_time.min())),
        "last_interaction": _iso(int(dataset.inter_time.max())),
    }


def data_snapshot(dataset: Dataset) -> dict[str, str | None]:
    """Where the model's data end: the newest ``created_at`` of the posts and interactions it read (ISO 8601).

    ``tasks.refresh`` starts its watermarks there when this version is published, so what was written after
    the read reaches the live feed (rows up to it are known to the model and skipped).
    """
    return {
        "posts": _iso(int(dataset.item_time.max())) if dataset.num_items else None,
        "interactions": _iso(int(dataset.inter_time.max())) if dataset.num_interactions else None,
    }


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
