"""Feature matrices: identity, role, follows, tags and community columns, normalised rows."""

from __future__ import annotations

import numpy as np
import pytest

from ml.features import build_features
from testing.factories import make_dataset


@pytest.fixture
def dataset():
    return make_dataset(
        users=[("u1", "fan"), ("u2", "artist"), ("u3", "fan")],
        posts=[("p1", "bts", "u2", "dance|mv|dance"), ("p2", "blackpink", "", ""), ("p3", "bts", "u1", "mv")],
        interactions=[("u1", "p1", "view", "2026-02-01T00:00:00Z")],
        follows=[("u1", "bts"), ("u1", "blackpink"), ("u3", "bts")],
    )


def _row(matrix, names, index):
    row = matrix.getrow(index)
    return {names[j]: float(v) for j, v in zip(row.indices, row.data, strict=True)}


def test_user_features_are_identity_role_and_follows(dataset):
    features = build_features(dataset)
    assert features.user_features.shape == (3, 3 + 2 + 2)
    assert features.user_feature_names == [
        "user:u1", "user:u2", "user:u3", "role:artist", "role:fan", "follows:bts", "follows:blackpink",
    ]  # fmt: skip
    assert _row(features.user_features, features.user_feature_names, 0) == pytest.approx(
        {"user:u1": 0.25, "role:fan": 0.25, "follows:bts": 0.25, "follows:blackpink": 0.25}
    )
    # A user with no follows and no interactions still has its identity and role.
    assert _row(features.user_features, features.user_feature_names, 1) == {"user:u2": 0.5, "role:artist": 0.5}


def test_item_features_are_identity_tags_and_community(dataset):
    features = build_features(dataset)
    names = features.item_feature_names
    assert names == ["post:p1", "post:p2", "post:p3", "tag:dance", "tag:mv", "community:bts", "community:blackpink"]
    # A tag repeated on a post counts once.
    assert _row(features.item_features, names, 0) == pytest.approx(
        {"post:p1": 0.25, "tag:dance": 0.25, "tag:mv": 0.25, "community:bts": 0.25}
    )
    assert _row(features.item_features, names, 1) == {"post:p2": 0.5, "community:blackpink": 0.5}


def test_feature_matrices_are_float32_csr_with_rows_summing_to_one(dataset):
    features = build_features(dataset)
    for matrix in (features.user_features, features.item_features):
        assert matrix.format == "csr" and matrix.dtype == np.float32
        assert matrix.has_sorted_indices
        np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-6)


def test_dataset_without_tags_or_follows():
    dataset = make_dataset(
        users=[("u1", ""), ("u2", "")],
        posts=[("p1", "bts", "", ""), ("p2", "bts", "", "")],
        interactions=[],
        communities=("bts",),
    )
    features = build_features(dataset)
    assert features.user_feature_names == ["user:u1", "user:u2", "role:", "follows:bts"]
    assert features.item_feature_names == ["post:p1", "post:p2", "community:bts"]
    assert features.user_features.nnz == 4 and features.item_features.nnz == 4
