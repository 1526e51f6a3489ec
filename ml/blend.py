"""A per-user blend of two models' scores, itself a :class:`~ml.model.RecModel` served like any other.

Each model's scores of a user are standardised over every post (mean 0, standard deviation 1 for that
user), and the blend ranks by ``weight * z_first + (1 - weight) * z_second``. Standardising makes scores of
different scales (LightFM's WARP scores, ALS's dot products) comparable user by user, so one weight fits all.

The blend is exact in RecModel's form (no biases, a longer embedding): a model's score of post ``i`` for
user ``u`` is ``u' · i'`` with ``u' = [e_u, 1]`` and ``i' = [e_i, b_i]`` (the user's bias is constant per
user, so standardisation drops it). Over the posts, the mean of ``i'`` is ``m`` and its covariance ``C``, so
``z = (u' / sqrt(u' C u')) · (i' - m)``: the user side carries the standardisation and the weight, the post
side is centred once, and the two models' parts are concatenated. ``top_k``, the precompute and the web
serve it unchanged. The blend keeps no feature embeddings (its ALS part has none): fresh posts and unknown
users are treated as under ALS (see :mod:`ml.als`).
"""

from __future__ import annotations

import numpy as np

from ml.model import RecModel


def blend(first: RecModel, second: RecModel, weight: float) -> RecModel:
    """The RecModel ranking by ``weight`` times ``first``'s standardised score plus ``1 - weight`` times ``second``'s.

    Both models must cover the same users and posts in the same order (trained on one dataset); the blend
    takes ``first``'s exclusions and popularity.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], got {weight}")
    if first.user_ids != second.user_ids or first.item_ids != second.item_ids:
        raise ValueError("a blend needs two models of the same users and posts")
    parts = [_standardised(first, weight), _standardised(second, 1.0 - weight)]
    users = np.hstack([user for user, _ in parts]).astype(np.float32)
    items = np.hstack([item for _, item in parts]).astype(np.float32)
    return RecModel(
        user_ids=first.user_ids,
        item_ids=first.item_ids,
        item_tags=first.item_tags,
        item_community_ids=first.item_community_ids,
        user_embeddings=np.ascontiguousarray(users),
        user_biases=np.zeros(first.num_users, dtype=np.float32),
        item_embeddings=np.ascontiguousarray(items),
        item_biases=np.zeros(first.num_items, dtype=np.float32),
        exclude_indptr=first.exclude_indptr,
        exclude_indices=first.exclude_indices,
        popular_items=first.popular_items,
        popular_scores=first.popular_scores,
    )


def _standardised(model: RecModel, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """``(user side, item side)`` whose dot product is ``weight`` times the user's standardised score."""
    items = np.hstack([model.item_embeddings, model.item_biases[:, None]]).astype(np.float64)
    users = np.hstack([model.user_embeddings, np.ones((model.num_users, 1))]).astype(np.float64)
    centred = items - items.mean(axis=0)
    covariance = centred.T @ centred / max(len(items), 1)
    spread = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", users, covariance, users), 0.0))
    # A user whose scores are all equal has no ranking to contribute: its part is 0.
    scale = np.divide(weight, spread, out=np.zeros_like(spread), where=spread > 1e-12)
    return users * scale[:, None], centred
