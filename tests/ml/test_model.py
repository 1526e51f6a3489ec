"""RecModel: the vectorised top-K against a brute-force reference, exclusions, padding, popularity."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest

import ml.model
from ml.model import FENCE_STRIDE, RecModel, check_sorted, pack_strings
from testing.factories import brute_force_top_k, random_model

FLOAT32_ROUNDING = 1e-6  # a few float32 ulps, relative


@pytest.mark.parametrize(
    ("num_items", "k"),
    [(9, 3), (9, 9), (2000, 10), (2000, 100), (5003, 37)],
    ids=["few-items", "k-equals-items", "grouped-k10", "grouped-k100", "grouped-odd-sizes"],
)
def test_top_k_matches_brute_force(num_items, k):
    rng = np.random.default_rng(1)
    exclude = {u: rng.choice(num_items, size=min(5, num_items - 1), replace=False).tolist() for u in range(0, 40, 2)}
    model = random_model(num_users=40, num_items=num_items, dim=8, seed=2, exclude=exclude)
    items, scores = model.top_k(np.arange(40), k)
    assert items.shape == scores.shape == (40, k)
    assert items.dtype == np.int32 and scores.dtype == np.float32
    for user in range(40):
        expected_items, expected_scores = brute_force_top_k(model, user, k)
        got = [i for i in items[user].tolist() if i >= 0]
        assert got == expected_items, f"user {user}"
        np.testing.assert_allclose(scores[user, : len(got)], expected_scores, rtol=1e-5, atol=1e-5)


def test_top_k_never_returns_excluded_items():
    exclude = {0: [0, 1, 2, 3], 3: list(range(0, 2000, 3))}
    model = random_model(num_users=4, num_items=2000, dim=6, seed=3, exclude=exclude)
    items, _ = model.top_k([0, 3], 100)
    assert not set(items[0].tolist()) & {0, 1, 2, 3}
    assert not set(items[1].tolist()) & set(range(0, 2000, 3))


def test_top_k_pads_when_fewer_candidates_than_k():
    model = random_model(num_users=2, num_items=5, exclude={1: [0, 2, 4]})
    items, scores = model.top_k([1, 0], 8)
    assert sorted(items[0, :2].tolist()) == [1, 3]
    assert (items[0, 2:] == -1).all() and np.isnan(scores[0, 2:]).all()
    assert sorted(items[1, :5].tolist()) == [0, 1, 2, 3, 4]
    assert (items[1, 5:] == -1).all() and np.isnan(scores[1, 5:]).all()
    assert np.isfinite(scores[1, :5]).all()


def test_top_k_pads_in_the_grouped_selection_too():
    # 2000 items and k=100 take the grouped path; user 0 may only see 50 items.
    allowed = set(range(0, 2000, 40))
    model = random_model(num_users=2, num_items=2000, exclude={0: [i for i in range(2000) if i not in allowed]})
    items, scores = model.top_k([0], 100)
    assert set(items[0, :50].tolist()) == allowed
    assert (items[0, 50:] == -1).all() and np.isnan(scores[0, 50:]).all()
    assert np.all(np.diff(scores[0, :50]) <= 0)


def test_top_k_with_every_score_tied():
    model = random_model(num_users=3, num_items=3000, exclude={1: [5, 6, 7]})
    tied = dataclasses.replace(
        model,
        item_embeddings=np.ones_like(model.item_embeddings),
        item_biases=np.zeros_like(model.item_biases),
    )
    items, scores = tied.top_k([0, 1, 2], 60)
    for row, user in enumerate([0, 1, 2]):
        assert len(set(items[row].tolist())) == 60 and items[row].min() >= 0
        assert not set(items[row].tolist()) & set(tied.excluded_items(user).tolist())
        np.testing.assert_allclose(scores[row], scores[row, 0], rtol=1e-6)


def test_one_users_ranking_breaks_ties_by_index_so_a_deeper_one_extends_it():
    """A page's continuation may be ranked deeper later (app.feed.ranked.Extended): its first k must not
    change with how deep it was ranked, ties included."""
    model = random_model(num_users=2, num_items=3000, exclude={1: [5, 6, 7]})
    tied = dataclasses.replace(  # every score tied but for a few
        model,
        item_embeddings=np.ones_like(model.item_embeddings),
        item_biases=np.where(np.arange(3000) % 500 == 3, 1.0, 0.0).astype(np.float32),
    )
    for user in (0, 1):
        deep, _ = tied.top_k([user], 1000)
        allowed = [i for i in range(3000) if i not in tied.excluded_items(user)]
        expected = [i for i in allowed if i % 500 == 3] + [i for i in allowed if i % 500 != 3]
        assert deep[0].tolist() == expected[:1000]
        for k in (1, 6, 7, 60, 999):
            assert tied.top_k([user], k)[0][0].tolist() == expected[:k]
    embedding = np.ones(tied.num_components, dtype=np.float32)
    items, _ = tied.rank_representation(embedding, 60, exclude=np.array([3, 4]))
    assert items.tolist() == [503, 1003, 1503, 2003, 2503] + [i for i in range(3000) if i % 500 != 3 and i != 4][:55]


def test_top_k_is_the_same_in_small_blocks(monkeypatch):
    model = random_model(num_users=50, num_items=3000, dim=8, seed=4, exclude={7: [1, 2, 3], 49: [0]})
    whole_items, whole_scores = model.top_k(np.arange(50), 20)
    monkeypatch.setattr(ml.model, "BLOCK_ELEMENTS", 3000 * 3)  # three users per block
    items, scores = model.top_k(np.arange(50), 20)
    np.testing.assert_array_equal(items, whole_items)
    # OpenBLAS may sum a product's terms in another order for another block shape: the last bit can differ.
    np.testing.assert_allclose(scores, whole_scores, rtol=FLOAT32_ROUNDING)


def test_top_k_is_the_same_on_several_threads(monkeypatch):
    model = random_model(num_users=60, num_items=2500, dim=8, seed=6, exclude={3: [0, 5], 59: [7]})
    monkeypatch.setattr(ml.model, "BLOCK_ELEMENTS", 2500 * 4)  # 15 blocks
    alone_items, alone_scores = model.top_k(np.arange(60), 30, num_threads=1)
    items, scores = model.top_k(np.arange(60), 30, num_threads=3)
    np.testing.assert_array_equal(items, alone_items)
    np.testing.assert_allclose(scores, alone_scores, rtol=FLOAT32_ROUNDING)


def test_top_k_in_the_order_asked_with_repeats():
    model = random_model(num_users=5, num_items=30, seed=5)
    items, _ = model.top_k([4, 0, 4], 5)
    np.testing.assert_array_equal(items[0], items[2])
    np.testing.assert_array_equal(items[1], model.top_k([0], 5)[0][0])


def test_top_k_refuses_bad_arguments():
    model = random_model(num_users=3)
    with pytest.raises(ValueError, match="out of range"):
        model.top_k([3], 5)
    with pytest.raises(ValueError, match="out of range"):
        model.top_k([-1], 5)
    with pytest.raises(ValueError, match="k must be"):
        model.top_k([0], 0)
    items, scores = model.top_k([], 5)
    assert items.shape == scores.shape == (0, 5)


def test_user_index():
    model = random_model(num_users=3)
    assert model.user_index("user-2") == 2
    assert model.user_index("nobody") is None


def test_popular_skips_excluded_items():
    model = random_model(num_items=9)
    items, scores = model.popular(4)
    np.testing.assert_array_equal(items, model.popular_items[:4])
    np.testing.assert_array_equal(scores, model.popular_scores[:4])
    excluded = model.popular_items[[0, 2]].tolist()
    items, _ = model.popular(9, exclude=excluded)
    assert len(items) == 7
    assert not set(items.tolist()) & set(excluded)
    np.testing.assert_array_equal(items, [i for i in model.popular_items if i not in excluded])


def test_popular_with_exclusions_reads_only_the_head_it_needs_and_gives_the_same_list():
    """Only the first k + len(exclude) popular items can be in the answer (the evaluation asks once per user,
    so scanning every item each time cost minutes at 100,000 posts); the list is that of filtering them all."""
    model = random_model(num_items=50)
    rng = np.random.default_rng(3)
    ranked = model.popular_items.tolist()
    for k in (1, 5, 20, 50):
        for size in (0, 1, 3, 10, 49, 50):
            excluded = rng.choice(50, size, replace=False).tolist()
            excluded += excluded[: size // 2]  # repeats, as a user's train posts may have
            items, scores = model.popular(k, exclude=np.asarray(excluded))
            expected = [i for i in ranked if i not in excluded][:k]
            np.testing.assert_array_equal(items, expected)
            np.testing.assert_array_equal(scores, model.popular_scores[[ranked.index(i) for i in expected]])
    items, _ = model.popular(3, exclude=[999, -1])  # ids no item has change nothing
    np.testing.assert_array_equal(items, ranked[:3])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_biases": np.zeros(5, dtype=np.float32)}, "user_biases has 5 rows"),
        ({"item_embeddings": np.zeros((9, 3), dtype=np.float32)}, "differ in dimension"),
        ({"user_embeddings": np.zeros((6, 4), dtype=np.float64)}, "must be a float32 array"),
        ({"item_biases": np.full(9, np.nan, dtype=np.float32)}, "item_biases holds NaN or infinite"),
        ({"exclude_indices": np.array([0, 99], dtype=np.int32)}, "exclude_indptr is not a valid CSR"),
        ({"popular_items": np.zeros(9, dtype=np.int32)}, "every item index exactly once"),
        ({"item_tags": [()]}, "one entry per item"),
        ({"user_ids": ["a", "a", "b", "c", "d", "e"]}, "duplicates"),
    ],
)
def test_inconsistent_model_is_refused(change, message):
    model = random_model()
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(RecModel) if f.init}
    with pytest.raises(ValueError, match=message):
        RecModel(**{**fields, **change})


def test_top_k_of_one_user_ranks_as_the_blocks_do():
    """A web page ranks one user without the block machinery; the ranking is the same."""
    model = random_model(num_users=40, num_items=300, dim=8, seed=3, exclude={1: list(range(0, 300, 2)), 2: []})
    every_items, every_scores = model.top_k(np.arange(40), 20)
    for user in range(40):
        items, scores = model.top_k([user], 20)
        np.testing.assert_array_equal(items[0], every_items[user])
        np.testing.assert_allclose(scores[0], every_scores[user], rtol=1e-5)
    assert not set(model.top_k([1], 300)[0][0][:150].tolist()) & set(range(0, 300, 2))
    items, scores = model.top_k([1], 300)  # fewer candidates than k: padded as the blocks pad
    assert (items[0][150:] == -1).all() and np.isnan(scores[0][150:]).all()


def test_packed_strings_find_every_string_and_refuse_duplicates():
    values = ["b", "유저-1", "a", "🎤", "ab", "", "a\u00e9"]
    packed = pack_strings(values)
    assert len(packed) == len(values) and packed == values and list(packed) == values
    assert [packed.index_of(v) for v in values] == list(range(len(values)))
    assert packed.index_of("c") is None and packed.index_of("a\u00e8") is None
    assert packed[1] == "유저-1" and packed[-1] == "a\u00e9" and packed[1:3] == ["유저-1", "a"]
    with pytest.raises(IndexError):
        packed[len(values)]
    with pytest.raises(ValueError, match="duplicates"):
        pack_strings(["x", "y", "x"])
    assert len(pack_strings([])) == 0 and pack_strings([]).index_of("x") is None
    only_empty = pack_strings([""])  # a blob of no bytes at all
    assert only_empty.index_of("") == 0 and only_empty.index_of("x") is None and list(only_empty) == [""]


def test_packed_strings_find_every_string_of_a_long_list_and_nothing_between_them():
    """Many fence blocks (FENCE_STRIDE): every string is found, a string between two neighbours is not."""
    rng = np.random.default_rng(4)
    values = list(dict.fromkeys(f"{rng.integers(0, 10**6)}-유저" for _ in range(3000)))
    packed = pack_strings(values)
    assert [packed.index_of(v) for v in values] == list(range(len(values)))
    ordered = sorted(values, key=lambda v: v.encode())
    probes = ["", "\x01", ordered[0][:-1], "\uffff", *(v + "\x01" for v in ordered[:: FENCE_STRIDE - 1])]
    assert [packed.index_of(p) for p in probes] == [None] * len(probes)


def test_the_sorted_order_check_reads_every_byte_of_strings_that_share_long_prefixes():
    """``check_sorted`` compares the strings a word of 8 bytes at a time: a pair tied over its first words, a
    string that is a prefix of the next, bytes above 0x7f and any adjacent swap or repeat are told apart."""
    rng = np.random.default_rng(5)
    prefix = "user-0000000-"  # the first word and more are the same in every string
    values = list(dict.fromkeys(prefix + str(rng.integers(0, 10**6)) * int(rng.integers(1, 4)) for _ in range(400)))
    values += [prefix, prefix + "유저", prefix + "유저x", "", "\x7f", "\x80"]
    packed = pack_strings(values)
    ranked = sorted(range(len(values)), key=lambda i: values[i].encode())
    assert packed.order.tolist() == ranked
    check_sorted(packed.blob, packed.offsets, np.array(ranked, np.int32))
    for position in range(len(ranked) - 1):
        swapped = list(ranked)
        swapped[position], swapped[position + 1] = swapped[position + 1], swapped[position]
        with pytest.raises(ValueError, match="duplicates or is not sorted"):
            check_sorted(packed.blob, packed.offsets, np.array(swapped, np.int32))
        repeated = [*ranked[: position + 1], ranked[position], *ranked[position + 2 :]]
        with pytest.raises(ValueError):
            check_sorted(packed.blob, packed.offsets, np.array(repeated, np.int32))


def test_packed_strings_keep_their_recent_lookups_without_keeping_themselves_alive():
    packed = pack_strings([f"user-{i}" for i in range(1000)])
    assert [packed.index_of(f"user-{i}") for i in (7, 7, 999)] == [7, 7, 999] and packed.index_of("nobody") is None
    assert packed.index_of.cache_info().hits == 1  # the second lookup of user-7 searched nothing
    alive = weakref.ref(packed)
    del packed
    assert alive() is None  # freed at once, no collection needed: a swapped-out model's memory goes with it
