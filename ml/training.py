"""Training: interaction weights, the LightFM fit, and the :class:`~ml.model.RecModel` built from it.

Every (user, post) pair with at least one interaction is one positive example, weighted by the
strongest interaction type it has (``weight_view`` < ``weight_like`` < ``weight_comment`` by default),
optionally decayed by its age relative to the newest interaction (``half_life_days``). LightFM then fits
embeddings of the user and item features (:mod:`ml.features`), with WARP loss by default, on
``num_threads`` threads (the OpenMP build of LightFM).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from ml import sets
from ml.cpus import usable_cpus
from ml.dataset import INTERACTION_TYPES, Dataset
from ml.errors import TrainingError
from ml.features import Features, build_features
from ml.model import RecModel
from ml.settings import TrainingSettings

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0
# Scores of a sane fit stay within a few dozen. A fit that diverged without overflowing yet (WARP with a
# far too large learning rate) reaches 1e20 and more, where float32 rankings are noise or overflow.
MAX_SCORE = 1e10
# Random (user, post) pairs on which fresh_calibration fits its line: enough for a stable slope, a few ms.
CALIBRATION_PAIRS = 20_000


def interaction_weights(dataset: Dataset, params: TrainingSettings) -> sp.coo_matrix:
    """The training weight of every (user, post) pair, as a users × posts float32 COO matrix.

    Parameters
    ----------
    dataset : Dataset
    params : TrainingSettings
        ``weight_view``, ``weight_like``, ``weight_comment`` and ``half_life_days`` are used.

    Returns
    -------
    scipy.sparse.coo_matrix
        One entry per pair with a positive weight: the largest weight among the pair's interactions,
        where an interaction weighs its type's weight times ``0.5 ** (age_days / half_life_days)``
        (no decay when ``half_life_days`` is 0). Pairs whose weight is 0 are left out.

    Notes
    -----
    Repeats aggregate by maximum, not sum: a user who views a post ten times has not liked it, and a
    sum would let a few compulsive viewers dominate the fit.
    """
    type_weights = np.array([_type_weight(params, t) for t in INTERACTION_TYPES], dtype=np.float64)
    weights = type_weights[dataset.inter_type]
    if params.half_life_days > 0 and dataset.num_interactions:
        age_days = (dataset.inter_time.max() - dataset.inter_time) / SECONDS_PER_DAY
        weights = weights * np.exp2(-age_days / params.half_life_days)
    keys = dataset.inter_user.astype(np.int64) * dataset.num_items + dataset.inter_item
    pairs, first = np.unique(keys, return_inverse=True)
    best = np.zeros(len(pairs), dtype=np.float64)
    np.maximum.at(best, first, weights)
    positive = best > 0
    pairs, best = pairs[positive], best[positive]
    return sp.coo_matrix(
        (best.astype(np.float32), (pairs // dataset.num_items, pairs % dataset.num_items)),
        shape=(dataset.num_users, dataset.num_items),
    )


def train(dataset: Dataset, params: TrainingSettings, features: Features | None = None) -> RecModel:
    """Fit LightFM on ``dataset`` and return the model every later stage uses.

    Parameters
    ----------
    dataset : Dataset
    params : TrainingSettings
        Hyperparameters: ``components``, ``loss``, ``learning_rate``, ``epochs``, ``item_alpha``,
        ``user_alpha``, ``max_sampled``, the interaction weights, ``num_threads`` (0: one per usable CPU) and
        ``seed``.
    features : Features, optional
        ``build_features(dataset)``, when the caller already has it.

    Returns
    -------
    RecModel
        Representations of every user and post of ``dataset`` (including those without interactions),
        the exclusions (posts each user interacted with or authored) and the popularity ranking.

    Raises
    ------
    TrainingError
        When there is nothing to learn from (:func:`check_trainable`, or no interaction with a
        positive weight) or the fit produced NaN or infinite values.
    """
    return fitted(dataset, params, features)[0]


def fitted(
    dataset: Dataset, params: TrainingSettings, features: Features | None = None
) -> tuple[RecModel, LightFM, Features]:
    """:func:`train`, also returning the fitted estimator and the features (what :mod:`ml.warm` saves)."""
    check_trainable(dataset)
    weights = interaction_weights(dataset, params)
    if weights.nnz == 0:
        raise TrainingError(
            f"no interaction has a positive weight ({dataset.num_interactions} interactions; weights "
            f"view={params.weight_view}, like={params.weight_like}, comment={params.weight_comment})"
        )
    features = features or build_features(dataset)
    estimator = fit(weights, features, params)
    return to_rec_model(dataset, features, estimator), estimator, features


def fit(
    weights: sp.coo_matrix,
    features: Features,
    params: TrainingSettings,
    after_epoch: Callable[[int, LightFM], None] | None = None,
    estimator: LightFM | None = None,
) -> LightFM:
    """Run the LightFM fit on the weighted pairs of :func:`interaction_weights`.

    ``estimator``, when given, is continued with ``fit_partial`` (a warm start) instead of a new one fitted.

    ``after_epoch(epoch, estimator)``, when given, is called after each epoch (numbered from 1) of the same
    fit, one epoch at a time; the model search (:mod:`ml.search`) prunes hopeless trials from it.

    Raises
    ------
    TrainingError
        When the fit diverges (LightFM checks the parameters after every epoch).
    """
    threads = params.num_threads or usable_cpus()
    warm = estimator is not None
    estimator = estimator or new_estimator(params)
    positives = sp.coo_matrix((np.ones(weights.nnz, dtype=np.float32), (weights.row, weights.col)), weights.shape)
    # LightFM implements no sample weights for k-OS WARP; it learns from the positives alone.
    sample_weight = None if params.loss == "warp-kos" else weights
    started = time.perf_counter()
    try:
        # A diverging fit overflows; LightFM detects that after each epoch and raises ValueError, so
        # numpy's own overflow warnings on the way there are noise.
        with np.errstate(over="ignore", invalid="ignore"):
            data = {
                "user_features": features.user_features,
                "item_features": features.item_features,
                "sample_weight": sample_weight,
                "num_threads": threads,
            }
            if warm:
                estimator.fit_partial(positives, epochs=params.epochs, **data)
            elif after_epoch is None:
                estimator.fit(positives, epochs=params.epochs, **data)
            else:
                for epoch in range(1, params.epochs + 1):
                    estimator.fit_partial(positives, epochs=1, **data)
                    after_epoch(epoch, estimator)
    except ValueError as exc:
        raise TrainingError(f"the fit failed: {exc}") from exc
    logger.info(
        "fitted LightFM (%s%s, %d components, %d epochs, %d threads) on %d pairs in %.2f s",
        params.loss,
        ", warm start" if warm else "",
        params.components,
        params.epochs,
        threads,
        weights.nnz,
        time.perf_counter() - started,
    )
    return estimator


def new_estimator(params: TrainingSettings) -> LightFM:
    """An unfitted LightFM with the hyperparameters of ``params``."""
    return LightFM(
        no_components=params.components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(params.seed),
    )


def to_rec_model(dataset: Dataset, features: Features, estimator: LightFM) -> RecModel:
    """The :class:`RecModel` of a fitted estimator: representations, exclusions and popularity.

    Raises
    ------
    TrainingError
        When a representation is not finite, or so large that scores would overflow float32.
    """
    user_biases, user_embeddings = estimator.get_user_representations(features.user_features)
    item_biases, item_embeddings = estimator.get_item_representations(features.item_features)
    representations = {
        "user_embeddings": np.ascontiguousarray(user_embeddings, dtype=np.float32),
        "user_biases": np.ascontiguousarray(user_biases, dtype=np.float32),
        "item_embeddings": np.ascontiguousarray(item_embeddings, dtype=np.float32),
        "item_biases": np.ascontiguousarray(item_biases, dtype=np.float32),
    }
    for name, values in representations.items():
        if not np.isfinite(values).all():
            raise TrainingError(f"the fit produced non-finite {name}; lower the learning rate")
    _check_score_range(representations)
    item_side = feature_embeddings(estimator.item_embeddings, estimator.item_biases, features, "item")
    user_side = feature_embeddings(estimator.user_embeddings, estimator.user_biases, features, "user")
    calibration = fresh_calibration(
        representations, features.item_features[:, dataset.num_items :], item_side[1], item_side[2]
    )
    return RecModel(
        **dataset_fields(dataset),
        item_feature_names=item_side[0],
        item_feature_embeddings=item_side[1][item_side[3]],
        item_feature_biases=item_side[2][item_side[3]],
        user_feature_names=user_side[0],
        user_feature_embeddings=user_side[1][user_side[3]],
        user_feature_biases=user_side[2][user_side[3]],
        fresh_calibration=calibration,
        **representations,
    )


def dataset_fields(dataset: Dataset) -> dict[str, Any]:
    """The RecModel fields any model family takes from the data: ids, item metadata, exclusions, popularity."""
    exclude = exclusions(dataset)
    popular_items, popular_scores = popularity(dataset)
    return {
        "user_ids": list(dataset.user_ids),
        "item_ids": list(dataset.item_ids),
        "item_tags": list(dataset.item_tags),
        "item_community_ids": [dataset.community_ids[c] for c in dataset.item_community],
        "exclude_indptr": exclude.indptr.astype(np.int64),
        "exclude_indices": exclude.indices.astype(np.int32),
        "popular_items": popular_items,
        "popular_scores": popular_scores,
    }


def feature_embeddings(
    embeddings: np.ndarray, biases: np.ndarray, features: Features, side: str
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The non-identity features of one side (``"item"`` or ``"user"``) of a fitted estimator.

    Returns ``(names, embeddings, biases, used)``: the names of the features some training row had
    (``used``, a bool mask over the non-identity columns); embeddings and biases as float32 for every
    non-identity column. Identity features come first in :func:`ml.features.build_features`, one per
    row; features no row had kept LightFM's random initialisation and are dropped by the mask.
    """
    matrix = features.item_features if side == "item" else features.user_features
    names = features.item_feature_names if side == "item" else features.user_feature_names
    identities = matrix.shape[0]
    used = np.diff(matrix.tocsc().indptr)[identities:] > 0
    kept = [name for name, keep in zip(names[identities:], used, strict=True) if keep]
    return (
        kept,
        np.ascontiguousarray(embeddings[identities:], dtype=np.float32),
        np.ascontiguousarray(biases[identities:], dtype=np.float32),
        used,
    )


def fresh_calibration(
    representations: dict[str, np.ndarray],
    item_features: sp.csr_matrix,
    feature_embeddings: np.ndarray,
    feature_biases: np.ndarray,
    pairs: int = CALIBRATION_PAIRS,
    seed: int = 0,
) -> np.ndarray:
    """``(scale, shift)`` mapping a feature-built post's score onto the scale of trained posts' scores.

    Every trained post is also represented as a new post would be: its non-identity feature row,
    renormalised to sum 1. Over ``pairs`` random (user, post) pairs, the least-squares line from that
    feature-only score (without the user bias) to the post's full score gives ``(scale, shift)``: the
    expected full score of a post given its features, which is what a fresh post's score must be to
    merge into a user's precomputed list. Returns ``(1, 0)`` when there is no usable relation (no
    feature rows, constant scores, or a non-positive slope, which would invert the feature ranking).

    Parameters
    ----------
    representations : dict
        ``user_embeddings``, ``item_embeddings``, ``item_biases`` of the fitted model (float32).
    item_features : scipy.sparse.csr_matrix, shape (I, Fi)
        The non-identity columns of the training item features.
    feature_embeddings, feature_biases : float32 arrays, shapes (Fi, d) and (Fi,)
    pairs : int
        How many random pairs to fit on.
    seed : int
    """
    identity = np.array([1.0, 0.0], dtype=np.float32)
    row_sums = np.asarray(item_features.sum(axis=1)).ravel()
    with_features = np.flatnonzero(row_sums > 0)
    users = representations["user_embeddings"]
    if len(with_features) == 0 or len(users) == 0:
        return identity
    rng = np.random.default_rng(seed)
    items = with_features[rng.integers(len(with_features), size=pairs)]
    user_rows = users[rng.integers(len(users), size=pairs)].astype(np.float64)
    rows = sp.diags(1.0 / row_sums[items]) @ item_features[items]
    feature_scores = np.einsum("ij,ij->i", user_rows, rows @ feature_embeddings.astype(np.float64)) + rows @ (
        feature_biases.astype(np.float64)
    )
    full_scores = (
        np.einsum("ij,ij->i", user_rows, representations["item_embeddings"][items].astype(np.float64))
        + representations["item_biases"][items]
    )
    spread = feature_scores.var()
    if not spread > 0:
        return identity
    scale = float(np.cov(feature_scores, full_scores, bias=True)[0, 1] / spread)
    if not (np.isfinite(scale) and scale > 0):
        logger.warning("fresh posts' feature scores do not predict trained posts' scores (slope %.3g)", scale)
        return identity
    shift = float(full_scores.mean() - scale * feature_scores.mean())
    return np.array([scale, shift], dtype=np.float32)


def exclusions(dataset: Dataset) -> sp.csr_matrix:
    """Users × posts, a 1 for every post the user interacted with (any type, any weight) or authored."""
    authored = np.flatnonzero(dataset.item_author >= 0)
    rows = np.concatenate([dataset.inter_user, dataset.item_author[authored]]).astype(np.int64)
    cols = np.concatenate([dataset.inter_item, authored]).astype(np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(dataset.num_users, dataset.num_items)
    )
    matrix.sum_duplicates()  # also sorts each row's indices
    return matrix


def popularity(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every post ranked by the number of distinct users who interacted with it; ties go to the newer post.

    Distinct users rather than raw interaction counts, so that one user viewing a post a hundred times
    does not make it popular. Returns ``(items int32, scores float32)``, best first.
    """
    pairs = sets.unique(dataset.inter_user.astype(np.int64) * dataset.num_items + dataset.inter_item)
    counts = np.bincount(pairs % dataset.num_items, minlength=dataset.num_items)
    order = np.lexsort((-dataset.item_time, -counts))
    return order.astype(np.int32), counts[order].astype(np.float32)


def _type_weight(params: TrainingSettings, interaction_type: str) -> float:
    return {"view": params.weight_view, "like": params.weight_like, "comment": params.weight_comment}[interaction_type]


def check_trainable(dataset: Dataset) -> None:
    """Refuse, with a plain message, a dataset no model can be learnt from (raises :class:`TrainingError`).

    A ranking needs at least 2 users and 2 posts, and interactions from at least 2 users touching at least 2
    posts. The training pipeline asks before it evaluates or fits, so such data is a rejected run rather than
    a failed fit.
    """
    if dataset.num_users < 2 or dataset.num_items < 2:
        raise TrainingError(
            f"cannot train on {dataset.num_users} user(s) and {dataset.num_items} post(s): "
            "a ranking needs at least 2 users and 2 posts"
        )
    if dataset.num_interactions == 0:
        raise TrainingError("no interactions to learn from")
    active_users = sets.unique(dataset.inter_user).size
    if active_users < 2:
        raise TrainingError(f"interactions come from {active_users} user; a model needs at least 2")
    if sets.unique(dataset.inter_item).size < 2:
        raise TrainingError("interactions touch only 1 post; a model needs at least 2")


def _check_score_range(representations: dict[str, np.ndarray]) -> None:
    """Refuse representations whose scores could overflow float32 (a diverged fit that stayed finite)."""
    bound = (
        np.linalg.norm(representations["user_embeddings"].astype(np.float64), axis=1).max(initial=0.0)
        * np.linalg.norm(representations["item_embeddings"].astype(np.float64), axis=1).max(initial=0.0)
        + np.abs(representations["user_biases"]).max(initial=0.0)
        + np.abs(representations["item_biases"]).max(initial=0.0)
    )
    if not bound < MAX_SCORE:
        raise TrainingError(f"the fit diverged: scores can reach {bound:.3g}; lower the learning rate")
