"""A worker's memories are emptied at once for their readers and freed in the background, a slice at a time."""

from __future__ import annotations

import threading
import time

import numpy as np

from app.feed.lru import Lru
from app.list_memo import ListMemo
from app.teardown import release_gradually


class Tracked:
    """A value that notes which thread freed it."""

    freed_by: list[str] = []

    def __del__(self):
        Tracked.freed_by.append(threading.current_thread().name)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_release_gradually_frees_every_entry_off_the_callers_thread():
    Tracked.freed_by = []
    release_gradually({i: Tracked() for i in range(2000)})
    assert wait_for(lambda: len(Tracked.freed_by) == 2000)
    assert set(Tracked.freed_by) == {"release"}


def test_a_cleared_lru_is_empty_at_once_and_its_values_are_freed_in_the_background():
    Tracked.freed_by = []
    lru = Lru(100)
    for i in range(100):
        lru.put(i, Tracked())
    lru.clear()
    assert all(lru.get(i) is None for i in range(100))
    lru.put("new", 1)
    assert lru.get("new") == 1
    assert wait_for(lambda: len(Tracked.freed_by) == 100)
    assert set(Tracked.freed_by) == {"release"}


def test_a_new_version_frees_the_memos_former_lists_in_the_background():
    Tracked.freed_by = []
    memo = ListMemo(50)
    for i in range(50):  # the memo holds the only references to the Tracked values
        memo.put("v1", f"u{i}", (np.arange(3), np.zeros(3, dtype=np.float32), Tracked()))  # type: ignore[arg-type]
    memo.put("v2", "u0", (np.arange(3), np.zeros(3, dtype=np.float32)))
    assert memo.get("v1", "u1") is None and len(memo) == 1
    assert wait_for(lambda: len(Tracked.freed_by) == 50)
    assert set(Tracked.freed_by) == {"release"}
