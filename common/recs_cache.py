"""The Redis cache of precomputed recommendations: the one owner of every Redis key and of the channel.

The Celery training task is the writer: it stages a new version (item metadata and the popularity list),
writes every user's top-K list, then publishes the version. The web workers are the readers: they fetch a
user's list of the current (or a pinned) version and listen on the channel for new versions. Keeping both
sides in one class (as Superset's async query manager does) means no other module spells a key.

Keys, all under the configured prefix (default ``recsvc:``):

========================  ======  =====================================================================
``current``               string  the current version id, flipped only after every list is written
``recs:<version>``        hash    user id -> packed top-K list (see :func:`pack_list`)
``meta:<version>``        hash    ``items`` (JSON ``[[post_id, [tags], community_id], ...]``), ``popular``
                                  (packed list), ``created_at``, ``num_users``, ``num_items``, ``complete``
``lock:train``            string  the training lock; it has a TTL so a dead holder frees it
``training:last``         string  JSON of the last training outcome, for ``/admin/model-status``
``ratelimit...``          (many)  the web's rate-limit counters (flask-limiter), see :func:`rate_limit_prefix`
channel ``model-updates``         ``{"version", "created_at", "num_users", "num_items"}`` after each flip
========================  ======  =====================================================================

A staged version carries a TTL until it is published, so a training run that dies mid-way leaves nothing
behind for long. Publishing removes that TTL, flips ``current``, gives the previous version
``retain_seconds`` to live (clients that pinned it can finish scrolling) and publishes the message, all in
one Lua script so no reader ever sees a half-flipped state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis

log = logging.getLogger(__name__)

ItemMeta = tuple[str, tuple[str, ...], str]  # (post_id, tags, community_id)

# Little-endian int32 item indices followed by float32 scores of the same length.
_INDEX_DTYPE = np.dtype("<i4")
_SCORE_DTYPE = np.dtype("<f4")
_ENTRY_BYTES = _INDEX_DTYPE.itemsize + _SCORE_DTYPE.itemsize

# Users written per HSET command; keeps each command and pipeline reply small.
_WRITE_BATCH = 2000

UPDATE_FIELDS = ("version", "created_at", "num_users", "num_items")

# KEYS: current, meta:<new>, recs:<new>; ARGV: new version, key prefix, retain seconds, message.
# Returns the previous version (or false). Runs atomically inside Redis.
_PUBLISH_SCRIPT = """
if redis.call('HGET', KEYS[2], 'complete') == false then
  return redis.error_reply('version ' .. ARGV[1] .. ' is not staged')
end
local previous = redis.call('GET', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
redis.call('HSET', KEYS[2], 'complete', '1')
redis.call('SET', KEYS[1], ARGV[1])
if previous and previous ~= ARGV[1] then
  redis.call('EXPIRE', ARGV[2] .. 'meta:' .. previous, tonumber(ARGV[3]))
  redis.call('EXPIRE', ARGV[2] .. 'recs:' .. previous, tonumber(ARGV[3]))
end
redis.call('PUBLISH', ARGV[2] .. 'model-updates', ARGV[4])
return previous
"""


def rate_limit_prefix(prefix: str) -> str:
    """Key prefix of the rate limiter's counters; flask-limiter spells the rest of those keys itself."""
    return prefix + "ratelimit"


def pack_list(items: np.ndarray, scores: np.ndarray) -> bytes:
    """Pack a ranked list (item indices, scores) into bytes: 8 bytes per entry instead of JSON of ids."""
    return np.asarray(items, dtype=_INDEX_DTYPE).tobytes() + np.asarray(scores, dtype=_SCORE_DTYPE).tobytes()


def unpack_list(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_list`. Raises ValueError on a blob of the wrong size."""
    if len(blob) % _ENTRY_BYTES:
        raise ValueError(f"packed list of {len(blob)} bytes is not a multiple of {_ENTRY_BYTES}")
    n = len(blob) // _ENTRY_BYTES
    items = np.frombuffer(blob, dtype=_INDEX_DTYPE, count=n)
    scores = np.frombuffer(blob, dtype=_SCORE_DTYPE, count=n, offset=n * _INDEX_DTYPE.itemsize)
    return items, scores


class RecsCache:
    """Writer and reader of the versioned recommendation lists, the channel and the training lock.

    Parameters
    ----------
    client : redis.Redis
        A client with ``decode_responses=False`` (lists are binary).
    prefix : str
        Prefix of every key and of the channel name (``REDIS_PREFIX``).
    """

    def __init__(self, client: redis.Redis, prefix: str = "recsvc:"):
        self.client = client
        self.prefix = prefix
        self._publish = client.register_script(_PUBLISH_SCRIPT)

    # --- key names: the only place they are spelled ---

    @property
    def current_key(self) -> str:
        return self.prefix + "current"

    def recs_key(self, version: str) -> str:
        return f"{self.prefix}recs:{version}"

    def meta_key(self, version: str) -> str:
        return f"{self.prefix}meta:{version}"

    @property
    def lock_key(self) -> str:
        return self.prefix + "lock:train"

    @property
    def outcome_key(self) -> str:
        return self.prefix + "training:last"

    @property
    def channel(self) -> str:
        return self.prefix + "model-updates"

    # --- writer side (the training task) ---

    def stage_version(
        self,
        version: str,
        items: Sequence[ItemMeta],
        popular_items: np.ndarray,
        popular_scores: np.ndarray,
        meta: Mapping[str, Any],
        ttl: int,
    ) -> None:
        """Start writing ``version``: its item metadata, popularity list and counts, expiring after ``ttl`` s.

        ``meta`` carries ``created_at``, ``num_users`` and ``num_items`` (they go into the update message).
        """
        fields = {
            "items": json.dumps([[post_id, list(tags), community] for post_id, tags, community in items]),
            "popular": pack_list(popular_items, popular_scores),
            "created_at": str(meta["created_at"]),
            "num_users": str(int(meta["num_users"])),
            "num_items": str(int(meta["num_items"])),
            "complete": "0",
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.recs_key(version))
        pipe.hset(self.meta_key(version), mapping=fields)
        pipe.expire(self.meta_key(version), ttl)
        pipe.execute()

    def write_user_lists(
        self, version: str, user_ids: Sequence[str], items: np.ndarray, scores: np.ndarray, ttl: int
    ) -> None:
        """Write the top-K lists of ``user_ids`` (rows of ``items``/``scores``; ``-1`` pads short rows).

        Pipelined in batches; the hash keeps the staging TTL until :meth:`publish_version`.
        """
        if len(user_ids) != len(items) or items.shape != scores.shape:
            raise ValueError("user_ids, items and scores must have matching lengths")
        key = self.recs_key(version)
        lengths = (items >= 0).sum(axis=1)
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(user_ids), _WRITE_BATCH):
            stop = min(start + _WRITE_BATCH, len(user_ids))
            mapping = {
                user_ids[row]: pack_list(items[row, : lengths[row]], scores[row, : lengths[row]])
                for row in range(start, stop)
            }
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, ttl)
            pipe.execute()

    def publish_version(self, version: str, message: Mapping[str, Any], retain_seconds: int) -> str | None:
        """Make ``version`` current and announce it; return the previous version.

        Atomically: drop the staging TTL, flip ``current``, let the previous version expire after
        ``retain_seconds``, and publish ``message`` on :attr:`channel`. Raises ``redis.ResponseError`` if the
        version was never staged (or its staging expired).
        """
        payload = json.dumps({field: message[field] for field in UPDATE_FIELDS})
        previous = self._publish(
            keys=[self.current_key, self.meta_key(version), self.recs_key(version)],
            args=[version, self.prefix, int(retain_seconds), payload],
        )
        return previous.decode() if previous else None

    def training_lock(self, timeout: float) -> redis.lock.Lock:
        """The lock that lets one training run at a time across all workers; expires after ``timeout`` s.

        Acquire it with ``acquire(blocking=False)``; a holder that dies frees it when the TTL runs out.
        """
        return self.client.lock(self.lock_key, timeout=timeout, blocking=False, thread_local=False)

    def record_training_outcome(self, outcome: Mapping[str, Any]) -> None:
        """Remember the last training run's outcome (published, skipped, rejected or failed) as JSON."""
        self.client.set(self.outcome_key, json.dumps(outcome, default=str))

    # --- reader side (the web workers) ---

    def current_version(self) -> str | None:
        """The current version id, or None before the first publish."""
        value = self.client.get(self.current_key)
        return value.decode() if value else None

    def is_published(self, version: str) -> bool:
        """Whether ``version`` was published and is still retained."""
        return self.client.hget(self.meta_key(version), "complete") == b"1"

    def user_list(self, version: str, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The user's ranked (item indices, scores) in ``version``, or None if there is no list."""
        blob = self.client.hget(self.recs_key(version), user_id)
        return unpack_list(blob) if blob is not None else None

    def popular_list(self, version: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The popularity fallback list of ``version``, or None if the version is gone."""
        blob = self.client.hget(self.meta_key(version), "popular")
        return unpack_list(blob) if blob is not None else None

    def version_items(self, version: str) -> list[ItemMeta] | None:
        """Post id, tags and community of every item index of ``version``, or None if it is gone."""
        blob = self.client.hget(self.meta_key(version), "items")
        if blob is None:
            return None
        return [(post_id, tuple(tags), community) for post_id, tags, community in json.loads(blob)]

    def subscribe(self, timeout: float = 5.0) -> redis.client.PubSub:
        """A pub/sub connection subscribed to :attr:`channel`, returned once Redis has confirmed it.

        redis-py's ``subscribe`` only sends the command, so an update published right after it could
        still be missed; waiting for the confirmation means every update published after this returns
        is delivered. Raises ``redis.TimeoutError`` if no confirmation comes within ``timeout`` seconds.
        """
        pubsub = self.client.pubsub()
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                return pubsub
            if time.monotonic() >= deadline:
                pubsub.close()
                raise redis.TimeoutError(f"Redis did not confirm the subscription to {self.channel} in {timeout}s")

    @staticmethod
    def parse_update(message: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The update announced by a pub/sub ``message``, or None if it is not a well-formed update."""
        if not message or message.get("type") != "message":
            return None
        try:
            update = json.loads(message["data"])
        except (TypeError, ValueError):
            log.warning("ignoring malformed model update %r", message.get("data"))
            return None
        if not isinstance(update, dict) or not all(field in update for field in UPDATE_FIELDS):
            log.warning("ignoring model update without %s: %r", ", ".join(UPDATE_FIELDS), update)
            return None
        return update

    def last_training_outcome(self) -> dict[str, Any] | None:
        """The outcome recorded by the last training run, or None."""
        value = self.client.get(self.outcome_key)
        return json.loads(value) if value else None
