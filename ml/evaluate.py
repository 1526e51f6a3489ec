"""Offline evaluation with the protocol of DESIGN section 9, and its command line.

The protocol, so that numbers compare across runs and projects:

- For each user, its distinct posts are ordered by the time of the user's first interaction with each
  (ties by post index). A user with at least :data:`MIN_USER_POSTS` (5) distinct posts puts the last 20%
  of them, rounded **up** (so at least 1), in the test set; everything else is train.
- Test posts that nobody interacted with in train are dropped (no model could have learned them).
- The model is trained on the train interactions only (every user, post and feature is kept), and each
  user's train posts are excluded from its ranking.
- precision@k, recall@k and NDCG@k (binary relevance) are averaged over the users with at least one test
  post, for the model and for the popularity baseline (posts by the number of distinct train users).

The cold-post protocol (``--cold-posts``) measures what the live feed does with posts written after the
model's data were read: the newest :data:`COLD_PERCENT` (10%) of posts by creation time are withheld from
training entirely (posts and their interactions); each user who interacted with one of them gets the
withheld posts ranked, the model scoring them from their features alone
(:meth:`~ml.model.RecModel.item_representations`), against two baselines that need no model: the
popularity of the post's community (distinct train users who interacted with its posts; newer first on
ties) and the user's own affinity to the post's community (its train interactions there; then community
popularity). Relevant are the withheld posts the user interacted with; a user's own posts are not ranked.

The browsing protocol (``--similar``) measures what ``GET /posts/<id>/similar`` and the community filter of
the feed serve, on the same temporal split. Similar posts: for each test user, given the last post it
interacted with in train (by first interaction), is its first test post among the 10 posts most similar to
it (hit rate@k)? Cosine over the model's item representations (:mod:`ml.similar`) against two baselines:
item co-occurrence counts (users who interacted with both; ties by popularity) and popularity within the
post's community. The post itself is never a neighbour. Filtered feed: for each test user, the community
holding most of its test posts; the model's ranking of that community's posts (the user's train posts
left out) against the community's popularity list, with the user's test posts there as relevant
(precision, recall and NDCG at k).

The search protocol (``--search FILE``) is the holdout evaluation of each configuration a model search
recorded (``MODEL_DIR/search.json``, :mod:`ml.search`): the one in force before it, the best of each family
and the chosen one, each trained with this environment's ``TRAIN_SEED`` and ``TRAIN_THREADS``.

Command line::

    python -m ml.evaluate DIR [--json] [--cold-posts | --similar | --search FILE]
    python -m ml.evaluate --from-db [--database-url URL] [--json] [--cold-posts | --similar | --search FILE]

Hyperparameters come from the environment (``LIGHTFM_*``, ``WEIGHT_*``) and, with ``--from-db``, the database
and its queries from ``DATABASE_URL`` and ``SQL_*``: only the variables of ``ml.settings`` are read.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import psycopg2
import scipy.sparse as sp

from ml import sets
from ml.csv_files import read_dataset_dir
from ml.dataset import Dataset
from ml.db.connection import connect
from ml.db.read import read_dataset
from ml.errors import DatasetError, TrainingError
from ml.families import train_model
from ml.model import RecModel
from ml.model_config import ModelConfig
from ml.settings import (
    ConfigError,
    TrainingSettings,
    database_url_from,
    environment,
    sql_queries_from,
    training_from,
)
from ml.similar import UnitItems, community_popularity, cooccurrence
from ml.training import train

logger = logging.getLogger(__name__)

MIN_USER_POSTS = 5
TEST_PERCENT = 20
COLD_PERCENT = 10


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """A temporal holdout split.

    Attributes
    ----------
    train : Dataset
        The dataset with only the interactions of train (user, post) pairs, and no post authors, so the
        model excludes exactly each user's train posts from its ranking.
    test_user, test_item : int32 arrays
        The test (user, post) pairs, sorted by user.
    """

    train: Dataset
    test_user: np.ndarray
    test_item: np.ndarray


def temporal_split(dataset: Dataset) -> Split:
    """Split ``dataset`` per user by time, as the protocol above says."""
    num_items = dataset.num_items
    keys = dataset.inter_user.astype(np.int64) * num_items + dataset.inter_item
    order = np.lexsort((dataset.inter_time, keys))
    pair_keys, first = np.unique(keys[order], return_index=True)
    first_time = dataset.inter_time[order][first]
    pair_user, pair_item = pair_keys // num_items, pair_keys % num_items

    # Each user's pairs by first interaction time; rank within the user, and how many go to test.
    by_time = np.lexsort((pair_item, first_time, pair_user))
    pair_user, pair_item, pair_keys = pair_user[by_time], pair_item[by_time], pair_keys[by_time]
    per_user = np.bincount(pair_user, minlength=dataset.num_users)
    user_start = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    rank = np.arange(len(pair_user)) - user_start[pair_user]
    test_count = np.where(per_user >= MIN_USER_POSTS, (per_user * TEST_PERCENT + 99) // 100, 0)
    is_test = rank >= per_user[pair_user] - test_count[pair_user]

    seen_in_train = np.bincount(pair_item[~is_test], minlength=num_items) > 0
    kept_test = is_test & seen_in_train[pair_item]
    train_mask = sets.isin(keys, pair_keys[~is_test])
    train = dataclasses.replace(
        dataset,
        inter_user=dataset.inter_user[train_mask],
        inter_item=dataset.inter_item[train_mask],
        inter_type=dataset.inter_type[train_mask],
        inter_time=dataset.inter_time[train_mask],
        item_author=np.full(num_items, -1, dtype=dataset.item_author.dtype),
    )
    return Split(train, pair_user[kept_test].astype(np.int32), pair_item[kept_test].astype(np.int32))


def ranking_metrics(
    ranked: np.ndarray, users: np.ndarray, test_user: np.ndarray, test_item: np.ndarray, num_items: int, k: int
) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k (binary relevance) of ``ranked`` over ``users``.

    Parameters
    ----------
    ranked : int array, shape (n, >= k)
        Item indices per user, best first; ``-1`` for an empty place.
    users : int array, length n
        The user of each row; each must have at least one test pair.
    test_user, test_item : int arrays
        The relevant (user, item) pairs.
    """
    ranked = ranked[:, :k]
    relevant = sets.unique(test_user.astype(np.int64) * num_items + test_item)
    hits = sets.in_sorted(users.astype(np.int64)[:, None] * num_items + ranked, relevant) & (ranked >= 0)
    num_relevant = np.bincount(test_user, minlength=int(users.max()) + 1)[users]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(num_relevant, k) - 1]
    return {
        f"precision@{k}": float(np.mean(hits.sum(axis=1) / k)),
        f"recall@{k}": float(np.mean(hits.sum(axis=1) / num_relevant)),
        f"ndcg@{k}": float(np.mean((hits * discounts).sum(axis=1) / ideal)),
    }


def evaluate(
    dataset: Dataset, params: TrainingSettings, k: int = 10, trainer: Callable[[Dataset], RecModel] | None = None
) -> dict[str, Any]:
    """Train on the holdout split of ``dataset`` and measure the model and the popularity baseline.

    Parameters
    ----------
    dataset : Dataset
    params : TrainingSettings
    k : int
        The cut-off of the metrics.
    trainer : callable, optional
        Fits the model on the train part instead of LightFM with ``params`` (the configuration the model
        search chose: :func:`ml.families.train_model`).

    Returns
    -------
    dict
        ``{"k", "users", "test_pairs", "train_pairs", "seconds", "model": {...}, "popularity": {...}}``
        where each metrics dict holds ``precision@k``, ``recall@k`` and ``ndcg@k``; strict JSON.

    Raises
    ------
    DatasetError
        When no user has a test post (too few users with 5 distinct posts).
    TrainingError
        From :func:`ml.training.train`.
    """
    started = time.perf_counter()
    split = temporal_split(dataset)
    if len(split.test_user) == 0:
        raise DatasetError(
            f"no user has a test post: a holdout needs users with at least {MIN_USER_POSTS} distinct posts"
        )
    model = trainer(split.train) if trainer else train(split.train, params)
    users = sets.unique(split.test_user)
    model_ranked, _ = model.top_k(users, k)
    popular_ranked = _popular_rankings(model, users, k)
    args = (users, split.test_user, split.test_item, dataset.num_items, k)
    return {
        "k": k,
        "users": int(len(users)),
        "test_pairs": int(len(split.test_user)),
        "train_pairs": int(
            len(sets.unique(split.train.inter_user.astype(np.int64) * dataset.num_items + split.train.inter_item))
        ),
        "seconds": round(time.perf_counter() - started, 3),
        "model": ranking_metrics(model_ranked, *args),
        "popularity": ranking_metrics(popular_ranked, *args),
    }


def cold_post_split(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """The dataset without its newest :data:`COLD_PERCENT` % of posts (rounded up), and those posts' indices.

    The train dataset keeps every user, community and follow, the older posts (re-indexed in their order)
    and only the interactions with them; nothing of a withheld post reaches training.
    """
    count = -(-dataset.num_items * COLD_PERCENT // 100)
    by_time = np.lexsort((np.arange(dataset.num_items), dataset.item_time))
    cold = np.sort(by_time[dataset.num_items - count :])
    warm = np.setdiff1d(np.arange(dataset.num_items), cold)
    new_index = np.full(dataset.num_items, -1, dtype=np.int64)
    new_index[warm] = np.arange(len(warm))
    kept = new_index[dataset.inter_item] >= 0
    train = dataclasses.replace(
        dataset,
        item_ids=[dataset.item_ids[i] for i in warm],
        item_community=dataset.item_community[warm],
        item_author=dataset.item_author[warm],
        item_tags=[dataset.item_tags[i] for i in warm],
        item_time=dataset.item_time[warm],
        inter_user=dataset.inter_user[kept],
        inter_item=new_index[dataset.inter_item[kept]].astype(np.int32),
        inter_type=dataset.inter_type[kept],
        inter_time=dataset.inter_time[kept],
    )
    return train, cold


def evaluate_cold_posts(dataset: Dataset, params: TrainingSettings, k: int = 10) -> dict[str, Any]:
    """The cold-post protocol (module docstring): the feature-scored model against community baselines.

    Returns
    -------
    dict
        ``{"k", "cold_posts", "users", "test_pairs", "seconds", "model": {...}, "community_popularity":
        {...}, "user_community": {...}, "unscorable_posts"}``: metrics as :func:`evaluate`'s, over the
        users with at least one interaction with a withheld post; ``unscorable_posts`` counts withheld
        posts none of whose features the model knows (they score 0 in the model's ranking).

    Raises
    ------
    DatasetError
        When nobody interacted with a withheld post.
    TrainingError
        From :func:`ml.training.train`.
    """
    started = time.perf_counter()
    train_set, cold = cold_post_split(dataset)
    cold_position = np.full(dataset.num_items, -1, dtype=np.int64)
    cold_position[cold] = np.arange(len(cold))
    on_cold = cold_position[dataset.inter_item] >= 0
    pairs = sets.unique(
        dataset.inter_user[on_cold].astype(np.int64) * len(cold) + cold_position[dataset.inter_item][on_cold]
    )
    test_user, test_item = (pairs // len(cold)).astype(np.int32), (pairs % len(cold)).astype(np.int32)
    if len(pairs) == 0:
        raise DatasetError(f"nobody interacted with the newest {COLD_PERCENT}% of posts: no cold-post test pairs")
    model = train(train_set, params)
    users = sets.unique(test_user)

    embeddings, biases, known = model.item_representations(
        [dataset.item_tags[i] for i in cold], [dataset.community_ids[c] for c in dataset.item_community[cold]]
    )
    model_scores = model.user_embeddings[users] @ embeddings.T + biases

    communities = dataset.item_community[cold]
    train_community = train_set.item_community[train_set.inter_item]
    pair_keys = sets.unique(train_set.inter_user.astype(np.int64) * len(dataset.community_ids) + train_community)
    community_users = np.bincount(pair_keys % len(dataset.community_ids), minlength=len(dataset.community_ids))
    # Ties (one community, or equally popular ones) go to the newer post, as a feed of new posts would.
    recency = np.argsort(np.argsort(dataset.item_time[cold], kind="stable")) / max(len(cold), 1)
    popularity_scores = np.broadcast_to(community_users[communities] + recency, model_scores.shape)
    affinity = np.zeros((dataset.num_users, len(dataset.community_ids)), dtype=np.float64)
    np.add.at(affinity, (train_set.inter_user, train_community), 1.0)
    affinity_scores = affinity[users][:, communities] * (community_users.max() + 2) + popularity_scores

    authored = dataset.item_author[cold]
    own = users[:, None] == authored[None, :]
    args = (users, test_user, test_item, len(cold), k)
    results = {}
    for name, scores in (
        ("model", model_scores),
        ("community_popularity", popularity_scores),
        ("user_community", affinity_scores),
    ):
        scores = np.where(own, -np.inf, scores)
        results[name] = ranking_metrics(_top(scores, k), *args)
    return {
        "k": k,
        "cold_posts": int(len(cold)),
        "users": int(len(users)),
        "test_pairs": int(len(test_user)),
        "unscorable_posts": int((~known).sum()),
        "seconds": round(time.perf_counter() - started, 3),
        **results,
    }


def evaluate_search(
    dataset: Dataset, params: TrainingSettings, record: Mapping[str, Any], k: int = 10
) -> dict[str, Any]:
    """The holdout evaluation (:func:`evaluate`) of each configuration in a model search's ``record``.

    ``current`` (in force before the search), the best of each family and ``chosen``, each with ``params``'s
    ``num_threads`` and ``seed``; a configuration that repeats another (``chosen`` always does) is trained
    once. Returns :func:`evaluate`'s figures with ``models`` (label: ``family`` and metrics) in place of
    ``model``.
    """
    started = time.perf_counter()
    configs = {
        "current": record["current"]["config"],
        **{family: entry["config"] for family, entry in (record.get("families") or {}).items()},
        "chosen": record["chosen"],
    }
    measured: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {}
    for label, document in configs.items():
        config = ModelConfig.from_json(document)
        config = dataclasses.replace(
            config,
            training=dataclasses.replace(config.training, num_threads=params.num_threads, seed=params.seed),
        )
        key = json.dumps(config.to_json(), sort_keys=True)
        if key not in measured:
            fit = functools.partial(train_model, config=config)
            measured[key] = evaluate(dataset, config.training, k, trainer=fit)
        result = measured[key]
        models[label] = {"family": config.family, **result["model"]}
    return {
        **{name: value for name, value in result.items() if name != "model"},
        "seconds": round(time.perf_counter() - started, 3),
        "models": models,
    }


def evaluate_similar(dataset: Dataset, params: TrainingSettings, k: int = 10) -> dict[str, Any]:
    """The browsing protocol (module docstring): similar posts and the community-filtered feed.

    Returns
    -------
    dict
        ``{"k", "pairs", "seconds", "similar": {"cosine", "cooccurrence", "community_popularity"}, "filtered":
        {"users", "test_pairs", "model": {...}, "community_popularity": {...}}}``: hit rates at k of the next
        post, and metrics as :func:`evaluate`'s within each user's community.

    Raises
    ------
    DatasetError
        When no user has a test post. TrainingError from :func:`ml.training.train`.
    """
    started = time.perf_counter()
    split = temporal_split(dataset)
    if len(split.test_user) == 0:
        raise DatasetError(
            f"no user has a test post: a holdout needs users with at least {MIN_USER_POSTS} distinct posts"
        )
    model = train(split.train, params)
    num_items, train_set = dataset.num_items, split.train
    keys = sets.unique(train_set.inter_user.astype(np.int64) * num_items + train_set.inter_item)
    popularity = np.bincount(keys % num_items, minlength=num_items).astype(np.float64)

    # Each test user's previous post (its last train post by first interaction) and next one (first test post).
    order = np.lexsort((train_set.inter_time, train_set.inter_user.astype(np.int64) * num_items + train_set.inter_item))
    pair_keys, first = np.unique(
        (train_set.inter_user.astype(np.int64) * num_items + train_set.inter_item)[order], return_index=True
    )
    first_time = train_set.inter_time[order][first]
    by_time = np.lexsort((pair_keys % num_items, first_time, pair_keys // num_items))
    users_by_time = (pair_keys // num_items)[by_time]
    last = by_time[np.r_[users_by_time[1:] != users_by_time[:-1], True]]
    previous = dict(zip((pair_keys // num_items)[last].tolist(), (pair_keys % num_items)[last].tolist(), strict=True))
    test_users, first_test = np.unique(split.test_user, return_index=True)
    pairs = [
        (previous[u], int(split.test_item[i]))
        for u, i in zip(test_users.tolist(), first_test, strict=True)
        if u in previous
    ]
    queries = np.array([q for q, _ in pairs], dtype=np.int64)
    targets = np.array([t for _, t in pairs], dtype=np.int64)

    units = UnitItems.of(model)
    counts = cooccurrence(
        sp.csr_matrix((np.ones(len(keys)), (keys // num_items, keys % num_items)), shape=(dataset.num_users, num_items))
    )
    by_community = community_popularity(popularity, dataset.item_community)
    tie_break = popularity / (popularity.max() + 1)  # co-occurrence ties (and zeros) go to the more popular post
    hits = {"cosine": 0, "cooccurrence": 0, "community_popularity": 0}
    for query, target in zip(queries.tolist(), targets.tolist(), strict=True):
        for name, scores in (
            ("cosine", units.cosines(units.unit[query])),
            ("cooccurrence", counts[query].toarray().ravel() + tie_break),
        ):
            scores[query] = -np.inf
            hits[name] += target in _top(scores[None, :], k)[0]
        neighbours = by_community[int(dataset.item_community[query])]
        hits["community_popularity"] += target in neighbours[neighbours != query][:k]
    similar = {name: round(count / max(len(pairs), 1), 4) for name, count in hits.items()}

    # The filtered feed: each test user's main test community, its posts ranked by the model and by popularity.
    test_community = dataset.item_community[split.test_item].astype(np.int64)
    num_communities = len(dataset.community_ids)
    per_user = np.zeros((dataset.num_users, num_communities), dtype=np.int64)
    np.add.at(per_user, (split.test_user, test_community), 1)
    users = sets.unique(split.test_user)
    chosen = per_user[users].argmax(axis=1)
    in_chosen = test_community == chosen[np.searchsorted(users, split.test_user)]
    model_ranked = np.full((len(users), k), -1, dtype=np.int64)
    popular_ranked = np.full((len(users), k), -1, dtype=np.int64)
    for row, (user, community) in enumerate(zip(users.tolist(), chosen.tolist(), strict=True)):
        members = np.flatnonzero(dataset.item_community == community)
        members = members[~np.isin(members, model.excluded_items(user))]
        scores = model.item_embeddings[members] @ model.user_embeddings[user] + model.item_biases[members]
        best = members[np.argsort(-scores, kind="stable")[:k]]
        model_ranked[row, : len(best)] = best
        ranked = by_community.get(community, np.zeros(0, dtype=np.int64))
        ranked = ranked[~np.isin(ranked, model.excluded_items(user))][:k]
        popular_ranked[row, : len(ranked)] = ranked
    args = (users, split.test_user[in_chosen], split.test_item[in_chosen], num_items, k)
    return {
        "k": k,
        "pairs": len(pairs),
        "seconds": round(time.perf_counter() - started, 3),
        "similar": similar,
        "filtered": {
            "users": int(len(users)),
            "test_pairs": int(in_chosen.sum()),
            "model": ranking_metrics(model_ranked, *args),
            "community_popularity": ranking_metrics(popular_ranked, *args),
        },
    }


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The column indices of the ``k`` best scores of each row, best first; ``-1`` where a score is -inf."""
    kept = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :kept]
    ranked = np.full((len(scores), k), -1, dtype=np.int64)
    ranked[:, :kept] = np.where(np.isneginf(np.take_along_axis(scores, best, axis=1)), -1, best)
    return ranked


def _popular_rankings(model: RecModel, users: np.ndarray, k: int) -> np.ndarray:
    """The popularity baseline's top ``k`` of each user, skipping its train posts; ``-1`` pads."""
    ranked = np.full((len(users), k), -1, dtype=np.int32)
    for row, user in enumerate(users):
        items, _ = model.popular(k, exclude=model.excluded_items(user))
        ranked[row, : len(items)] = items
    return ranked


# --- command line ---


def _format_table(result: dict[str, Any], source: str) -> str:
    k = result["k"]
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    lines = [
        f"{source}: {result['users']} users evaluated, {result['test_pairs']} test pairs, "
        f"{result['train_pairs']} train pairs ({result['seconds']:.1f} s)",
        f"{'':<12}" + "".join(f"{name:>14}" for name in names),
    ]
    for label in ("model", "popularity"):
        lines.append(f"{label:<12}" + "".join(f"{result[label][name]:>14.4f}" for name in names))
    return "\n".join(lines)


def _format_search_table(result: dict[str, Any], source: str) -> str:
    k = result["k"]
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    lines = [
        f"{source}, a model search's configurations: {result['users']} users evaluated, {result['test_pairs']} "
        f"test pairs ({result['seconds']:.1f} s)",
        f"{'':<24}" + "".join(f"{name:>14}" for name in names),
    ]
    rows = [(f"{label} ({entry['family']})", entry) for label, entry in result["models"].items()]
    for label, entry in [*rows, ("popularity", result["popularity"])]:
        lines.append(f"{label:<24}" + "".join(f"{entry[name]:>14.4f}" for name in names))
    return "\n".join(lines)


def _format_cold_table(result: dict[str, Any], source: str) -> str:
    k = result["k"]
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    lines = [
        f"{source}, cold posts (newest {COLD_PERCENT}% withheld): {result['cold_posts']} posts "
        f"({result['unscorable_posts']} without a known feature), {result['users']} users, "
        f"{result['test_pairs']} test pairs ({result['seconds']:.1f} s)",
        f"{'':<22}" + "".join(f"{name:>14}" for name in names),
    ]
    for label in ("model", "community_popularity", "user_community"):
        lines.append(f"{label:<22}" + "".join(f"{result[label][name]:>14.4f}" for name in names))
    return "\n".join(lines)


def _format_similar_table(result: dict[str, Any], source: str) -> str:
    k, similar, filtered = result["k"], result["similar"], result["filtered"]
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    lines = [
        f"{source}, similar posts: hit rate@{k} of the next post given the previous one, {result['pairs']} pairs "
        f"({result['seconds']:.1f} s)",
        *(f"{label:<22}{similar[label]:>14.4f}" for label in ("cosine", "cooccurrence", "community_popularity")),
        f"filtered feed within each user's main test community: {filtered['users']} users, "
        f"{filtered['test_pairs']} test pairs",
        f"{'':<22}" + "".join(f"{name:>14}" for name in names),
    ]
    for label in ("model", "community_popularity"):
        lines.append(f"{label:<22}" + "".join(f"{filtered[label][name]:>14.4f}" for name in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml.evaluate", description="Offline evaluation (DESIGN section 9): model vs popularity."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset_dir", nargs="?", help="a dataset directory (DESIGN section 3)")
    source.add_argument("--from-db", action="store_true", help="read the dataset from PostgreSQL")
    parser.add_argument("--database-url", help="with --from-db; default DATABASE_URL")
    parser.add_argument("--k", type=int, default=10, help="metric cut-off (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument(
        "--cold-posts",
        action="store_true",
        help="the cold-post protocol: newest 10%% of posts withheld, scored by features",
    )
    protocol.add_argument(
        "--similar",
        action="store_true",
        help="the browsing protocol: similar posts (hit rate of the next post) and the community-filtered feed",
    )
    protocol.add_argument(
        "--search",
        metavar="FILE",
        help="the holdout evaluation of each configuration of a model search's record (MODEL_DIR/search.json)",
    )
    args = parser.parse_args(argv)
    if args.database_url and not args.from_db:
        parser.error("--database-url needs --from-db")
    if args.k < 1:
        parser.error("--k must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        env = environment()
        params = training_from(env)
        if args.from_db:
            dataset = _read_from_db(args.database_url or database_url_from(env), sql_queries_from(env))
            label = "PostgreSQL"
        else:
            dataset = read_dataset_dir(args.dataset_dir)
            label = args.dataset_dir
        if args.search:
            with open(args.search, encoding="utf-8") as handle:
                result = evaluate_search(dataset, params, json.load(handle), k=args.k)
        else:
            run = evaluate_cold_posts if args.cold_posts else evaluate_similar if args.similar else evaluate
            result = run(dataset, params, k=args.k)
    except (ConfigError, DatasetError, TrainingError, OSError, psycopg2.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError) as exc:
        print(f"error: {args.search}: not a model search's record ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    result["params"] = dataclasses.asdict(params)
    table = (
        _format_search_table
        if args.search
        else _format_cold_table
        if args.cold_posts
        else _format_similar_table
        if args.similar
        else _format_table
    )
    print(json.dumps(result, indent=2) if args.json else table(result, label))
    return 0


def _read_from_db(database_url: str, queries: Mapping[str, str]) -> Dataset:
    conn = connect(database_url)
    try:
        return read_dataset(conn, queries)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
