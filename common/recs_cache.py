"""The Redis cache of precomputed recommendations: the one owner of every Redis key and of the channel.

The Celery training task is the writer: it stages a new version (item metadata and the popularity list),
writes every user's top-K list, then publishes the version. The web workers are the readers: they fetch a
user's list of the current (or a pinned) version and listen on the channel for new versions. Keeping both
sides in one class (as Superset's async query manager does) means no other module spells a key.

Keys, all under the configured prefix (default ``recsvc:``). The same layout serves one Redis server and a
Redis Cluster (``REDIS_URL=redis+cluster://...``, see :mod:`common.redis_clients`); on a cluster the braces are
hash tags, which decide the slot, and so the shard, a key lives on:

- ``{ctl}``: the global state (the version pointer and metadata, the live feed's state): one slot, so the
  scripts that change several of these keys at once stay atomic on a cluster too.
- ``{u<b>}``: bucket ``b`` of :data:`RECS_BUCKETS`, chosen by a stable hash of the user id
  (:func:`user_bucket`): a version's lists are split into one hash per bucket, so they spread over every shard
  and no key holds a whole version, and a user's ``seen:``/``shown:`` zsets share its list's slot, so a page's
  user reads are one script on one shard.

========================  ======  =====================================================================
``{ctl}current``          string  the current version id, flipped only after every bucket is written
``recs:<version>:{u<b>}`` hash    user id -> packed top-K list (see :func:`pack_list`), users of bucket b
``{ctl}meta:<version>``   hash    ``items`` (JSON ``[[post_id, [tags], community_id], ...]``), ``popular``
                                  (packed list), ``created_at``, ``num_users``, ``num_items``, ``complete``
``{ctl}lists``            set     versions whose buckets were made persistent and not yet given an expiry
``{ctl}variant:<lineage>`` string  the current version of an experiment's model variant (``tasks.variants``);
                                  its lists and metadata are a version's like any other (``recs:``, ``meta:``)
``{ctl}variant-lists:<lineage>`` set  the variant's ``{ctl}lists``
``{ctl}variants``         set     lineages with a pointer; one no longer declared is retired (expires)
``lock:train``            string  the training lock; it has a TTL so a dead holder frees it
``lock:refresh``          string  the live refresh's lock (``tasks.refresh``), with a TTL likewise
``lock:search``           string  the model search's lock (``tasks.search``), with a TTL likewise
``training:last``         string  JSON of the last training outcome, for ``/admin/model-status``
``ratelimit...``          (many)  the web's rate-limit counters (flask-limiter), see :func:`rate_limit_prefix`
channel ``model-updates``         ``{"version", "created_at", "num_users", "num_items"}`` after each flip
``{ctl}live:state``       hash    ``generation`` (goes up by one per live publish), ``model_version``,
                                  ``watermarks`` (JSON), ``updated_at``
``{ctl}live:pool:<gen>``  string  JSON ``[[post_id, [tags], community_id, created_unix], ...]``: posts the
                                  model does not know, newest first; a superseded one expires after
                                  ``retain_seconds``
``{ctl}live:users``       hash    user id -> JSON ``[[generation, {"role", "follows"} or null], ...]``,
                                  the newest records first, for users the model does not know
``{ctl}live:users:order`` zset    live user -> when it became live (the oldest go first beyond the cap)
``{ctl}live:users:dropped`` zset    live user the model now knows -> when (its entry goes after the retention)
``seen:{u<b>}:<user_id>`` zset    post id -> arrival time (Redis clock, seconds) of a view, like or comment;
                                  capped per user, expires after the user's last event
``shown:{u<b>}:<user_id>`` zset    the same for impressions
channel ``live-updates``          ``{"generation", "model_version"}`` after each live publish
channel ``events``                JSON list of the users whose ``seen:``/``shown:`` a batch of events changed
(The channels are named ``db<N>:model-updates`` and so on after the prefix on a database N other than 0.)
``served``                stream  one entry per page served (:class:`ServedEntry`), about ``maxlen`` entries at
                                  most (the oldest go first); consumer group ``mover`` (``tasks.move_impressions``)
                                  acknowledges and deletes an entry once PostgreSQL has it
``online:report``         string  JSON of the last online report (``tasks.online_report``)
========================  ======  =====================================================================

A staged version carries a TTL until it is published, so a training run that dies mid-way leaves nothing
behind for long. Publishing first removes the TTL of every bucket, then (in one Lua script on the ``{ctl}``
slot) flips ``current``, marks the version complete, gives the previous version's metadata
``retain_seconds`` to live (clients that pinned it can finish scrolling) and publishes the message, then gives
the previous version's buckets the same expiry. Readers find a version's lists only through ``current`` (or
a pinned version's ``complete`` flag), which is written after every bucket is complete: no reader ever sees a
half-published version. A model variant's version is published the same way behind its own pointer, without a
message: the web workers poll the variant pointers (and read them on every production update). Pub/sub
messages are classic ``PUBLISH``: a cluster broadcasts them to every node, so a subscriber on any node
receives them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import numpy as np
import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster

import ml.artifact

log = logging.getLogger(__name__)

# The type of the training and refresh locks (redis-py's; a holder's token travels with it).
Lock = redis.lock.Lock

ItemMeta = tuple[str, tuple[str, ...], str]  # (post_id, tags, community_id)

# Little-endian int32 item indices followed by float32 scores of the same length.
_INDEX_DTYPE = np.dtype("<i4")
_INDEX_AS_UNSIGNED = np.dtype("<u4")  # the same bytes read as unsigned (unpack_list's bounds check)
_SCORE_DTYPE = np.dtype("<f4")
_ENTRY_BYTES = _INDEX_DTYPE.itemsize + _SCORE_DTYPE.itemsize

# Users written per HSET command; keeps each command and pipeline reply small.
_WRITE_BATCH = 2000

UPDATE_FIELDS = ("version", "created_at", "num_users", "num_items")

# The buckets a version's lists (and the users' exclusions) are split into, by a stable hash of the user id.
# Part of the key layout: changing it strands every user's seen:/shown: zsets, like a change of REDIS_PREFIX.
RECS_BUCKETS = 256


def user_bucket(user_id: str) -> int:
    """The bucket of ``user_id``: CRC-32 of its UTF-8 bytes modulo :data:`RECS_BUCKETS` (the same in every process)."""
    return zlib.crc32(user_id.encode()) % RECS_BUCKETS


# KEYS (the {ctl} slot): current (or a variant's pointer), meta:<new>, then meta:<previous> if there is one.
# ARGV: new version, the previous version the caller read ('' for none), retain seconds, channel ('' for no
# message: a variant's publish), message.
# Returns the previous version (or false). Refused if ``current`` moved since the caller read it (its KEYS
# would name the wrong previous version); the training lock makes that rare.
_PUBLISH_SCRIPT = """
if redis.call('HGET', KEYS[2], 'complete') == false then
  return redis.error_reply('version ' .. ARGV[1] .. ' is not staged')
end
local previous = redis.call('GET', KEYS[1])
if (previous or '') ~= ARGV[2] then
  return redis.error_reply('the current version moved to ' .. tostring(previous) .. ' during the publish')
end
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[2], 'complete', '1')
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[3] then
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return previous
"""

# --- the live feed (issue #11): fresh posts, new users and fresh interactions, between training runs ---

PoolPost = tuple[str, tuple[str, ...], str, float]  # (post_id, tags, community_id, created_unix)

# The event types a client reports, and the per-user zset each one lands in.
SEEN_TYPES = ("view", "like", "comment")
EVENT_TYPES = (*SEEN_TYPES, "impression")

# Records of a live user's features kept, newest first, so a scroll pinned to an older generation still
# ranks with the features that generation had (see RecsCache.publish_live and live_user_at).
LIVE_USER_HISTORY = 4

# KEYS: live:state, live:pool:<new>, live:pool:<old>, live:users, live:users:order, live:users:dropped.
# ARGV: expected generation, pool JSON, model version, watermarks JSON, retain seconds, max users, channel,
#       then (user id, value JSON, dropped 0/1) triples. Returns the new generation.
# The generation only goes up; a writer that read a stale one is refused, and nothing is written.
_PUBLISH_LIVE_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local current = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if current ~= tonumber(ARGV[1]) then
  return redis.error_reply('live generation is ' .. current .. ', not ' .. ARGV[1])
end
local new = current + 1
local retain = tonumber(ARGV[5])
redis.call('SET', KEYS[2], ARGV[2])
if current > 0 then
  redis.call('EXPIRE', KEYS[3], retain)
end
for i = 8, #ARGV, 3 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[5], 'NX', t, ARGV[i])
  if ARGV[i + 2] == '1' then
    redis.call('ZADD', KEYS[6], t, ARGV[i])
  else
    redis.call('ZREM', KEYS[6], ARGV[i])
  end
end
local function forget(users)
  for _, user in ipairs(users) do
    redis.call('HDEL', KEYS[4], user)
    redis.call('ZREM', KEYS[5], user)
    redis.call('ZREM', KEYS[6], user)
  end
end
forget(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. (t - retain)))
local excess = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[6])
if excess > 0 then
  forget(redis.call('ZRANGE', KEYS[5], 0, excess - 1))
end
redis.call('HSET', KEYS[1], 'generation', new, 'model_version', ARGV[3], 'watermarks', ARGV[4], 'updated_at', t)
redis.call('PUBLISH', ARGV[7], cjson.encode({generation = new, model_version = ARGV[3]}))
return new
"""

# KEYS: the seen:/shown: zsets the batch touches (on a cluster, those of one slot per call).
# ARGV: cap, ttl, channel, message, arrival ('' for now), then per key its member count and members. Every
# member gets Redis's own clock as its arrival time (one clock for every writer and for the readers' cutoffs;
# on a cluster the first slot's call reads it and the batch's other calls pass it on); a member already
# present keeps its first arrival. The message (the users whose exclusions changed) is published on the
# channel (unless it is '': on a cluster only the batch's last call announces its users). Returns the arrival
# time as a string.
_RECORD_EVENTS_SCRIPT = """
local t = ARGV[5]
if t == '' then
  local now = redis.call('TIME')
  t = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
end
local cap, ttl, at = tonumber(ARGV[1]), tonumber(ARGV[2]), 6
for k = 1, #KEYS do
  local n = tonumber(ARGV[at])
  for i = at + 1, at + n do
    redis.call('ZADD', KEYS[k], 'NX', t, ARGV[i])
  end
  at = at + n + 1
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(cap + 1))
  redis.call('EXPIRE', KEYS[k], ttl)
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return t
"""

# A hash's fields written and its expiry set in one command, so a writer that dies between the two (a worker
# killed mid-pipeline) cannot leave a staged key that never expires. KEYS: the hash. ARGV: ttl, then field,
# value pairs (unpacked in slices well under Lua's stack limit).
_HSET_EXPIRING_SCRIPT = """
for i = 2, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return redis.call('EXPIRE', KEYS[1], ARGV[1])
"""

# Served pages appended to the ``served`` stream, one entry each, in one command: packing one command's
# arguments costs the web worker's flush thread about a quarter of a pipeline of one XADD per page.
# KEYS: served. ARGV: the stream's bound (MAXLEN ~), then per page its 8 fields' values in this order.
SERVED_PAGES_PER_CALL = 1000  # a call of 1,000 XADDs keeps Redis busy for about 2.5 ms
_RECORD_SERVED_SCRIPT = """
for i = 2, #ARGV, 8 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'u', ARGV[i], 'p', ARGV[i + 1], 'r', ARGV[i + 2],
    'e', ARGV[i + 3], 'v', ARGV[i + 4], 'k', ARGV[i + 5], 'm', ARGV[i + 6], 't', ARGV[i + 7])
end
return (#ARGV - 1) / 8
"""

# What a page needs from Redis on a cluster, in one command on the user's slot: the clock first, the user's
# seen and shown zsets, then its list if ARGV[2] is '1'. KEYS: seen:<u>, shown:<u>, then the user's bucket of
# recs:<v> if asked. ARGV: user id, the flag. The cluster client routes a script by its keys; what the {ctl}
# slot holds is read by a second call there. On one server the same commands and the {ctl} reads are one
# transaction (RecsCache.user_reads), which cost redis-server a quarter to a half less than the script
# (docs/PERFORMANCE.md, "The Redis read").
_USER_READS_SCRIPT = """
local t = redis.call('TIME')
local out = {t[1], t[2], redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'), false}
if ARGV[2] == '1' then
  out[5] = redis.call('HGET', KEYS[3], ARGV[1])
end
return out
"""


@dataclass(frozen=True)
class LiveState:
    """What the last live refresh published (``live:state``)."""

    generation: int
    model_version: str | None
    watermarks: dict[str, Any]
    updated_at: float | None


@dataclass(frozen=True)
class ServedEntry:
    """One served feed page, as a web worker records it in the ``served`` stream."""

    user_id: str
    post_ids: list[str]
    first_rank: int
    experiment: str  # '' without an experiment
    variant: str  # 'production' without an experiment
    ranking: str  # what was served: production, popular or model
    model_version: str
    served_ms: int  # when the web worker served it (Unix time, ms; the stream entry is written a little later)


@dataclass(frozen=True)
class ServedPage(ServedEntry):
    """A page read back from the stream, with its entry id."""

    entry_id: str


SERVED_GROUP = "mover"


@dataclass(frozen=True)
class UserReads:
    """Everything a page needs from Redis about one user, read at one instant (:meth:`RecsCache.user_reads`).

    ``now`` is Redis's clock in microseconds; ``seen``/``shown`` map post ids to arrival times (those that
    arrived by ``now``). ``generation`` is the live generation (None when not asked for), ``list_blob`` the
    user's packed list (None when not asked for or absent), ``live_user`` its ``live:users`` value (see
    :func:`live_user_at`), ``published`` whether the version asked about is still published (None when not
    asked).
    """

    now: int
    generation: int | None
    list_blob: bytes | None
    live_user: bytes | None
    published: bool | None
    seen: dict[str, int]
    shown: dict[str, int]


def live_user_at(raw: bytes | None, generation: int) -> dict[str, Any] | None:
    """The features a live user had at ``generation`` (``{"role", "follows"}``), from its ``live:users`` value.

    None when the user was not live then: not yet written, or dropped because the model knew it.
    """
    if raw is None:
        return None
    for written, features in json.loads(raw):
        if written <= generation:
            return features
    return None


def _hset_expiring(pipe: Pipeline | ClusterPipeline, key: str, mapping: Mapping[str, Any], ttl: int) -> None:
    """Queue on ``pipe`` the writing of ``mapping`` into the hash ``key`` together with its expiry after ``ttl`` s.

    EVAL rather than EVALSHA: a cluster's pipeline neither loads scripts nor accepts EVALSHA, and the script's
    text is small beside the lists it carries. Sent as a plain command: redis-py's cluster pipeline has no
    ``eval`` method, but routes an EVAL by its key.
    """
    pairs = (part for pair in mapping.items() for part in pair)
    pipe.execute_command("EVAL", _HSET_EXPIRING_SCRIPT, 1, key, int(ttl), *pairs)


def renew_lock(lock: Lock) -> bool:
    """Restart the TTL of a lock the caller holds; False if it no longer holds it (it expired, or was taken over)."""
    try:
        lock.reacquire()
    except redis.exceptions.LockNotOwnedError:
        return False
    return True


def release_lock(lock: Lock) -> None:
    """Release a lock of :class:`RecsCache`; one that already expired (or was taken over) is only logged."""
    try:
        lock.release()
    except redis.exceptions.LockNotOwnedError:
        log.warning("the lock %s had expired before its holder released it", lock.name)


def served_version(pointer: str | None, model_dir: str) -> str | None:
    """The version being served: Redis's ``pointer``, else (before the first publish, or while Redis cannot
    say) ``MODEL_DIR``'s current one."""
    return pointer or ml.artifact.current_version(model_dir)


def rate_limit_prefix(prefix: str) -> str:
    """Key prefix of the rate limiter's counters; flask-limiter spells the rest of those keys itself."""
    return prefix + "ratelimit"


def pack_list(items: np.ndarray, scores: np.ndarray) -> bytes:
    """Pack a ranked list (item indices, scores) into bytes: 8 bytes per entry instead of JSON of ids."""
    return np.asarray(items, dtype=_INDEX_DTYPE).tobytes() + np.asarray(scores, dtype=_SCORE_DTYPE).tobytes()


def unpack_list(blob: bytes, num_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_list`. Raises ValueError on a blob of the wrong size and, given the model's
    ``num_items``, on an index outside ``0 .. num_items - 1`` (the writer stores no padding: such a list is
    not of that model)."""
    if len(blob) % _ENTRY_BYTES:
        raise ValueError(f"packed list of {len(blob)} bytes is not a multiple of {_ENTRY_BYTES}")
    n = len(blob) // _ENTRY_BYTES
    items = np.frombuffer(blob, dtype=_INDEX_DTYPE, count=n)
    # One maximum checks both bounds: read as unsigned, a negative index is larger than any post's. Python's max
    # over the values, not numpy's: a reduction's machinery, cold on a page that reads Redis, cost it more
    # (docs/PERFORMANCE.md, "The plain feed at a million users").
    if num_items is not None and n and max(items.view(_INDEX_AS_UNSIGNED).tolist()) >= num_items:
        raise ValueError(f"packed list holds post indices outside 0..{num_items - 1}")
    scores = np.frombuffer(blob, dtype=_SCORE_DTYPE, count=n, offset=n * _INDEX_DTYPE.itemsize)
    return items, scores


class RecsCache:
    """Writer and reader of the versioned recommendation lists, the channel and the training lock.

    Parameters
    ----------
    client : redis.Redis or redis.cluster.RedisCluster
        A client with ``decode_responses=False`` (lists are binary), of one server or of a cluster
        (:mod:`common.redis_clients` builds either from ``REDIS_URL``).
    prefix : str
        Prefix of every key and of the channel name (``REDIS_PREFIX``); no braces (they would change the
        hash tags of the key layout).
    """

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str = "recsvc:"):
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} holds a brace: it would change the keys' hash tags")
        self.client = client
        self.prefix = prefix
        self.cluster = isinstance(client, RedisCluster)
        # Pub/sub channels are the server's, not a database's: with the same prefix on another database of the
        # server, another deployment would hear this one's announcements (and a worker would follow its live
        # generations). So channels name a database other than 0 (a cluster has only 0).
        database = 0 if self.cluster else int(client.connection_pool.connection_kwargs.get("db") or 0)
        self._channel_prefix = prefix if database == 0 else f"{prefix}db{database}:"
        self._publish = client.register_script(_PUBLISH_SCRIPT)
        self._publish_live = client.register_script(_PUBLISH_LIVE_SCRIPT)
        self._record_events = client.register_script(_RECORD_EVENTS_SCRIPT)
        self._user_reads = client.register_script(_USER_READS_SCRIPT)
        self._record_served = client.register_script(_RECORD_SERVED_SCRIPT)
        self._readers = threading.local()  # see _transaction_on_own_connection

    # --- key names: the only place they are spelled ---

    @property
    def current_key(self) -> str:
        return self.prefix + "{ctl}current"

    def recs_key(self, version: str, user_id: str) -> str:
        """The hash holding ``user_id``'s list of ``version`` (the user's bucket)."""
        return self.recs_bucket_key(version, user_bucket(user_id))

    def recs_bucket_key(self, version: str, bucket: int) -> str:
        return f"{self.prefix}recs:{version}:{{u{int(bucket)}}}"

    def recs_keys(self, version: str) -> list[str]:
        """Every bucket of ``version``'s lists (a bucket without users does not exist in Redis)."""
        return [self.recs_bucket_key(version, bucket) for bucket in range(RECS_BUCKETS)]

    def meta_key(self, version: str) -> str:
        return f"{self.prefix}{{ctl}}meta:{version}"

    @property
    def lists_key(self) -> str:
        return self.prefix + "{ctl}lists"

    def variant_key(self, lineage: str) -> str:
        """The pointer to the current version of a model variant's line (:attr:`common.experiments.Variant.lineage`)."""
        return f"{self.prefix}{{ctl}}variant:{lineage}"

    def variant_lists_key(self, lineage: str) -> str:
        return f"{self.prefix}{{ctl}}variant-lists:{lineage}"

    @property
    def variants_key(self) -> str:
        return self.prefix + "{ctl}variants"

    @property
    def lock_key(self) -> str:
        return self.prefix + "lock:train"

    @property
    def refresh_lock_key(self) -> str:
        return self.prefix + "lock:refresh"

    @property
    def search_lock_key(self) -> str:
        return self.prefix + "lock:search"

    @property
    def outcome_key(self) -> str:
        return self.prefix + "training:last"

    @property
    def channel(self) -> str:
        return self._channel_prefix + "model-updates"

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
        pipe = self.client.pipeline(transaction=False)  # nobody reads a staged version: no need for atomicity
        for key in self.recs_keys(version):
            pipe.delete(key)
        _hset_expiring(pipe, self.meta_key(version), fields, ttl)
        pipe.execute()

    def write_user_lists(
        self, version: str, user_ids: Sequence[str], items: np.ndarray, scores: np.ndarray, ttl: int
    ) -> None:
        """Write the top-K lists of ``user_ids`` (rows of ``items``/``scores``; ``-1`` pads short rows).

        Each user's list goes into its bucket's hash; pipelined (on a cluster, per shard) about
        ``_WRITE_BATCH`` users at a time. The buckets keep the staging TTL until :meth:`publish_version`.
        """
        if len(user_ids) != len(items) or items.shape != scores.shape:
            raise ValueError("user_ids, items and scores must have matching lengths")
        lengths = (items >= 0).sum(axis=1)
        rows_of: dict[int, list[int]] = {}
        for row, user_id in enumerate(user_ids):
            rows_of.setdefault(user_bucket(user_id), []).append(row)
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for bucket, rows in rows_of.items():
            key = self.recs_bucket_key(version, bucket)
            for start in range(0, len(rows), _WRITE_BATCH):
                mapping = {
                    user_ids[row]: pack_list(items[row, : lengths[row]], scores[row, : lengths[row]])
                    for row in rows[start : start + _WRITE_BATCH]
                }
                _hset_expiring(pipe, key, mapping, ttl)
                pending += len(mapping)
                if pending >= _WRITE_BATCH:
                    pipe.execute()
                    pending = 0
        if pending:
            pipe.execute()

    def publish_version(self, version: str, message: Mapping[str, Any], retain_seconds: int) -> str | None:
        """Make ``version`` current and announce it; return the previous version.

        First every bucket loses its staging TTL (and the version is noted in :attr:`lists_key`); then,
        atomically, ``current`` flips, the previous version's metadata expires after ``retain_seconds`` and
        ``message`` goes out on :attr:`channel`; last, the buckets of every other noted version get the same
        expiry (a publish that died half-way is tidied by the next). Raises ``redis.ResponseError`` if the
        version was never staged (or its staging expired), or if another publish moved ``current`` meanwhile.
        """
        payload = json.dumps({field: message[field] for field in UPDATE_FIELDS})
        expected = self.current_version()
        self.client.sadd(self.lists_key, version)
        pipe = self.client.pipeline(transaction=False)
        for key in self.recs_keys(version):
            pipe.persist(key)
        pipe.execute()
        keys = [self.current_key, self.meta_key(version)]
        if expected is not None and expected != version:
            keys.append(self.meta_key(expected))
        previous = self._publish(keys=keys, args=[version, expected or "", int(retain_seconds), self.channel, payload])
        self._expire_lists(version, int(retain_seconds))
        return previous.decode() if previous else None

    def publish_variant_version(self, lineage: str, version: str, retain_seconds: int) -> str | None:
        """Make ``version`` the current one of model variant ``lineage``; return its previous version.

        :meth:`publish_version`'s steps on the variant's pointer and its own set of noted versions (so a
        production publish never expires a variant's lists, nor the reverse), without a message: the
        production pointer and the channel are untouched. The lineage is noted in :attr:`variants_key` for
        :meth:`retire_variants`.
        """
        pointer, noted = self.variant_key(lineage), self.variant_lists_key(lineage)
        raw = self.client.get(pointer)
        expected = raw.decode() if raw else None
        self.client.sadd(self.variants_key, lineage)
        self.client.sadd(noted, version)
        pipe = self.client.pipeline(transaction=False)
        for key in self.recs_keys(version):
            pipe.persist(key)
        pipe.execute()
        keys = [pointer, self.meta_key(version)]
        if expected is not None and expected != version:
            keys.append(self.meta_key(expected))
        previous = self._publish(keys=keys, args=[version, expected or "", int(retain_seconds), "", ""])
        self._expire_lists(version, int(retain_seconds), noted)
        return previous.decode() if previous else None

    def variant_versions(self, lineages: Sequence[str]) -> dict[str, str | None]:
        """The current version of each model variant line (None where none is published), in one MGET."""
        if not lineages:
            return {}
        values = self.client.mget([self.variant_key(lineage) for lineage in lineages])
        return {lineage: value.decode() if value else None for lineage, value in zip(lineages, values, strict=True)}

    def retire_variants(self, declared: Iterable[str], retain_seconds: int) -> list[str]:
        """Let the model variant lines not in ``declared`` expire: pointer, current version's lists and metadata.

        An experiment that ended (or a variant whose settings changed, a new lineage) leaves its last version
        in Redis; this gives it ``retain_seconds``, as a superseded version gets, so scrolls pinned to it
        finish. Returns the retired lineages.
        """
        keep = set(declared)
        retired = []
        for raw in self.client.smembers(self.variants_key):
            lineage = raw.decode()
            if lineage in keep:
                continue
            version = self.variant_version(lineage)
            pipe = self.client.pipeline(transaction=False)
            for key in (self.variant_key(lineage), self.variant_lists_key(lineage)):
                pipe.expire(key, retain_seconds)
            if version is not None:
                for key in (self.meta_key(version), *self.recs_keys(version)):
                    pipe.expire(key, retain_seconds, nx=True)
            pipe.execute()
            self.client.srem(self.variants_key, lineage)
            retired.append(lineage)
        return retired

    def _expire_lists(self, current: str, retain_seconds: int, noted: str | None = None) -> None:
        """Give the buckets of every version noted in ``noted`` (default :attr:`lists_key`) but ``current`` an
        expiry (``NX``: one they have stays)."""
        noted = noted or self.lists_key
        for raw in self.client.smembers(noted):
            version = raw.decode()
            if version == current:
                continue
            pipe = self.client.pipeline(transaction=False)
            for key in self.recs_keys(version):
                pipe.expire(key, retain_seconds, nx=True)
            pipe.execute()
            self.client.srem(noted, version)

    def training_lock(self, timeout: float) -> redis.lock.Lock:
        """The lock that lets one training run at a time across all workers; expires after ``timeout`` s.

        Acquire it with ``acquire(blocking=False)``; a holder that dies frees it when the TTL runs out.
        """
        return self.client.lock(self.lock_key, timeout=timeout, blocking=False, thread_local=False)

    def adopt_training_lock(self, timeout: float, token: str) -> redis.lock.Lock:
        """The training lock as held by the run whose token is ``token`` (a chunked run's publish task adopts it).

        redis-py keeps a lock's token on ``lock.local``; with ``thread_local=False`` (as :meth:`training_lock`
        makes it) that is how a held lock passes to another process. ``owned()`` says whether the run still
        holds it.
        """
        lock = self.training_lock(timeout)
        lock.local.token = self.client.get_encoder().encode(token)
        return lock

    def refresh_lock(self, timeout: float) -> redis.lock.Lock:
        """The lock that lets one live refresh run at a time (never the training lock, so neither waits)."""
        return self.client.lock(self.refresh_lock_key, timeout=timeout, blocking=False, thread_local=False)

    def search_lock(self, timeout: float) -> redis.lock.Lock:
        """The lock that lets one model search run at a time (never the training lock: a search never holds
        up training)."""
        return self.client.lock(self.search_lock_key, timeout=timeout, blocking=False, thread_local=False)

    def record_training_outcome(self, outcome: Mapping[str, Any]) -> None:
        """Remember the last training run's outcome (published, skipped, rejected or failed) as JSON."""
        self.client.set(self.outcome_key, json.dumps(outcome, default=str))

    # --- reader side (the web workers) ---

    def current_version(self) -> str | None:
        """The current version id, or None before the first publish."""
        value = self.client.get(self.current_key)
        return value.decode() if value else None

    def variant_version(self, lineage: str) -> str | None:
        """The current version of model variant ``lineage``, or None when none is published."""
        value = self.client.get(self.variant_key(lineage))
        return value.decode() if value else None

    def is_published(self, version: str) -> bool:
        """Whether ``version`` was published and is still retained."""
        return self.client.hget(self.meta_key(version), "complete") == b"1"

    def subscribe(self, timeout: float = 5.0, live: bool = False) -> redis.client.PubSub:
        """A pub/sub connection subscribed to :attr:`channel`, returned once Redis has confirmed it.

        ``live`` also subscribes to :attr:`live_channel` and :attr:`events_channel`. redis-py's
        ``subscribe`` only sends the command, so an update published right after it could still be missed;
        waiting for the confirmations means every update published after this returns is delivered. Raises
        ``redis.TimeoutError`` if they do not all come within ``timeout`` seconds.
        """
        channels = [self.channel, self.live_channel, self.events_channel] if live else [self.channel]
        pubsub = self.client.pubsub()
        pubsub.subscribe(*channels)
        deadline = time.monotonic() + timeout
        confirmed = 0
        while True:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
                if confirmed == len(channels):
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

    # --- the live feed (issue #11): key names ---

    @property
    def live_state_key(self) -> str:
        return self.prefix + "{ctl}live:state"

    def live_pool_key(self, generation: int) -> str:
        return f"{self.prefix}{{ctl}}live:pool:{int(generation)}"

    @property
    def live_users_key(self) -> str:
        return self.prefix + "{ctl}live:users"

    @property
    def live_users_order_key(self) -> str:
        return self.prefix + "{ctl}live:users:order"

    @property
    def live_users_dropped_key(self) -> str:
        return self.prefix + "{ctl}live:users:dropped"

    def seen_key(self, user_id: str) -> str:
        return f"{self.prefix}seen:{{u{user_bucket(user_id)}}}:{user_id}"

    def shown_key(self, user_id: str) -> str:
        return f"{self.prefix}shown:{{u{user_bucket(user_id)}}}:{user_id}"

    @property
    def seen_pattern(self) -> str:
        """A SCAN pattern of every user's ``seen:`` zset."""
        return self.prefix + "seen:*"

    @property
    def live_channel(self) -> str:
        return self._channel_prefix + "live-updates"

    @property
    def events_channel(self) -> str:
        return self._channel_prefix + "events"

    # --- the live feed: writer side (tasks.refresh, POST /events) ---

    def publish_live(
        self,
        pool: Sequence[PoolPost],
        users: Mapping[str, Mapping[str, Any] | None],
        model_version: str,
        watermarks: Mapping[str, Any],
        *,
        retain_seconds: int,
        max_posts: int,
        max_users: int,
    ) -> int:
        """Publish a new live generation atomically and announce it; return its number.

        ``pool`` is the whole new pool of fresh posts, newest first (the first ``max_posts`` are kept);
        the previous generation's pool expires ``retain_seconds`` later, so scrolls pinned to it finish.
        ``users`` is what changed among live users: user id -> ``{"role", "follows"}`` for a user the
        model does not know (added, or its features changed), or None for a user the model now knows.
        Each live user keeps its last few records (:data:`LIVE_USER_HISTORY`, tagged with their
        generation) so a pinned scroll ranks with the features of its generation; a dropped user's entry
        goes ``retain_seconds`` after its drop, and beyond ``max_users`` the longest-live users go first.

        One writer at a time (the refresh task's lock); a concurrent writer that read a stale generation
        gets ``redis.ResponseError`` and nothing of its generation is written.
        """
        generation = int(self.client.hget(self.live_state_key, "generation") or 0)
        payload = json.dumps(
            [[post_id, list(tags), community, float(created)] for post_id, tags, community, created in pool[:max_posts]]
        )
        user_ids = list(users)
        previous = self.client.hmget(self.live_users_key, user_ids) if user_ids else []
        args: list[Any] = []
        for user_id, raw in zip(user_ids, previous, strict=True):
            features = users[user_id]
            if features is None and raw is None:
                continue  # never live: nothing to drop
            record = None if features is None else {"role": features.get("role"), "follows": list(features["follows"])}
            history = [[generation + 1, record], *(json.loads(raw) if raw else [])][:LIVE_USER_HISTORY]
            args += [user_id, json.dumps(history), "1" if record is None else "0"]
        keys = [
            self.live_state_key,
            self.live_pool_key(generation + 1),
            self.live_pool_key(generation),
            self.live_users_key,
            self.live_users_order_key,
            self.live_users_dropped_key,
        ]
        head = [generation, payload, model_version, json.dumps(dict(watermarks), default=str)]
        head += [int(retain_seconds), int(max_users), self.live_channel]
        return int(self._publish_live(keys=keys, args=head + args))

    def update_live_watermarks(self, watermarks: Mapping[str, Any]) -> None:
        """Move the live state's watermarks without a new generation (a refresh that changed no pool or user).

        Only the refresh, holding its lock, writes them; the readers never look at them.
        """
        self.client.hset(self.live_state_key, "watermarks", json.dumps(dict(watermarks), default=str))

    def record_events(self, events: Iterable[tuple[str, str, str]], *, cap: int, ttl: int) -> int:
        """Record a batch of ``(user_id, post_id, type)`` events atomically: all of them or none.

        ``view``/``like``/``comment`` go to the user's ``seen:`` zset, ``impression`` to ``shown:``, each
        scored by its arrival time (Redis's clock, the same for every event of the batch; a post already
        there keeps its first arrival). Each zset keeps its newest ``cap`` posts and expires ``ttl`` seconds
        after its last write. The users are then announced on :attr:`events_channel` (web workers that
        keep exclusions in memory drop theirs). Returns the arrival time in microseconds. Raises ValueError
        on an unknown type.

        On a cluster the batch is written by one script per slot its users' keys hash to: atomic per slot, and
        the whole batch is checked before anything is written, every event gets the first call's arrival, and
        the last call announces every user of the batch.
        A batch that failed half-way may be sent again: a post already recorded keeps its first arrival.
        """
        groups: dict[int, tuple[dict[str, list[str]], dict[str, None]]] = {}
        for user_id, post_id, kind in events:
            if kind not in EVENT_TYPES:
                raise ValueError(f"unknown event type {kind!r}: must be one of {', '.join(EVENT_TYPES)}")
            key = self.shown_key(user_id) if kind == "impression" else self.seen_key(user_id)
            members, users = groups.setdefault(user_bucket(user_id) if self.cluster else 0, ({}, {}))
            members.setdefault(key, []).append(post_id)
            users[user_id] = None
        if not groups:
            return self.redis_time()
        arrival, announced = "", json.dumps([user for _, users in groups.values() for user in users])
        for number, (members, _) in enumerate(groups.values(), start=1):
            channel = self.events_channel if number == len(groups) else ""
            args: list[Any] = [int(cap), int(ttl), channel, announced, arrival]
            for posts in members.values():
                args += [len(posts), *posts]
            arrival = self._record_events(keys=list(members), args=args)
        return _microseconds(arrival)

    # --- the live feed: reader side (the web workers) ---

    def redis_time(self) -> int:
        """Redis's clock in microseconds: the clock of every arrival time and cutoff."""
        seconds, micros = self.client.time()
        return int(seconds) * 1_000_000 + int(micros)

    def live_state(self) -> LiveState | None:
        """What the last live refresh published, or None before the first."""
        raw = self.client.hgetall(self.live_state_key)
        if not raw or b"generation" not in raw:
            return None
        version = raw.get(b"model_version")
        updated = raw.get(b"updated_at")
        return LiveState(
            generation=int(raw[b"generation"]),
            model_version=version.decode() if version else None,
            watermarks=json.loads(raw.get(b"watermarks") or b"{}"),
            updated_at=float(updated) if updated else None,
        )

    def live_pool(self, generation: int) -> list[PoolPost] | None:
        """The fresh posts of ``generation``, newest first; None if it expired (or never existed)."""
        if generation <= 0:
            return []
        blob = self.client.get(self.live_pool_key(generation))
        if blob is None:
            return None
        return [
            (post_id, tuple(tags), community, float(created)) for post_id, tags, community, created in json.loads(blob)
        ]

    def live_user(self, user_id: str, generation: int) -> dict[str, Any] | None:
        """The features ``user_id`` had at ``generation`` if it was a live user then, else None."""
        return live_user_at(self.client.hget(self.live_users_key, user_id), generation)

    def live_user_ids(self) -> list[str]:
        """Every user with an entry in ``live:users`` (dropped ones included until their entry goes)."""
        return [user_id.decode() for user_id in self.client.hkeys(self.live_users_key)]

    def exclusions(self, user_id: str, cutoff: int | None = None) -> tuple[dict[str, int], dict[str, int]]:
        """The user's ``seen`` and ``shown`` posts (post id -> arrival, microseconds) up to ``cutoff``."""
        reads = self.user_reads(user_id, generation=False)
        limit = reads.now if cutoff is None else cutoff
        return cut_exclusions(reads.seen, limit), cut_exclusions(reads.shown, limit)

    def user_reads(
        self,
        user_id: str,
        *,
        list_version: str | None = None,
        generation: bool = True,
        live_user: bool = False,
        check_version: str | None = None,
    ) -> UserReads:
        """One round trip for what a page needs: Redis's clock and the user's exclusions, read at one instant.

        Also the live generation unless ``generation`` is False (a web worker whose mirror knows it), and
        optionally the user's list of ``list_version``, its ``live:users`` value (``live_user``), and whether
        ``check_version`` is still published. The exclusions are those that arrived by the clock read first
        (``now``; see :func:`cut_exclusions` for a pinned scroll's earlier cutoff). On one server the commands
        are one transaction (``MULTI`` ... ``EXEC``, see :meth:`_transaction_on_own_connection`). On a cluster
        a script reads the user's slot (clock, exclusions, list); what is asked of the ``{ctl}`` slot (the
        generation, the live-user record, the published flag), if anything, costs one pipelined call there: a
        second round trip.
        """
        if self.cluster:
            return self._user_reads_on_a_cluster(user_id, list_version, generation, live_user, check_version)
        commands: list[tuple[str | int, ...]] = [
            ("TIME",),
            ("ZRANGE", self.seen_key(user_id), 0, -1, "WITHSCORES"),
            ("ZRANGE", self.shown_key(user_id), 0, -1, "WITHSCORES"),
        ]
        if list_version is not None:
            commands.append(("HGET", self.recs_key(list_version, user_id), user_id))
        if generation:
            commands.append(("HGET", self.live_state_key, "generation"))
        if live_user:
            commands.append(("HGET", self.live_users_key, user_id))
        if check_version is not None:
            commands.append(("HGET", self.meta_key(check_version), "complete"))
        (seconds, micros), seen, shown, *asked = self._transaction_on_own_connection(commands)
        answers = iter(asked)
        return _as_user_reads(
            int(seconds) * 1_000_000 + int(micros),
            seen,
            shown,
            blob=next(answers) if list_version is not None else None,
            current=next(answers) if generation else None,
            record=next(answers) if live_user else None,
            published=next(answers) == b"1" if check_version is not None else None,
            generation=generation,
        )

    def _user_reads_on_a_cluster(
        self, user_id: str, list_version: str | None, generation: bool, live_user: bool, check_version: str | None
    ) -> UserReads:
        """:meth:`user_reads` on a cluster: the script on the user's slot, then what the {ctl} slot holds."""
        keys = [self.seen_key(user_id), self.shown_key(user_id)]
        if list_version is not None:
            keys.append(self.recs_key(list_version, user_id))
        seconds, micros, seen, shown, blob = self._user_reads(
            keys=keys, args=[user_id, "1" if list_version is not None else "0"]
        )
        current = record = complete = None
        if generation or live_user or check_version is not None:
            current, record, complete = self._global_reads(user_id, generation, live_user, check_version)
        return _as_user_reads(
            int(seconds) * 1_000_000 + int(micros),
            seen,
            shown,
            blob=blob,
            current=current,
            record=record,
            published=complete == b"1" if check_version is not None else None,
            generation=generation,
        )

    def _transaction_on_own_connection(self, commands: Sequence[tuple[str | int, ...]]) -> list[Any]:
        """The replies of ``commands`` run as one transaction, on this thread's own connection (one server only).

        A pooled call checks a connection out and back in on every command, an eighth to a fifth of the
        client's time for this hot-path read (docs/PERFORMANCE.md, "The Redis read"); a thread keeps one
        connection instead, as the pool would lend it one anyway. ``MULTI``, the commands and ``EXEC`` are
        packed by hiredis, sent at once and read through the connection's own methods under its own ``Retry``:
        redis-py's command dispatch (observability hooks, per-command checks, the serializer's argument pass)
        cost more than the send and the read, and a transaction costs redis-server less than a script of the
        same commands. Errors, retries and reconnects stay redis-py's: a failed attempt disconnects, the next
        reconnects. Remade in a forked child: a connection is never shared across a fork. Only for commands
        that are safe to send twice (a retry after a lost reply repeats them).
        """
        held = getattr(self._readers, "held", None)
        if held is None or held[0] != os.getpid():
            held = (os.getpid(), self.client.connection_pool.get_connection())
            self._readers.held = held
        connection = held[1]
        packed = [b"".join(hiredis.pack_command(command) for command in (("MULTI",), *commands, ("EXEC",)))]

        def once() -> list[Any]:
            connection.send_packed_command(packed)
            refused = None
            for _ in range(len(commands) + 1):  # +OK, then +QUEUED or the error of a command Redis refused
                try:
                    connection.read_response()
                except redis.ResponseError as exc:  # every reply is read before raising: none is left unread
                    refused = refused or exc
            try:
                replies = connection.read_response()
            except redis.ResponseError as exc:  # EXECABORT: the refusal above says why
                raise refused or exc from None
            failed = next((reply for reply in replies if isinstance(reply, redis.ResponseError)), None)
            if failed is not None:  # a command that failed as it ran (a key of the wrong type)
                raise failed
            return replies

        return connection.retry.call_with_retry(once, lambda _error: connection.disconnect())

    def _global_reads(
        self, user_id: str, generation: bool, live_user: bool, check_version: str | None
    ) -> tuple[Any, Any, Any]:
        """On a cluster, the {ctl} part of :meth:`user_reads`: one pipelined call to that slot's shard."""
        pipe = self.client.pipeline(transaction=False)
        if generation:
            pipe.hget(self.live_state_key, "generation")
        if live_user:
            pipe.hget(self.live_users_key, user_id)
        if check_version is not None:
            pipe.hget(self.meta_key(check_version), "complete")
        replies = iter(pipe.execute())
        current = next(replies) if generation else None
        record = next(replies) if live_user else None
        complete = next(replies) if check_version is not None else None
        return current, record, complete

    # --- served pages (impressions) and the online report ---

    @property
    def served_key(self) -> str:
        return self.prefix + "served"

    @property
    def online_report_key(self) -> str:
        return self.prefix + "online:report"

    def record_served_pages(self, entries: Sequence[ServedEntry], maxlen: int) -> None:
        """Append served pages to the ``served`` stream, trimming it to about ``maxlen``.

        One command per :data:`SERVED_PAGES_PER_CALL` pages (a script: one entry per page, fields ``u p r e v
        k m t``). The trim is approximate (Redis drops whole macro nodes, so the stream may hold up to about
        100 more): when the mover is down for longer than ``maxlen`` pages, the oldest unmoved pages are lost.
        """
        for start in range(0, len(entries), SERVED_PAGES_PER_CALL):
            args: list[Any] = [maxlen]
            for e in entries[start : start + SERVED_PAGES_PER_CALL]:
                # ids never hold control characters (ml.ids), so a newline separates the post ids
                args += (e.user_id, "\n".join(e.post_ids), e.first_rank, e.experiment, e.variant, e.ranking,
                         e.model_version, e.served_ms)  # fmt: skip
            self._record_served(keys=[self.served_key], args=args)

    def read_served_pages(self, count: int) -> list[ServedPage]:
        """Up to ``count`` pages for the mover: those it read but never acknowledged first, then new ones."""
        try:
            self.client.xgroup_create(self.served_key, SERVED_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pages: list[ServedPage] = []
        trimmed: list[bytes] = []
        for start in ("0", ">"):
            reply = self.client.xreadgroup(SERVED_GROUP, SERVED_GROUP, {self.served_key: start}, count=count)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    if not fields:  # trimmed away while pending: nothing left to move
                        trimmed.append(entry_id)
                        continue
                    pages.append(_served_page(entry_id, fields))
            if pages:
                break
        if trimmed:
            self.client.xack(self.served_key, SERVED_GROUP, *trimmed)
        return pages

    def ack_served_pages(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge and delete moved pages (in one transaction), so the stream holds only unmoved ones."""
        if entry_ids:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.served_key, SERVED_GROUP, *entry_ids)
            pipe.xdel(self.served_key, *entry_ids)
            pipe.execute()

    def served_backlog(self) -> int:
        """Pages in the stream not yet moved (or moved and not yet deleted)."""
        return int(self.client.xlen(self.served_key))

    def store_online_report(self, report: Mapping[str, Any]) -> None:
        self.client.set(self.online_report_key, json.dumps(report, default=str))

    def online_report(self) -> dict[str, Any] | None:
        raw = self.client.get(self.online_report_key)
        return json.loads(raw) if raw else None


def _served_page(entry_id: bytes, fields: Mapping[bytes, bytes]) -> ServedPage:
    entry = entry_id.decode()
    return ServedPage(
        entry_id=entry,
        served_ms=int(fields[b"t"]),
        user_id=fields[b"u"].decode(),
        post_ids=fields[b"p"].decode().split("\n") if fields[b"p"] else [],
        first_rank=int(fields[b"r"]),
        experiment=fields[b"e"].decode(),
        variant=fields[b"v"].decode(),
        ranking=fields[b"k"].decode(),
        model_version=fields[b"m"].decode(),
    )


def cut_exclusions(posts: Mapping[str, int], cutoff: int) -> Mapping[str, int]:
    """The posts of ``posts`` (post id -> arrival, microseconds) that arrived by ``cutoff``."""
    if all(at <= cutoff for at in posts.values()):
        return posts
    return {post_id: at for post_id, at in posts.items() if at <= cutoff}


def parse_users_message(message: Mapping[str, Any] | None) -> list[str] | None:
    """The user ids of an :attr:`RecsCache.events_channel` message, or None if it is not one."""
    try:
        users = json.loads(message["data"])
    except (TypeError, ValueError, KeyError):
        return None
    return [str(user) for user in users] if isinstance(users, list) else None


def _microseconds(arrival: bytes | str) -> int:
    """An arrival time "seconds.micros" as returned by the event script, in microseconds."""
    seconds, _, micros = (arrival.decode() if isinstance(arrival, bytes) else arrival).partition(".")
    return int(seconds) * 1_000_000 + int(micros or 0)


def _as_user_reads(
    now: int,
    seen: list[Any],
    shown: list[Any],
    *,
    blob: bytes | None,
    current: bytes | None,
    record: bytes | None,
    published: bool | None,
    generation: bool,
) -> UserReads:
    """The :class:`UserReads` of the replies."""
    return UserReads(
        now=now,
        generation=int(current or 0) if generation else None,
        list_blob=blob,
        live_user=record,
        published=published,
        seen=_cut(_zset_entries(seen), now),
        shown=_cut(_zset_entries(shown), now),
    )


def _zset_entries(reply: list[Any]) -> Iterable[tuple[bytes, Any]]:
    """(member, score) pairs of a ``ZRANGE ... WITHSCORES`` reply: RESP3's pairs, or RESP2's (and a script's)
    flat list of members and scores."""
    if reply and isinstance(reply[0], list):
        return reply
    return zip(reply[::2], reply[1::2], strict=True)


def _cut(entries: Iterable[tuple[bytes, Any]], cutoff: int) -> dict[str, int]:
    """zset entries (member, seconds as Redis prints them) as post id -> microseconds, none after ``cutoff``."""
    found = {}
    for member, score in entries:
        at = round(float(score) * 1_000_000)
        if at <= cutoff:
            found[member.decode()] = at
    return found
