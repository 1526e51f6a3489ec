"""Training: interaction weights, exclusions, popularity, the fit and its refusals."""

from __future__ import annotations

import dataclasses

import lightfm._lightfm_fast
import numpy as np
import pytest

from ml.errors import TrainingError
from ml.features import build_features
from ml.settings import TrainingSettings
from ml.training import exclusions, fit, interaction_weights, popularity, to_rec_model, train
from testing.factories import make_dataset, planted_dataset

FAST = TrainingSettings(components=8, epochs=5, num_threads=1, half_life_days=0.0)


@pytest.fixture
def dataset():
    day = "2026-02-{:02d}T00:00:00Z".format
    return make_dataset(
        users=[("u1", "fan"), ("u2", "fan"), ("u3", "artist"), ("lurker", "fan")],
        posts=[("p1", "bts", "u3", "mv"), ("p2", "bts", "", "dance"), ("p3", "blackpink", "u1", "mv|live")],
        interactions=[
            ("u1", "p1", "view", day(1)),
            ("u1", "p1", "view", day(2)),
            ("u1", "p1", "like", day(3)),
            ("u1", "p2", "view", day(8)),
            ("u2", "p1", "comment", day(1)),
            ("u2", "p3", "view", day(15)),
            ("u3", "p2", "like", day(15)),
        ],
        follows=[("lurker", "blackpink")],
    )


def _weights(dataset, **params):
    matrix = interaction_weights(dataset, dataclasses.replace(FAST, **params)).tocsr()
    return {
        (dataset.user_ids[u], dataset.item_ids[i]): float(matrix[u, i]) for u, i in zip(*matrix.nonzero(), strict=True)
    }


def test_repeated_interactions_weigh_as_their_strongest_type(dataset):
    assert _weights(dataset, weight_view=1.0, weight_like=2.0, weight_comment=3.0) == {
        ("u1", "p1"): 2.0,  # two views and a like
        ("u1", "p2"): 1.0,
        ("u2", "p1"): 3.0,
        ("u2", "p3"): 1.0,
        ("u3", "p2"): 2.0,
    }


def test_zero_weight_types_are_left_out(dataset):
    weights = _weights(dataset, weight_view=0.0, weight_like=5.0, weight_comment=7.0)
    assert weights == {("u1", "p1"): 5.0, ("u2", "p1"): 7.0, ("u3", "p2"): 5.0}


def test_time_decay_halves_per_half_life_before_the_newest_interaction(dataset):
    weights = _weights(dataset, weight_view=1.0, weight_like=2.0, weight_comment=4.0, half_life_days=7.0)
    assert weights[("u3", "p2")] == pytest.approx(2.0)  # the newest interaction: no decay
    assert weights[("u1", "p2")] == pytest.approx(0.5)  # 7 days older
    assert weights[("u2", "p1")] == pytest.approx(4.0 * 0.5**2)  # 14 days older
    # The like (12 days old) beats the older views and is decayed itself.
    assert weights[("u1", "p1")] == pytest.approx(2.0 * 0.5 ** (12 / 7))


def test_exclusions_are_interacted_and_authored_posts(dataset):
    matrix = exclusions(dataset)
    got = {(dataset.user_ids[u], dataset.item_ids[i]) for u, i in zip(*matrix.nonzero(), strict=True)}
    interacted = {("u1", "p1"), ("u1", "p2"), ("u2", "p1"), ("u2", "p3"), ("u3", "p2")}
    assert got == interacted | {("u3", "p1"), ("u1", "p3")}


def test_popularity_counts_distinct_users_and_prefers_newer_posts_on_ties(dataset):
    items, scores = popularity(dataset)
    assert [dataset.item_ids[i] for i in items] == ["p2", "p1", "p3"]  # p1 and p2 have 2 users; p2 is newer
    np.testing.assert_array_equal(scores, [2, 2, 1])


def test_train_covers_every_user_and_scores_like_lightfm_predict(dataset):
    features = build_features(dataset)
    estimator = fit(interaction_weights(dataset, FAST), features, FAST)
    model = to_rec_model(dataset, features, estimator)
    assert model.user_ids == dataset.user_ids and model.item_ids == dataset.item_ids
    assert model.user_embeddings.shape == (4, 8) and model.item_embeddings.shape == (3, 8)
    assert model.item_community_ids == ["bts", "bts", "blackpink"]
    assert model.item_tags == [("mv",), ("dance",), ("mv", "live")]
    users, items = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    expected = estimator.predict(
        users.ravel(), items.ravel(), user_features=features.user_features, item_features=features.item_features
    )
    lurker = model.user_index("lurker")  # no interactions: ranked from its features alone
    top_items, top_scores = model.top_k([lurker], 3)
    np.testing.assert_allclose(top_scores[0], expected.reshape(4, 3)[lurker, top_items[0]], rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(top_scores[0]) <= 0)


def test_train_is_reproducible_with_one_thread(dataset):
    first, second = train(dataset, FAST), train(dataset, FAST)
    np.testing.assert_array_equal(first.item_embeddings, second.item_embeddings)
    np.testing.assert_array_equal(first.user_biases, second.user_biases)


@pytest.mark.parametrize("loss", ["warp", "bpr", "logistic", "warp-kos"])
def test_every_configurable_loss_trains(loss):
    dataset = planted_dataset(num_users=60, num_items=50, per_user=8)
    model = train(dataset, dataclasses.replace(FAST, loss=loss))
    assert np.isfinite(model.item_embeddings).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: dataclasses.replace(d, user_ids=d.user_ids[:1], user_roles=d.user_roles[:1],
                                       inter_user=d.inter_user[:0], inter_item=d.inter_item[:0],
                                       inter_type=d.inter_type[:0], inter_time=d.inter_time[:0],
                                       follow_user=d.follow_user[:0], follow_community=d.follow_community[:0],
                                       item_author=np.full(3, -1, dtype=np.int32)),
         "1 user"),
        (lambda d: dataclasses.replace(d, inter_user=d.inter_user[:0], inter_item=d.inter_item[:0],
                                       inter_type=d.inter_type[:0], inter_time=d.inter_time[:0]),
         "no interactions to learn from"),
    ],
    ids=["one-user", "no-interactions"],
)  # fmt: skip
def test_degenerate_data_is_refused(dataset, change, message):
    with pytest.raises(TrainingError, match=message):
        train(change(dataset), FAST)


def test_one_post_is_refused():
    dataset = make_dataset(
        users=[("u1", "fan"), ("u2", "fan")],
        posts=[("p1", "bts", "", "")],
        interactions=[("u1", "p1", "like", "2026-02-01T00:00:00Z")],
    )
    with pytest.raises(TrainingError, match="2 users and 2 posts"):
        train(dataset, FAST)


def test_all_weights_zero_is_refused(dataset):
    params = dataclasses.replace(FAST, weight_view=0.0, weight_like=0.0, weight_comment=0.0)
    with pytest.raises(TrainingError, match="no interaction has a positive weight"):
        train(dataset, params)


@pytest.mark.parametrize(
    "params",
    [
        dataclasses.replace(FAST, loss="logistic", learning_rate=10.0, weight_view=1000.0, weight_like=1000.0),
        dataclasses.replace(FAST, loss="warp", learning_rate=1e6, epochs=10),
    ],
    ids=["nan-in-fit", "finite-but-diverged"],
)
def test_diverged_fit_is_an_error_not_a_model(dataset, params):
    with pytest.raises(TrainingError, match="fit"):
        train(dataset, params)


def test_lightfm_runs_its_openmp_build():
    # The fallback build ignores num_threads; the OpenMP one is what makes multi-threaded training work.
    assert lightfm._lightfm_fast.fit_warp.__module__ == "lightfm._lightfm_fast_openmp"
