"""Small deterministic models and datasets built directly in memory, for the tests and the serving benchmark."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from ml.dataset import Dataset, Table
from ml.model import RecModel
from ml.validate import build_dataset

POSTS_START = datetime(2026, 1, 1, tzinfo=UTC)


def make_tables(
    users: list[tuple[str, str]],
    posts: list[tuple[str, str, str, str]],
    interactions: list[tuple[str, str, str, str]],
    follows: list[tuple[str, str]] = (),
    communities: tuple[str, ...] = ("bts", "blackpink"),
) -> dict[str, list[tuple[str, ...]]]:
    """The full rows of the five tables (DESIGN section 3) from short ones.

    ``users`` are (id, role); ``posts`` (id, community, author or "", "tag|tag"); ``interactions``
    (user, post, type, ISO time); ``follows`` (user, community). Posts are created an hour apart, in
    their order.
    """
    return {
        "users": [(u, role, "2026-01-01T00:00:00Z") for u, role in users],
        "communities": [(c, c.upper()) for c in communities],
        "follows": [(u, c, "2026-01-02T00:00:00Z") for u, c in follows],
        "posts": [(p, c, a, tags, _iso(POSTS_START + timedelta(hours=n))) for n, (p, c, a, tags) in enumerate(posts)],
        "interactions": list(interactions),
    }


def make_dataset(*args, **kwargs) -> Dataset:
    """A validated Dataset from the short rows of :func:`make_tables`."""
    return build_dataset({name: Table(name, rows) for name, rows in make_tables(*args, **kwargs).items()})


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


def planted_dataset(**kwargs) -> Dataset:
    """The Dataset of :func:`planted_tables`."""
    return build_dataset({name: Table(name, rows) for name, rows in planted_tables(**kwargs).items()})


def planted_tables(
    num_users: int = 300, num_items: int = 240, groups: int = 4, per_user: int = 16, seed: int = 0
) -> dict[str, list[tuple[str, ...]]]:
    """Generated data with planted structure: users and posts fall into ``groups`` fandoms.

    Post ``i`` belongs to community ``g{i % groups}`` with tag ``topic{i % groups}`` and one random
    noise tag; user ``u`` is a fan of group ``u % groups`` and follows its community (most users) .
    85% of a user's interactions go to posts of its own group, the rest anywhere; within either, posts
    are drawn with a Zipf-like global popularity, so the popularity baseline is a real competitor
    that the model can only beat by learning the groups.
    """
    rng = np.random.default_rng(seed)
    communities = tuple(f"g{g}" for g in range(groups))
    users = [(f"u{u}", "fan" if u % 5 else "artist") for u in range(num_users)]
    follows = [(f"u{u}", f"g{u % groups}") for u in range(num_users) if u % 10]
    posts = [
        (f"p{i}", f"g{i % groups}", f"u{rng.integers(num_users)}" if i % 3 == 0 else "",
         f"topic{i % groups}|noise{rng.integers(20)}")
        for i in range(num_items)
    ]  # fmt: skip
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(num_items)]
    item_group = np.arange(num_items) % groups
    interactions = []
    for u in range(num_users):
        own = item_group == u % groups
        weights = np.where(own, popularity * 0.85 / popularity[own].sum(), popularity * 0.15 / popularity.sum())
        chosen = rng.choice(num_items, size=per_user, replace=False, p=weights / weights.sum())
        for n, i in enumerate(chosen):
            kind = ("view", "like", "comment")[rng.choice(3, p=[0.6, 0.3, 0.1])]
            when = POSTS_START + timedelta(days=60 + n, minutes=int(rng.integers(600)))
            interactions.append((f"u{u}", f"p{i}", kind, _iso(when)))
    return make_tables(users, posts, interactions, follows=follows, communities=communities)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


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
