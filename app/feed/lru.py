"""A small thread-safe LRU map: the feed's per-worker memories (versions, pools, computed rankings)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from app.teardown import release_gradually


class Lru:
    """Up to ``capacity`` values, the least recently used dropped first. Values are never None."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)

    def clear(self) -> None:
        """Drop every value at once for the callers; they are freed in the background (:mod:`app.teardown`)."""
        with self._lock:
            dropped, self._values = self._values, OrderedDict()
        release_gradually(dropped)

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value of ``key``, made (outside the lock) and kept if missing."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value
