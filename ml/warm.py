"""Warm starts: a LightFM fit continued from the served version's per-feature parameters (issue 14).

A full fit learns every feature's embedding from scratch over all interactions; at 20M interactions that is
minutes per epoch. A warm start instead carries over what the served version learned and fits only the
interactions that arrived since:

- :func:`save_state` writes, next to the version's artifact, ``<version>.warm.npz``: LightFM's per-feature
  parameters (``user_embeddings``, ``item_embeddings``, their biases, and the learning schedule's
  accumulators: adagrad's summed squared gradients, adadelta's running averages), the name of each feature
  column, the hyperparameters, the time of the newest interaction learned from, when the last full fit ran
  and the first warm start's progressive figure after it (the reference the drift gate compares with), and
  that full fit's holdout figures (reported next to each warm start's).
- :func:`grown_estimator` builds an estimator for the current data's features: a column whose name the state
  knows (``user:<id>``, ``post:<id>``, ``tag:<t>``, ...) gets its parameters, wherever its new index is; a new
  user, post or tag gets LightFM's own initialisation (its ``_initialize``, so the accumulators start as a
  fresh fit's).
- :func:`progressive_metrics` is the warm start's quality gate, without a second fit: the grown model, before
  it sees them, ranks for each user the posts it interacted with after the state's newest interaction
  (progressive validation), against the popularity baseline on the same pairs; then :func:`warm_fit` fits
  exactly those interactions (``fit_partial``).

No pickle: the state is plain arrays (``allow_pickle=False``), names as NUL-joined UTF-8.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightfm import LightFM

import ml.artifact
from ml import sets
from ml.dataset import Dataset
from ml.errors import TrainingError
from ml.evaluate import _popular_rankings, ranking_metrics
from ml.features import Features, build_features
from ml.model import RecModel
from ml.settings import TrainingSettings
from ml.training import fit, interaction_weights, new_estimator, to_rec_model

logger = logging.getLogger(__name__)

STATE_SUFFIX = ".warm.npz"
# LightFM's per-feature parameters, each for the user and the item side.
PARAMETERS = (
    "embeddings",
    "embedding_gradients",
    "embedding_momentum",
    "biases",
    "bias_gradients",
    "bias_momentum",
)
# Users ranked by the progressive evaluation: enough for a stable precision@10, bounded at a million users.
EVALUATION_USERS = 20_000
_SEPARATOR = "\0"


@dataclass(frozen=True, eq=False)
class WarmState:
    """What a warm start continues from (see the module docstring)."""

    user_feature_names: list[str]
    item_feature_names: list[str]
    arrays: dict[str, np.ndarray]  # "user_embeddings", "item_bias_gradients", ... (PARAMETERS per side)
    params: dict  # the TrainingSettings it was fitted with (asdict)
    trained_until: float  # unix time of the newest interaction it learned from
    full_fit_at: float  # unix time of the full fit it descends from
    reference: float | None = None  # progressive precision@10 of the first warm start after that full fit
    full_metrics: dict | None = None  # that full fit's holdout figures, reported next to each warm start's


def state_of(
    estimator: LightFM,
    features: Features,
    params: TrainingSettings,
    trained_until: float,
    full_fit_at: float,
    reference: float | None = None,
    full_metrics: dict | None = None,
) -> WarmState:
    """The warm state of a fitted estimator over ``features``."""
    arrays = {
        f"{side}_{name}": getattr(estimator, f"{side}_{name}") for side in ("user", "item") for name in PARAMETERS
    }
    return WarmState(
        list(features.user_feature_names),
        list(features.item_feature_names),
        arrays,
        dataclasses.asdict(params),
        float(trained_until),
        float(full_fit_at),
        reference,
        full_metrics,
    )


def save_state(model_dir: str | os.PathLike, version: str, state: WarmState, keep: tuple[str, ...] = ()) -> Path:
    """Write ``<version>.warm.npz`` atomically; remove the states of versions other than ``version`` and ``keep``."""
    meta = {
        "params": state.params,
        "trained_until": state.trained_until,
        "full_fit_at": state.full_fit_at,
        "reference": state.reference,
        "full_metrics": state.full_metrics,
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        "user_feature_names": pack_names(state.user_feature_names),
        "item_feature_names": pack_names(state.item_feature_names),
        **state.arrays,
    }
    return ml.artifact.save_beside(model_dir, version, STATE_SUFFIX, arrays, keep)


def load_state(model_dir: str | os.PathLike, version: str | None) -> WarmState | None:
    """The warm state saved with ``version``, or None when there is none (or it cannot be read)."""
    if version is None:
        return None
    path = Path(model_dir) / f"{version}{STATE_SUFFIX}"
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            arrays = {f"{side}_{name}": data[f"{side}_{name}"] for side in ("user", "item") for name in PARAMETERS}
            return WarmState(
                unpack_names(data["user_feature_names"]),
                unpack_names(data["item_feature_names"]),
                arrays,
                meta["params"],
                float(meta["trained_until"]),
                float(meta["full_fit_at"]),
                meta.get("reference"),
                meta.get("full_metrics"),
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("warm state %s unreadable (%s): the next fit is a full one", path, exc)
        return None


def grown_estimator(state: WarmState, features: Features, params: TrainingSettings) -> LightFM:
    """A LightFM estimator over ``features`` carrying the state's parameters for every feature it knows."""
    estimator = new_estimator(params)
    estimator._initialize(params.components, len(features.item_feature_names), len(features.user_feature_names))
    for side, names, old_names in (
        ("user", features.user_feature_names, state.user_feature_names),
        ("item", features.item_feature_names, state.item_feature_names),
    ):
        new_rows, old_rows = _matching_rows(names, old_names)
        for name in PARAMETERS:
            getattr(estimator, f"{side}_{name}")[new_rows] = state.arrays[f"{side}_{name}"][old_rows]
    return estimator


def compatible(state: WarmState, params: TrainingSettings) -> str | None:
    """Why ``state`` cannot be continued with ``params`` (a changed hyperparameter), or None."""
    now = dataclasses.asdict(params)
    changed = sorted(key for key in now if key not in ("num_threads", "epochs") and state.params.get(key) != now[key])
    return f"hyperparameters changed ({', '.join(changed)})" if changed else None


def split_at(dataset: Dataset, until: float) -> tuple[Dataset, np.ndarray]:
    """``dataset`` with only the interactions up to ``until`` (the learned part), and the mask of the newer ones."""
    newer = dataset.inter_time > until
    learned = dataclasses.replace(
        dataset,
        inter_user=dataset.inter_user[~newer],
        inter_item=dataset.inter_item[~newer],
        inter_type=dataset.inter_type[~newer],
        inter_time=dataset.inter_time[~newer],
    )
    return learned, newer


def only(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """``dataset`` with only the interactions of ``mask``."""
    return dataclasses.replace(
        dataset,
        inter_user=dataset.inter_user[mask],
        inter_item=dataset.inter_item[mask],
        inter_type=dataset.inter_type[mask],
        inter_time=dataset.inter_time[mask],
    )


def progressive_metrics(model, learned: Dataset, newer: Dataset, k: int = 10, seed: int = 0) -> dict | None:
    """Holdout figures of ``model`` (a RecModel of the grown estimator, its exclusions from ``learned``) on the
    (user, post) pairs first seen in ``newer``, for posts someone interacted with in ``learned``.

    Returns the dict of :func:`ml.evaluate.evaluate` (``protocol: "progressive"``), or None when no such pair
    exists. At most :data:`EVALUATION_USERS` users (a seeded sample) are ranked.
    """
    started = time.perf_counter()
    num_items = learned.num_items
    known = sets.unique(learned.inter_user.astype(np.int64) * num_items + learned.inter_item)
    keys = sets.unique(newer.inter_user.astype(np.int64) * num_items + newer.inter_item)
    seen_items = np.bincount(learned.inter_item, minlength=num_items) > 0
    keys = keys[~sets.in_sorted(keys, known) & seen_items[keys % num_items]]
    if len(keys) == 0:
        return None
    test_user, test_item = (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)
    users = sets.unique(test_user)
    if len(users) > EVALUATION_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, EVALUATION_USERS, replace=False))
        sampled = sets.in_sorted(test_user, users)
        test_user, test_item = test_user[sampled], test_item[sampled]
    model_ranked, _ = model.top_k(users, k)
    popular_ranked = _popular_rankings(model, users, k)
    args = (users, test_user, test_item, num_items, k)
    return {
        "protocol": "progressive",
        "k": k,
        "users": int(len(users)),
        "test_pairs": int(len(test_user)),
        "train_pairs": int(len(known)),
        "seconds": round(time.perf_counter() - started, 3),
        "model": ranking_metrics(model_ranked, *args),
        "popularity": ranking_metrics(popular_ranked, *args),
    }


@dataclass(frozen=True, eq=False)
class Prepared:
    """A grown estimator over the current data's features, and its progressive holdout figures."""

    estimator: LightFM
    features: Features
    newer: np.ndarray  # mask of the interactions after the state's newest one
    metrics: dict | None  # progressive_metrics; None when no new pair can be evaluated


def prepare(dataset: Dataset, state: WarmState, params: TrainingSettings) -> Prepared:
    """Grow the state's estimator to ``dataset``'s features and measure it on the interactions it has not seen."""
    features = build_features(dataset)
    estimator = grown_estimator(state, features, params)
    learned, newer = split_at(dataset, state.trained_until)
    metrics = None
    if newer.any() and learned.num_interactions:
        metrics = progressive_metrics(to_rec_model(learned, features, estimator), learned, only(dataset, newer))
    return Prepared(estimator, features, newer, metrics)


def warm_fit(dataset: Dataset, prepared: Prepared, params: TrainingSettings) -> RecModel:
    """Fit the prepared estimator on the new interactions (``fit_partial``, ``params.epochs`` epochs) and return
    the model of the whole of ``dataset`` (exclusions and popularity from every interaction)."""
    weights = interaction_weights(only(dataset, prepared.newer), params)
    if weights.nnz == 0:
        raise TrainingError("a warm start needs new interactions with a positive weight")
    fit(weights, prepared.features, params, estimator=prepared.estimator)
    return to_rec_model(dataset, prepared.features, prepared.estimator)


def _matching_rows(names: list[str], old_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``names`` and into ``old_names`` of the names both have."""
    old_index = {name: i for i, name in enumerate(old_names)}
    pairs = [(i, old_index[name]) for i, name in enumerate(names) if name in old_index]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    new_rows, old_rows = zip(*pairs, strict=True)
    return np.asarray(new_rows, dtype=np.int64), np.asarray(old_rows, dtype=np.int64)


def pack_names(values: list[str]) -> np.ndarray:
    """Names (ids, feature names) as one array of NUL-joined UTF-8, for ``np.savez`` without pickle."""
    return np.frombuffer(_SEPARATOR.join(values).encode("utf-8"), dtype=np.uint8)


def unpack_names(blob: np.ndarray) -> list[str]:
    """The names :func:`pack_names` packed."""
    return blob.tobytes().decode("utf-8").split(_SEPARATOR) if len(blob) else []
