"""Reading only what changed: a run's interactions kept on disk, and the next run's read merged with them.

At 20M interactions the load stage reads a gigabyte of CSV (68 s on the 2-core machine), though a five-minute
run adds a few thousand rows. So a run saves, next to its version's artifact, ``<version>.data.npz``: the
interactions it read (by user and post id) and where they end. The next run, when it may (:func:`read`),
reads the interactions created since that end, less a lookback, through ``SQL_INTERACTIONS`` wrapped (the live
refresh's way), and the other four tables whole (they are small, and their rows change in place: roles, tags,
unfollows); it keeps the saved rows older than the cut, maps them onto the new indices, and adds the new ones.

Rows are split at one instant, ``cut``: saved rows before it, read rows from it on, so a row is never counted
twice nor missed. Saved rows of users or posts that are gone are dropped, as a full read would no longer find
them. Then the rows the query returns from before the cut are counted in PostgreSQL (one scan, no transfer):
if they are not as many as the rows kept, some were deleted, or committed later than
``REFRESH_LOOKBACK_SECONDS`` after their ``created_at``, and the run reads everything instead. What an
incremental read does not see: a row before the cut rewritten in place (its type or time changed), or a deletion
and a late row that cancel out in the count; they stay until a run reads everything (the scheduled full retrain,
or any run without a usable snapshot). A snapshot taken with other ``SQL_*`` queries is not used.

No pickle: plain arrays (``allow_pickle=False``), ids as NUL-joined UTF-8.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg2 import extensions

import ml.artifact
from ml.dataset import COLUMNS, Dataset
from ml.db.read import count_created_before, read_dataset
from ml.warm import pack_names, unpack_names

logger = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = ".data.npz"


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The interactions a run read, by id, and the queries it read them with."""

    user_ids: list[str]
    item_ids: list[str]
    inter_user: np.ndarray  # int32, indices into user_ids
    inter_item: np.ndarray  # int32, indices into item_ids
    inter_type: np.ndarray  # int8
    inter_time: np.ndarray  # int64, Unix seconds
    queries: str  # digest of the SQL_* queries (queries_digest)

    @property
    def newest(self) -> int | None:
        """The newest interaction's time (Unix seconds), or None without interactions."""
        return int(self.inter_time.max()) if len(self.inter_time) else None


@dataclass(frozen=True)
class Read:
    """How a load read its data: ``mode`` ``incremental`` or ``full``, why, and what it read."""

    mode: str
    reason: str
    since: int | None = None  # the cut (Unix seconds) of an incremental read
    rows_read: int = 0  # interactions read from PostgreSQL
    rows_kept: int = 0  # interactions taken from the snapshot

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def queries_digest(queries: Mapping[str, str]) -> str:
    """A sha256 of the five queries: a snapshot read with others is not merged with their rows."""
    text = json.dumps({table: queries[table] for table in COLUMNS}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save(
    model_dir: str | os.PathLike,
    version: str,
    dataset: Dataset,
    queries: Mapping[str, str],
    keep: Sequence[str] = (),
) -> Path:
    """Write ``<version>.data.npz`` atomically; remove the snapshots of versions other than ``version`` and ``keep``."""
    arrays = {
        "queries": np.frombuffer(queries_digest(queries).encode("ascii"), dtype=np.uint8),
        "user_ids": pack_names(dataset.user_ids),
        "item_ids": pack_names(dataset.item_ids),
        "inter_user": dataset.inter_user.astype(np.int32, copy=False),
        "inter_item": dataset.inter_item.astype(np.int32, copy=False),
        "inter_type": dataset.inter_type.astype(np.int8, copy=False),
        "inter_time": dataset.inter_time.astype(np.int64, copy=False),
    }
    return ml.artifact.save_beside(model_dir, version, SNAPSHOT_SUFFIX, arrays, keep)


def load(model_dir: str | os.PathLike, version: str | None) -> Snapshot | None:
    """The snapshot saved with ``version``, or None when there is none (or it cannot be read)."""
    if version is None:
        return None
    path = Path(model_dir) / f"{version}{SNAPSHOT_SUFFIX}"
    try:
        with np.load(path, allow_pickle=False) as data:
            snapshot = Snapshot(
                unpack_names(data["user_ids"]),
                unpack_names(data["item_ids"]),
                data["inter_user"],
                data["inter_item"],
                data["inter_type"],
                data["inter_time"],
                data["queries"].tobytes().decode("ascii"),
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("data snapshot %s unreadable (%s): reading everything", path, exc)
        return None
    sizes = {len(snapshot.inter_item), len(snapshot.inter_type), len(snapshot.inter_time)}
    if sizes != {len(snapshot.inter_user)}:
        logger.warning("data snapshot %s is inconsistent: reading everything", path)
        return None
    return snapshot


def read(
    conn: extensions.connection,
    queries: Mapping[str, str],
    snapshot: Snapshot | None,
    lookback_seconds: float,
) -> tuple[Dataset, Read]:
    """The training data: merged from ``snapshot`` and the interactions since it, or read whole.

    A whole read happens when there is no snapshot, it holds no interactions, it was read with other queries,
    or PostgreSQL holds another number of rows before the cut than the snapshot keeps (rows deleted or
    committed late); :class:`Read` says which and why. Raises :class:`ml.errors.DatasetError` as
    :func:`ml.db.read.read_dataset` does.
    """
    why_not = None
    if snapshot is None:
        why_not = "no data snapshot of the served version"
    elif snapshot.queries != queries_digest(queries):
        why_not = "the SQL_* queries changed since the snapshot"
    elif snapshot.newest is None:
        why_not = "the snapshot holds no interactions"
    if why_not is not None:
        dataset = read_dataset(conn, queries)
        return dataset, Read("full", why_not, rows_read=dataset.num_interactions)
    cut = snapshot.newest - int(np.ceil(lookback_seconds))
    recent = read_dataset(conn, queries, interactions_since=cut)
    older = snapshot.inter_time < cut
    users = _index_map(snapshot.user_ids, recent.user_ids)[snapshot.inter_user[older]]
    items = _index_map(snapshot.item_ids, recent.item_ids)[snapshot.inter_item[older]]
    present = (users >= 0) & (items >= 0)
    kept = int(present.sum())
    in_database = count_created_before(conn, queries["interactions"], cut)
    if in_database != kept:
        dataset = read_dataset(conn, queries)
        why = (
            f"the interactions before the cut changed since the snapshot ({in_database} in PostgreSQL, {kept} "
            "kept): rows were deleted or committed late"
        )
        return dataset, Read("full", why, rows_read=dataset.num_interactions)
    merged = dataclasses.replace(
        recent,
        inter_user=np.concatenate([users[present], recent.inter_user]).astype(np.int32),
        inter_item=np.concatenate([items[present], recent.inter_item]).astype(np.int32),
        inter_type=np.concatenate([snapshot.inter_type[older][present], recent.inter_type]).astype(np.int8),
        inter_time=np.concatenate([snapshot.inter_time[older][present], recent.inter_time]).astype(np.int64),
    )
    reason = f"the interactions since the served version's data (less {lookback_seconds:g} s of lookback)"
    return merged, Read("incremental", reason, since=cut, rows_read=recent.num_interactions, rows_kept=kept)


def _index_map(old_ids: list[str], new_ids: list[str]) -> np.ndarray:
    """For each old index, the index of the same id among ``new_ids``, or -1 when it is gone."""
    if old_ids == new_ids[: len(old_ids)]:  # nobody left and newcomers sort last: indices stand
        return np.arange(len(old_ids), dtype=np.int64)
    index = {value: i for i, value in enumerate(new_ids)}
    return np.fromiter((index.get(value, -1) for value in old_ids), dtype=np.int64, count=len(old_ids))
