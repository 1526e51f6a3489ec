"""ml.sets gives numpy's answers (np.unique, np.isin) for the integer keys the training code builds."""

from __future__ import annotations

import numpy as np
import pytest

from ml import sets


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("size, distinct", [(0, 1), (1, 1), (1000, 10), (100_000, 10**12)])
def test_unique_is_numpys(size, distinct, dtype):
    rng = np.random.default_rng(size)
    values = rng.integers(-(distinct // 2), distinct, size).astype(dtype)

    found = sets.unique(values)

    assert found.dtype == values.dtype
    np.testing.assert_array_equal(found, np.unique(values))


def test_unique_flattens_and_leaves_its_input_alone():
    values = np.array([[3, 1], [3, 2]], dtype=np.int64)
    np.testing.assert_array_equal(sets.unique(values), [1, 2, 3])
    np.testing.assert_array_equal(values, [[3, 1], [3, 2]])


@pytest.mark.parametrize("of_size", [0, 1, 50, 20_000])
def test_isin_is_numpys_for_any_shape_and_mixed_widths(of_size):
    rng = np.random.default_rng(of_size)
    of = rng.integers(0, 5_000, of_size).astype(np.int32)
    values = rng.integers(-10, 5_010, (300, 7)).astype(np.int64)  # below, among and above the members

    found = sets.isin(values, of)

    assert found.shape == values.shape and found.dtype == bool
    np.testing.assert_array_equal(found, np.isin(values, of))


def test_in_sorted_takes_the_members_as_unique_gives_them():
    rng = np.random.default_rng(5)
    of = rng.integers(0, 5_000, 20_000).astype(np.int64)
    values = rng.integers(-10, 5_010, (300, 7)).astype(np.int64)

    np.testing.assert_array_equal(sets.in_sorted(values, sets.unique(of)), np.isin(values, of))
    assert not sets.in_sorted(values, sets.unique(of[:0])).any()
