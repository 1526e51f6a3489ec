"""Ranking only posts that can still be shown (``MAX_POST_AGE_DAYS``): a model cut down to the recent posts.

An app that shows no post older than N days gains nothing from ranking a million users against every post
of the last years: the precompute's work is users × posts. :func:`recent_posts_only` keeps, in a trained
:class:`~ml.model.RecModel` of any family, only the posts created within ``max_age_days`` of the newest post
the run read (the data's "now": a deployment writes posts every few minutes, and the same data always gives the
same model, which the unchanged-data check relies on). The fit still learns from every interaction, old posts
included; only the candidates shrink. The model's item indices, exclusions and popularity are renumbered to
the kept posts, so every ranking built on the model (the precompute, the web's ranking beyond the list,
browsing, similar posts) sees only them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ml.dataset import Dataset
from ml.model import RecModel

DAY_SECONDS = 86_400


def recent_posts(dataset: Dataset, max_age_days: float) -> np.ndarray:
    """The indices of ``dataset``'s posts created within ``max_age_days`` of its newest post (sorted)."""
    if dataset.num_items == 0:
        return np.zeros(0, dtype=np.int64)
    cutoff = int(dataset.item_time.max()) - max_age_days * DAY_SECONDS
    return np.flatnonzero(dataset.item_time >= cutoff)


def recent_posts_only(model: RecModel, dataset: Dataset, max_age_days: float) -> RecModel:
    """``model`` (trained on ``dataset``) with only the posts :func:`recent_posts` keeps, renumbered in order."""
    if model.item_ids != dataset.item_ids:
        raise ValueError("the model's posts are not the dataset's")
    kept = recent_posts(dataset, max_age_days)
    if len(kept) == model.num_items:
        return model
    new_index = np.full(model.num_items, -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    # Exclusions: drop the entries of posts no longer ranked, renumber the rest (rows stay sorted).
    mapped = new_index[model.exclude_indices]
    stays = mapped >= 0
    rows = np.repeat(np.arange(model.num_users), np.diff(model.exclude_indptr))
    counts = np.bincount(rows[stays], minlength=model.num_users)
    popular = new_index[model.popular_items]
    ranked = popular >= 0
    return dataclasses.replace(
        model,
        item_ids=[model.item_ids[i] for i in kept],
        item_tags=[model.item_tags[i] for i in kept],
        item_community_ids=[model.item_community_ids[i] for i in kept],
        item_embeddings=np.ascontiguousarray(model.item_embeddings[kept]),
        item_biases=np.ascontiguousarray(model.item_biases[kept]),
        exclude_indptr=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        exclude_indices=mapped[stays].astype(np.int32),
        popular_items=popular[ranked].astype(np.int32),
        popular_scores=model.popular_scores[ranked],
    )
