"""What a web worker knows of the live state without asking Redis, kept exact by pub/sub.

A page needs the live generation and the user's exclusions. Reading them from Redis on every page would
cost each page a round trip that the precomputed feed did without (its lists are kept in
:class:`app.list_memo.ListMemo`), so the worker's reloader thread subscribes to the live channels
(``RecsCache.subscribe(live=True)``) and keeps this mirror up to date:

- ``live-updates`` carries each new generation (and the live users may have changed with it);
- ``events`` names the users whose exclusions changed: their entries are dropped, and the next page reads them
  (the worker that recorded the events drops them itself first: :meth:`LiveMirror.forget_users`).

An entry read from Redis at Redis time ``as_of`` holds every exclusion that arrived by then, and stays true
until an ``events`` message names the user, so a page answered from it is pinned with cutoff ``as_of``:
exactly what a page reading Redis would have seen. The mirror answers only while the subscription stands:
when it is lost everything is forgotten and pages read Redis until it is back. An answer read while an
``events`` message arrived is not kept (:attr:`epoch`), so a stale read never outlives its invalidation.
Bounded: ``capacity`` users of each kind, least recently used dropped first.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.recs_cache import RecsCache, parse_users_message

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class KnownExclusions:
    """A user's exclusions as Redis had them at ``as_of`` (microseconds), true until the user is announced."""

    as_of: int
    seen: Mapping[str, int]
    shown: Mapping[str, int]


class LiveMirror:
    """The live generation, users' exclusions and live-user records, per worker; thread-safe."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._lock = threading.Lock()
        self._generation: int | None = None  # None: not listening, ask Redis
        self._exclusions: OrderedDict[str, KnownExclusions] = OrderedDict()
        self._live_users: OrderedDict[str, bytes | None] = OrderedDict()
        self.epoch = 0  # goes up with every change a read in flight could miss

    # --- the listener's side (the reloader thread) ---

    def connected(self, generation: int) -> None:
        """The subscription stands (Redis confirmed it) and ``generation`` was read after: start answering."""
        with self._lock:
            self._forget()
            self._generation = generation

    def correct_generation(self, generation: int) -> None:
        """A page found no pool for the held generation and read ``generation`` from Redis: Redis lost its live
        state and began again below it, which the highest-wins rule of the messages would never take."""
        with self._lock:
            if self._generation is not None:
                self.epoch += 1
                self._live_users.clear()
                self._generation = generation

    def disconnected(self) -> None:
        """The subscription is lost: messages may be missed from now on, so answer nothing until reconnected."""
        with self._lock:
            self._forget()
            self._generation = None

    def handle(self, cache: RecsCache, message: Mapping[str, Any] | None) -> bool:
        """Apply a pub/sub message of a live channel; False if it is none of them (e.g. a model update)."""
        if not message or message.get("type") != "message":
            return False
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        if channel == cache.events_channel:
            users = parse_users_message(message)
            if users is None:
                log.warning("ignoring malformed events message %r", message.get("data"))
                return True
            self.forget_users(users)
            return True
        if channel == cache.live_channel:
            try:
                generation = int(json.loads(message["data"])["generation"])
            except (TypeError, ValueError, KeyError):
                log.warning("ignoring malformed live update %r", message.get("data"))
                return True
            with self._lock:
                self.epoch += 1
                self._live_users.clear()
                if self._generation is not None:
                    self._generation = max(self._generation, generation)
            return True
        return False

    def forget_users(self, users: Iterable[str]) -> None:
        """Drop these users' exclusions: an ``events`` message named them, or this worker recorded their events
        (``POST /events`` does before it answers, so the client's next page on the same worker reads Redis)."""
        with self._lock:
            self.epoch += 1
            for user_id in users:
                self._exclusions.pop(user_id, None)

    # --- the pages' side ---

    @property
    def generation(self) -> int | None:
        """The current live generation, or None when the mirror cannot tell (ask Redis)."""
        return self._generation

    def exclusions(self, user_id: str) -> KnownExclusions | None:
        with self._lock:
            found = self._exclusions.get(user_id) if self._generation is not None else None
            if found is not None:
                self._exclusions.move_to_end(user_id)
            return found

    def live_user(self, user_id: str) -> tuple[bool, bytes | None]:
        """(known, the user's ``live:users`` value): known False means ask Redis."""
        with self._lock:
            if self._generation is None or user_id not in self._live_users:
                return False, None
            self._live_users.move_to_end(user_id)
            return True, self._live_users[user_id]

    def remember(self, epoch: int, user_id: str, exclusions: KnownExclusions, live_user: tuple[bool, bytes | None]):
        """Keep what a page read from Redis, unless something changed since ``epoch`` (read before the read)."""
        with self._lock:
            if self._generation is None or epoch != self.epoch:
                return
            _put(self._exclusions, user_id, exclusions, self._capacity)
            if live_user[0]:
                _put(self._live_users, user_id, live_user[1], self._capacity)

    def _forget(self) -> None:
        self.epoch += 1
        self._exclusions.clear()
        self._live_users.clear()


def _put(entries: OrderedDict, key: str, value: Any, capacity: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > capacity:
        entries.popitem(last=False)
