"""User and item feature matrices for the LightFM hybrid model.

Each user is described by an identity feature (its own id), its role and the communities it follows;
each post by an identity feature, its tags and its community. LightFM learns one embedding per feature
and represents a user or post as the weighted sum of its features' embeddings, so a user without
interactions still gets a ranking from its role and follows, and a post without interactions one from
its tags and community.

Rows are normalised to sum to 1 (as ``lightfm.data.Dataset`` does by default), so that a post with
many tags does not get a larger representation, and hence larger scores, than a post with one.

A post or user created after training has no identity feature: its row (built by
``RecModel.item_representations`` / ``user_representation`` from the non-identity embeddings the model
keeps) holds only its known features, again summing to 1. Its representation is then the mean of its
feature embeddings, where a trained post's is that mean shrunk by the identity's share plus the identity
embedding; ``RecModel.fresh_calibration`` maps the one score onto the other's scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ml.dataset import Dataset


@dataclass(frozen=True, eq=False)
class Features:
    """The feature matrices of a dataset.

    Attributes
    ----------
    user_features : scipy.sparse.csr_matrix, float32, shape (U, n_user_features)
    item_features : scipy.sparse.csr_matrix, float32, shape (I, n_item_features)
    user_feature_names, item_feature_names : list of str
        The name of each column, e.g. ``"user:u1"``, ``"role:fan"``, ``"follows:bts"``, ``"post:p1"``,
        ``"tag:dance"``, ``"community:bts"``.
    """

    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_feature_names: list[str]
    item_feature_names: list[str]


def build_features(dataset: Dataset) -> Features:
    """Build the user and item feature matrices of ``dataset``, with identity features, row-normalised.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    Features
        One row per user and per post of ``dataset``, in its index order.
    """
    num_users, num_items = dataset.num_users, dataset.num_items
    roles, role_of_user = _vocabulary(dataset.user_roles)
    user_blocks = [
        (_identity(num_users), [f"user:{u}" for u in dataset.user_ids]),
        (_one_per_row(role_of_user, len(roles)), [f"role:{r}" for r in roles]),
        (
            _binary(dataset.follow_user, dataset.follow_community, (num_users, len(dataset.community_ids))),
            [f"follows:{c}" for c in dataset.community_ids],
        ),
    ]
    tags, tag_rows, tag_cols = _tag_pairs(dataset.item_tags)
    item_blocks = [
        (_identity(num_items), [f"post:{i}" for i in dataset.item_ids]),
        (_binary(tag_rows, tag_cols, (num_items, len(tags))), [f"tag:{t}" for t in tags]),
        (
            _one_per_row(dataset.item_community, len(dataset.community_ids)),
            [f"community:{c}" for c in dataset.community_ids],
        ),
    ]
    user_features, user_names = _assemble(user_blocks)
    item_features, item_names = _assemble(item_blocks)
    return Features(user_features, item_features, user_names, item_names)


def _vocabulary(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct values and, for each value, its index in them."""
    distinct, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return distinct.tolist(), inverse.astype(np.int64)


def _tag_pairs(item_tags: Iterable[tuple[str, ...]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The sorted tag vocabulary and the (item, tag index) pair of every tag of every post."""
    counts = np.fromiter((len(t) for t in item_tags), dtype=np.int64)
    flat = [tag for tags in item_tags for tag in tags]
    if not flat:
        return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tags, cols = _vocabulary(flat)
    return tags, np.repeat(np.arange(len(counts)), counts), cols


def _identity(n: int) -> sp.csr_matrix:
    return sp.identity(n, dtype=np.float32, format="csr")


def _one_per_row(cols: np.ndarray, num_cols: int) -> sp.csr_matrix:
    return _binary(np.arange(len(cols)), cols, (len(cols), num_cols))


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A 0/1 matrix with a 1 at each (row, col); a pair listed twice (a tag repeated on a post) is one 1."""
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _assemble(blocks: list[tuple[sp.csr_matrix, list[str]]]) -> tuple[sp.csr_matrix, list[str]]:
    """Stack the column blocks side by side and normalise every row to sum to 1."""
    matrix = sp.hstack([block for block, _ in blocks], format="csr", dtype=np.float32)
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    # Every row has its identity feature, so no sum is zero.
    matrix = sp.csr_matrix(sp.diags((1.0 / row_sums).astype(np.float32)) @ matrix, dtype=np.float32)
    matrix.sort_indices()
    names = [name for _, block_names in blocks for name in block_names]
    return matrix, names
