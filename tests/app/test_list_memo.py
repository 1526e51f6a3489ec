"""The worker's memo of lists read from Redis: bounded, least recently used first out, one version at a time."""

from __future__ import annotations

import numpy as np

from app.list_memo import ListMemo


def ranked(seed: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([seed, seed + 1], dtype=np.int32), np.array([0.9, 0.5], dtype=np.float32)


def test_a_stored_list_is_returned_for_its_version_only():
    memo = ListMemo(10)
    memo.put("v1", "alice", ranked(1))
    items, _ = memo.get("v1", "alice")
    assert items.tolist() == [1, 2]
    assert memo.get("v2", "alice") is None
    assert memo.get("v1", "bob") is None


def test_the_least_recently_used_user_is_dropped_at_capacity():
    memo = ListMemo(2)
    memo.put("v1", "alice", ranked(1))
    memo.put("v1", "bob", ranked(2))
    assert memo.get("v1", "alice") is not None  # alice is now the most recently used
    memo.put("v1", "carol", ranked(3))
    assert len(memo) == 2
    assert memo.get("v1", "bob") is None
    assert memo.get("v1", "alice") is not None and memo.get("v1", "carol") is not None


def test_a_new_version_replaces_every_list_of_the_old_one():
    memo = ListMemo(10)
    memo.put("v1", "alice", ranked(1))
    memo.put("v1", "bob", ranked(2))
    memo.put("v2", "alice", ranked(5))
    assert len(memo) == 1
    assert memo.get("v1", "bob") is None
    assert memo.get("v2", "alice")[0].tolist() == [5, 6]


def test_capacity_zero_turns_it_off():
    memo = ListMemo(0)
    memo.put("v1", "alice", ranked(1))
    assert len(memo) == 0 and memo.get("v1", "alice") is None
