"""Representations of posts and users the model has never seen, built from the model's feature embeddings."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from ml import artifact
from ml.features import build_features
from ml.settings import TrainingSettings
from ml.training import fit, interaction_weights, to_rec_model
from testing.factories import planted_dataset, random_model

PARAMS = TrainingSettings(components=16, epochs=20, num_threads=1, half_life_days=0.0, seed=3)
GROUPS = 4


@pytest.fixture(scope="module")
def fitted():
    """(dataset, features, estimator, model) of the planted fandoms: group g's posts carry tag topic<g>."""
    dataset = planted_dataset(groups=GROUPS)
    features = build_features(dataset)
    estimator = fit(interaction_weights(dataset, PARAMS), features, PARAMS)
    return dataset, features, estimator, to_rec_model(dataset, features, estimator)


def _row(names, vocabulary, identities):
    """One LightFM feature row over the full training vocabulary: ``names`` weighted equally, no identity."""
    columns = [vocabulary.index(name) for name in names]
    data = np.full(len(columns), 1.0 / len(columns), dtype=np.float32)
    return sp.csr_matrix((data, ([0] * len(columns), columns)), shape=(1, len(vocabulary)))


def test_model_keeps_the_used_non_identity_features(fitted):
    dataset, _, _, model = fitted
    assert set(model.item_feature_names) >= {f"community:g{g}" for g in range(GROUPS)} | {"tag:topic0"}
    assert not any(name.startswith("post:") for name in model.item_feature_names)
    assert set(model.user_feature_names) == {"role:fan", "role:artist"} | {f"follows:g{g}" for g in range(GROUPS)}
    assert model.item_feature_embeddings.shape == (len(model.item_feature_names), PARAMS.components)
    assert model.user_feature_biases.shape == (len(model.user_feature_names),)


def test_a_new_posts_representation_scores_as_lightfm_predict_without_identity(fitted):
    dataset, features, estimator, model = fitted
    tags, community = ("topic2", "noise7", "never-seen-tag"), "g2"
    embeddings, biases, known = model.item_representations([tags], [community], calibrated=False)
    assert known.tolist() == [True]
    row = _row(["tag:topic2", "tag:noise7", "community:g2"], features.item_feature_names, dataset.num_items)
    users = np.arange(dataset.num_users, dtype=np.int32)
    expected = estimator.predict(
        users, np.zeros(len(users), dtype=np.int32), user_features=features.user_features, item_features=row
    )
    ours = model.user_embeddings @ embeddings[0] + biases[0] + model.user_biases
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_a_new_users_representation_scores_as_lightfm_predict_without_identity(fitted):
    dataset, features, estimator, model = fitted
    embedding, bias = model.user_representation("fan", ["g1", "g3", "unknown-community"])
    row = _row(["role:fan", "follows:g1", "follows:g3"], features.user_feature_names, dataset.num_users)
    expected = estimator.predict(
        np.zeros(dataset.num_items, dtype=np.int32),
        np.arange(dataset.num_items, dtype=np.int32),
        user_features=row,
        item_features=features.item_features,
    )
    items, scores = model.rank_representation(embedding, model.num_items, bias=bias)
    np.testing.assert_allclose(scores, expected[items], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(scores) <= 0)
    assert sorted(items.tolist()) == list(range(model.num_items))


def test_posts_without_any_known_feature_are_not_known(fitted):
    model = fitted[3]
    embeddings, biases, known = model.item_representations([("nope",), (), ("topic1",)], ["zz", "zz", "zz"])
    assert known.tolist() == [False, False, True]
    assert not embeddings[:2].any() and not biases[:2].any()


def test_users_without_any_known_feature_get_no_representation(fitted):
    model = fitted[3]
    assert model.user_representation(None, []) is None
    assert model.user_representation("", ["unknown"]) is None
    assert model.user_representation("astronaut", []) is None
    assert model.user_representation(None, ["g0"]) is not None


def test_representation_is_the_same_whatever_the_order_and_repeats_of_tags(fitted):
    model = fitted[3]
    first = model.item_representations([("topic1", "noise3")], ["g1"])
    second = model.item_representations([("noise3", "topic1", "topic1")], ["g1"])
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_item_representations_are_vectorised_over_posts(fitted):
    model = fitted[3]
    tags = [("topic0",), ("topic1", "noise2"), ("zz",), ("topic3",)]
    communities = ["g0", "g1", "zz", "g2"]
    together = model.item_representations(tags, communities)
    for i in range(len(tags)):
        alone = model.item_representations([tags[i]], [communities[i]])
        np.testing.assert_allclose(together[0][i], alone[0][0], rtol=1e-6)
        assert together[1][i] == pytest.approx(alone[1][0]) and together[2][i] == alone[2][0]


def test_calibrated_fresh_posts_score_on_the_scale_of_trained_posts(fitted):
    """A trained post rebuilt from its features alone scores, calibrated, like the post itself on average,
    and a fresh post of a user's own fandom lands in that user's first page of trained posts."""
    dataset, _, _, model = fitted
    tags = [list(t) for t in dataset.item_tags]
    communities = [dataset.community_ids[c] for c in dataset.item_community]
    embeddings, biases, _ = model.item_representations(tags, communities)
    full = model.user_embeddings @ model.item_embeddings.T + model.item_biases
    fresh = model.user_embeddings @ embeddings.T + biases
    assert fresh.mean() == pytest.approx(full.mean(), abs=0.1 * float(full.std()))
    assert 0.5 < fresh.std() / full.std() <= 1.0  # a conditional expectation: never more spread than the truth
    user_group = np.arange(dataset.num_users) % GROUPS
    own = user_group[:, None] == (np.arange(dataset.num_items) % GROUPS)[None, :]
    assert abs(fresh[own].mean() - full[own].mean()) < 0.1 * full.std()
    best_own_fresh = np.where(own, fresh, -np.inf).max(axis=1)
    rank_among_trained = (full > best_own_fresh[:, None]).sum(axis=1)
    assert np.median(rank_among_trained) < 25


def test_rank_representation_excludes_and_cuts(fitted):
    model = fitted[3]
    embedding, bias = model.user_representation("fan", ["g0"])
    everything, _ = model.rank_representation(embedding, model.num_items)
    items, scores = model.rank_representation(embedding, 5, exclude=everything[:3], bias=bias)
    assert items.tolist() == everything[3:8].tolist()
    assert items.dtype == np.int32 and scores.dtype == np.float32
    assert len(model.rank_representation(embedding, 5, exclude=everything)[0]) == 0
    with pytest.raises(ValueError, match="dimension"):
        model.rank_representation(np.zeros(3, dtype=np.float32), 5)


def test_features_survive_the_artifact(fitted, tmp_path):
    model = fitted[3]
    artifact.save(model, tmp_path, {})
    loaded, _ = artifact.load(tmp_path)
    assert loaded.item_feature_names == model.item_feature_names
    assert loaded.user_feature_names == model.user_feature_names
    for name in ("item_feature_embeddings", "item_feature_biases", "user_feature_embeddings",
                 "user_feature_biases", "fresh_calibration"):  # fmt: skip
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    query = ([("topic1", "noise2")], ["g1"])
    np.testing.assert_array_equal(loaded.item_representations(*query)[0], model.item_representations(*query)[0])


def test_an_artifact_without_features_still_loads_and_represents_nothing(fitted, tmp_path):
    """An artifact written before the feature arrays existed: it loads, and no new post or user gets a score."""
    version = artifact.save(fitted[3], tmp_path, {})
    npz_path, json_path = tmp_path / f"{version}.npz", tmp_path / f"{version}.json"
    with np.load(npz_path) as archive:
        arrays = {name: archive[name] for name in archive.files if "feature" not in name and "calibration" not in name}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz_path.write_bytes(buffer.getvalue())
    document = json.loads(json_path.read_text())
    document["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    document["arrays"] = {name: spec for name, spec in document["arrays"].items() if name in arrays}
    json_path.write_text(json.dumps(document))
    loaded, _ = artifact.load(tmp_path)
    assert loaded.item_feature_names == [] and loaded.item_feature_embeddings.shape == (0, PARAMS.components)
    assert loaded.item_representations([("topic1",)], ["g1"])[2].tolist() == [False]
    assert loaded.user_representation("fan", ["g1"]) is None
    np.testing.assert_array_equal(loaded.top_k([0, 1], 5)[0], fitted[3].top_k([0, 1], 5)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"item_feature_names": ["tag:a"]}, "item_feature_embeddings has 0 rows, expected 1"),
        (
            {"user_feature_names": ["role:a"], "user_feature_embeddings": np.zeros((1, 4), np.float32),
             "user_feature_biases": np.zeros(2, np.float32)},
            "user_feature_biases has 2 rows",
        ),
        (
            {"item_feature_names": ["tag:a"], "item_feature_embeddings": np.zeros((1, 3), np.float32),
             "item_feature_biases": np.zeros(1, np.float32)},
            "item_feature_embeddings have dimension 3",
        ),
        ({"fresh_calibration": np.array([-1.0, 0.0], np.float32)}, "positive scale"),
    ],
    ids=["missing-arrays", "bias-count", "dimension", "calibration"],
)  # fmt: skip
def test_inconsistent_feature_arrays_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(random_model(dim=4), **change)
