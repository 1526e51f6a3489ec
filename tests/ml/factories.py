"""Small deterministic models and datasets built directly in memory, shared by the ML tests."""

from __future__ import annotations

import numpy as np

from ml.model import RecModel


def random_model(num_users: int = 6, num_items: int = 9, dim: int = 4, seed: int = 0, exclude=None) -> RecModel:
    """A RecModel with seeded random representations; ``exclude`` maps user index -> item indices."""
    rng = np.random.default_rng(seed)
    exclude = exclude or {}
    rows = [sorted(set(exclude.get(u, ()))) for u in range(num_users)]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([i for r in rows for i in r], dtype=np.int32)
    popularity = rng.integers(0, 50, num_items).astype(np.float32)
    order = np.argsort(-popularity, kind="stable").astype(np.int32)
    return RecModel(
        user_ids=[f"user-{u}" for u in range(num_users)],
        item_ids=[f"post-{i}" for i in range(num_items)],
        item_tags=[tuple(f"tag{t}" for t in range(i % 3)) for i in range(num_items)],
        item_community_ids=[f"community-{i % 2}" for i in range(num_items)],
        user_embeddings=rng.standard_normal((num_users, dim)).astype(np.float32),
        user_biases=rng.standard_normal(num_users).astype(np.float32),
        item_embeddings=rng.standard_normal((num_items, dim)).astype(np.float32),
        item_biases=rng.standard_normal(num_items).astype(np.float32),
        exclude_indptr=indptr,
        exclude_indices=indices,
        popular_items=order,
        popular_scores=popularity[order],
    )


def brute_force_top_k(model: RecModel, user: int, k: int) -> tuple[list[int], np.ndarray]:
    """The reference ranking: score every item in float64, drop exclusions, full sort."""
    scores = (
        model.item_embeddings.astype(np.float64) @ model.user_embeddings[user].astype(np.float64)
        + model.item_biases
        + model.user_biases[user]
    )
    excluded = set(model.excluded_items(user).tolist())
    ranked = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in excluded]
    return ranked[:k], scores[ranked[:k]]
