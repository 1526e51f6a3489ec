"""The dataset format (DESIGN section 3) and the in-memory :class:`Dataset` every later stage works on.

Ids are mapped to dense integer indices once, when a dataset is built, so that features, training,
ranking and evaluation work on numpy arrays. Two sources deliver the five tables as :class:`Table` rows:
CSV directories (:mod:`ml.csv_files`) and PostgreSQL (:mod:`ml.db.read`); both end in
:func:`ml.validate.build_dataset`, which owns the validation rules, so a bad row is refused the same way
whichever source it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INTERACTION_TYPES: tuple[str, ...] = ("view", "like", "comment")

# The columns of each table, in the order of the files and of the SQL queries (DESIGN section 3).
COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "role", "created_at"),
    "communities": ("id", "name"),
    "follows": ("user_id", "community_id", "created_at"),
    "posts": ("id", "community_id", "author_id", "tags", "created_at"),
    "interactions": ("user_id", "post_id", "type", "created_at"),
}
TAG_SEPARATOR = "|"

# Rows read, checked and turned into arrays at a time: millions of interactions then cost a few bytes
# each in memory rather than a Python object per field.
CHUNK_ROWS = 65_536


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users, communities, follows, posts and interactions, with ids mapped to indices.

    Attributes
    ----------
    user_ids, user_roles : list of str, length U
    community_ids, community_names : list of str, length C
    follow_user, follow_community : int32 arrays, length F (indices into users and communities)
    item_ids : list of str, length I (posts)
    item_community : int32 array, length I (index into communities)
    item_author : int32 array, length I (index into users, -1 when empty or not a known user)
    item_tags : list of tuple of str, length I
    item_time : int64 array, length I (post creation, Unix seconds UTC)
    inter_user, inter_item : int32 arrays, length N
    inter_type : int8 array, length N (index into INTERACTION_TYPES)
    inter_time : int64 array, length N (Unix seconds UTC); repeats of a (user, post) pair are kept
    """

    user_ids: list[str]
    user_roles: list[str]
    community_ids: list[str]
    community_names: list[str]
    follow_user: np.ndarray
    follow_community: np.ndarray
    item_ids: list[str]
    item_community: np.ndarray
    item_author: np.ndarray
    item_tags: list[tuple[str, ...]]
    item_time: np.ndarray
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_type: np.ndarray
    inter_time: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return int(self.inter_user.shape[0])


def _row_number(index: int) -> int:
    return index + 1


@dataclass(frozen=True)
class Table:
    """The rows of one table as a source delivers them, for :func:`build_dataset`.

    Attributes
    ----------
    source : str
        Names the file or query in error messages.
    rows : iterable of sequences
        Each row holds the table's columns in the order of :data:`COLUMNS`. Timestamps are ISO 8601
        strings or ``datetime`` (naive means UTC); ``tags`` is a ``|``-joined string or a list of str;
        ``None`` in an optional column (role, name, author_id, tags) reads as empty.
    line_of : callable
        Maps a row's 0-based position in ``rows`` to the line (or row) number shown in messages; rows
        are numbered from 1 by default.
    """

    source: str
    rows: Iterable[Sequence[Any]]
    line_of: Callable[[int], int] = field(default=_row_number)


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags in order, without blanks and repeats, from a ``|``-joined string or a list."""
    if value is None:
        return ()
    parts = value.split(TAG_SEPARATOR) if isinstance(value, str) else (str(v) for v in value if v is not None)
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
