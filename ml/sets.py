"""Sets of integer keys (user × post pairs, users) at the scale of tens of millions, by sorting.

numpy 2.3's ``np.unique`` of values alone (no index, inverse or counts) uses a hash table, and ``np.isin``
calls it on its second argument. With many distinct values that is far slower than sorting: on the 2-core
benchmark machine, 18M distinct int64 pair keys took 25.8 s against 0.31 s, and 18M user ids with 1M distinct
values 1.1 s against 0.2 s (``benchmarks/sets.py``, docs/PERFORMANCE.md). At a million users the warm start's
evaluation and the popularity ranking spent most of their time there, so the training code takes its sets from
here.
"""

from __future__ import annotations

import numpy as np


def unique(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array (``np.unique(values)``), by sorting a flat copy."""
    ordered = np.sort(np.asarray(values).ravel())
    if not len(ordered):
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def isin(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Which of ``values`` (an integer array of any shape) are in ``of``: ``np.isin(values, of)``."""
    return in_sorted(values, unique(of))


def in_sorted(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """:func:`isin` for ``members`` already sorted and distinct (as :func:`unique` gives them): no second sort."""
    values = np.asarray(values)
    if not len(members):
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values
