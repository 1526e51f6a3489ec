"""The lists a web worker has read from Redis for the model version it holds, kept in memory (bounded LRU).

A published version's lists never change (a training run writes them all before it flips the pointer), so
a list read once can answer the rest of a user's scroll without another Redis round trip: an infinite
scroll reads the same list once per page. The memo only ever holds one version, the one the worker serves
by default; lists of a version pinned by a client always come from Redis, so a pinned version that expires
is noticed. Storing a list of another version (the worker swapped models) first empties the memo.

``API_LIST_MEMO_USERS`` bounds it (about 1 KB per user with 100-item lists); 0 turns it off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from app import metrics
from app.teardown import release_gradually

RankedList = tuple[np.ndarray, np.ndarray]  # (item indices, scores), as RecsCache.user_list returns them


class ListMemo:
    """Up to ``capacity`` users' lists of one version, the least recently used dropped first; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._version: str | None = None
        self._lists: OrderedDict[str, RankedList] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str, user_id: str) -> RankedList | None:
        """The list of ``user_id`` in ``version`` if it is held, else None."""
        if not self.capacity:
            return None
        with self._lock:
            found = self._lists.get(user_id) if version == self._version else None
            if found is not None:
                self._lists.move_to_end(user_id)
        metrics.labelled(metrics.LIST_MEMO, "hit" if found is not None else "miss").inc()
        return found

    def put(self, version: str, user_id: str, ranked: RankedList) -> None:
        """Remember a list read from Redis; a new ``version`` replaces everything held."""
        if not self.capacity:
            return
        dropped: OrderedDict[str, RankedList] | None = None
        with self._lock:
            if version != self._version:
                dropped, self._lists = self._lists, OrderedDict()
                self._version = version
            self._lists[user_id] = ranked
            self._lists.move_to_end(user_id)
            if len(self._lists) > self.capacity:
                self._lists.popitem(last=False)
        if dropped is not None:
            release_gradually(dropped)  # the former version's lists, freed in the background

    def __len__(self) -> int:
        return len(self._lists)
