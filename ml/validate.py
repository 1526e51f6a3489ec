"""Validation of the five tables' rows, and their indexing into a :class:`~ml.dataset.Dataset`.

:func:`build_dataset` is where every source (CSV files, PostgreSQL queries, tests' in-memory rows) ends:
it checks each row (column count, ids, references, interaction types, timestamps, repeated follows),
reports every problem with its source and line, and maps ids to dense indices, a chunk of rows at a time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice, repeat
from typing import Any

import numpy as np

from ml.dataset import CHUNK_ROWS, COLUMNS, INTERACTION_TYPES, Dataset, Table, parse_tags
from ml.errors import DatasetError
from ml.ids import MAX_ID_LENGTH
from ml.timestamps import FUTURE_TOLERANCE_SECONDS, parse_timestamps

logger = logging.getLogger(__name__)

_MAX_LISTED_PER_TABLE = 1000  # problems kept per table; the rest are counted
_TYPE_INDEX = {name: i for i, name in enumerate(INTERACTION_TYPES)}


def build_dataset(tables: Mapping[str, Table], name: str = "dataset") -> Dataset:
    """Validate the rows of the five tables and index them into a :class:`Dataset`.

    Parameters
    ----------
    tables : mapping of str to Table
        One :class:`Table` per name of :data:`COLUMNS`.
    name : str
        Names the whole dataset in the error message.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Listing every bad row as ``"<source>:<line>: <what>"``. Nothing is returned unless every row is
        valid. Empty tables are valid (training refuses data it cannot learn from, not the reader).
    """
    missing = [t for t in COLUMNS if t not in tables]
    if missing:
        raise DatasetError(f"{name} lacks the tables {', '.join(missing)}")
    with _gc_paused():
        return _build(tables, name)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while reading.

    Reading allocates millions of short-lived row lists that never form cycles; the collections they
    trigger would otherwise double the reading time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(tables: Mapping[str, Table], name: str) -> Dataset:
    report = _Report()

    users = _Entities(tables["users"], "users", report)
    for ids, (roles, times) in users.read():
        users.add_ids(ids)
        users.texts.extend(_text(v) for v in roles)
        users.check_times(times)

    communities = _Entities(tables["communities"], "communities", report)
    for ids, (names,) in communities.read():
        communities.add_ids(ids)
        communities.texts.extend(_text(v) for v in names)

    posts = _Entities(tables["posts"], "posts", report)
    item_community, item_author, item_time, item_tags = [], [], [], []
    for ids, (community_ids, author_ids, tags, times) in posts.read():
        posts.add_ids(ids)
        item_community.append(posts.refs(community_ids, communities.index, "community_id", "community"))
        item_author.append(posts.authors(author_ids, users.index))
        item_tags.extend(parse_tags(v) for v in tags)
        item_time.append(posts.check_times(times))

    follows = _Rows(tables["follows"], "follows", report)
    follow_user, follow_community = [], []
    for user_ids, community_ids, times in follows.read():
        follow_user.append(follows.refs(user_ids, users.index, "user_id", "user"))
        follow_community.append(follows.refs(community_ids, communities.index, "community_id", "community"))
        follows.check_times(times)
    follow_user_arr, follow_community_arr = _concat(follow_user, np.int32), _concat(follow_community, np.int32)
    follows.check_unique_pairs(follow_user_arr, follow_community_arr, len(communities.ids))

    interactions = _Rows(tables["interactions"], "interactions", report)
    inter_user, inter_item, inter_type, inter_time = [], [], [], []
    for user_ids, post_ids, types, times in interactions.read():
        inter_user.append(interactions.refs(user_ids, users.index, "user_id", "user"))
        inter_item.append(interactions.refs(post_ids, posts.index, "post_id", "post"))
        inter_type.append(interactions.types(types))
        inter_time.append(interactions.check_times(times))

    if report.count:
        raise DatasetError(f"{name} has {report.count} problem(s):", report.messages())
    dataset = Dataset(
        user_ids=users.ids,
        user_roles=users.texts,
        community_ids=communities.ids,
        community_names=communities.texts,
        follow_user=follow_user_arr,
        follow_community=follow_community_arr,
        item_ids=posts.ids,
        item_community=_concat(item_community, np.int32),
        item_author=_concat(item_author, np.int32),
        item_tags=item_tags,
        item_time=_concat(item_time, np.int64),
        inter_user=_concat(inter_user, np.int32),
        inter_item=_concat(inter_item, np.int32),
        inter_type=_concat(inter_type, np.int8),
        inter_time=_concat(inter_time, np.int64),
    )
    logger.info(
        "read %s: %d users, %d communities, %d follows, %d posts, %d interactions",
        name,
        dataset.num_users,
        len(dataset.community_ids),
        len(dataset.follow_user),
        dataset.num_items,
        dataset.num_interactions,
    )
    return dataset


class _Report:
    """Problems found so far, per source, in the order found; each source lists at most a thousand."""

    def __init__(self) -> None:
        self.count = 0
        self._listed: dict[str, list[tuple[int, str]]] = {}
        self._unlisted: dict[str, int] = {}
        self._line_of: dict[str, Callable[[int], int]] = {}

    def add(self, table: Table, index: int, what: str) -> None:
        self.count += 1
        listed = self._listed.setdefault(table.source, [])
        self._line_of[table.source] = table.line_of
        if len(listed) < _MAX_LISTED_PER_TABLE:
            listed.append((index, what))
        else:
            self._unlisted[table.source] = self._unlisted.get(table.source, 0) + 1

    def messages(self) -> list[str]:
        out = []
        for source, listed in self._listed.items():
            line_of = self._line_of[source]
            out.extend(f"{source}:{line_of(i)}: {what}" for i, what in sorted(listed, key=lambda p: p[0]))
            if source in self._unlisted:
                out.append(f"{source}: {self._unlisted[source]} more problem(s) not listed")
        return out


class _Rows:
    """Reads one table in chunks of columns and checks the columns every table shares."""

    def __init__(self, table: Table, name: str, report: _Report):
        self.table = table
        self.width = len(COLUMNS[name])
        self.report = report
        self.positions = np.zeros(0, dtype=np.int64)  # of the current chunk's rows in the table
        self._chunk_positions: list[np.ndarray] = []  # of every row read so far

    def read(self) -> Iterator[list[Sequence[Any]]]:
        """Yield each chunk as one sequence per column; rows with a wrong column count are reported."""
        rows = iter(self.table.rows)
        start = 0
        while chunk := list(islice(rows, CHUNK_ROWS)):
            positions = range(start, start + len(chunk))
            start += len(chunk)
            if len(set(map(len, chunk))) > 1 or len(chunk[0]) != self.width:
                for i, row in zip(positions, chunk, strict=True):
                    if len(row) != self.width:
                        self.report.add(self.table, i, f"expected {self.width} columns, found {len(row)}")
                positions = [i for i, row in zip(positions, chunk, strict=True) if len(row) == self.width]
                chunk = [row for row in chunk if len(row) == self.width]
            if not chunk:
                continue
            self.positions = np.asarray(positions, dtype=np.int64)
            self._chunk_positions.append(self.positions)
            yield list(zip(*chunk, strict=True))

    def problems(self, mask: np.ndarray, what: Callable[[int], str]) -> None:
        """Report the rows of the current chunk where ``mask`` holds; ``what(k)`` describes the k-th row."""
        for k in np.flatnonzero(mask).tolist():
            self.report.add(self.table, int(self.positions[k]), what(k))

    def refs(self, values: Sequence[Any], index: Mapping[str, int], column: str, kind: str) -> np.ndarray:
        """Indices of the ids in ``values``; an empty, overlong or unknown id is a problem."""
        found = np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int32, count=len(values))
        self.problems(found < 0, lambda k: _bad_ref(values[k], column, kind))
        return found

    def types(self, values: Sequence[Any]) -> np.ndarray:
        found = np.fromiter(map(_TYPE_INDEX.get, values, repeat(-1)), dtype=np.int8, count=len(values))
        self.problems(
            found < 0,
            lambda k: f"unknown interaction type {_shown(values[k])} (expected {', '.join(INTERACTION_TYPES)})",
        )
        return found

    def check_times(self, values: Sequence[Any]) -> np.ndarray:
        seconds, valid = _timestamps(values)
        self.problems(~valid, lambda k: f"bad timestamp {_shown(values[k])} in created_at (expected ISO 8601)")
        ahead = valid & (seconds > time.time() + FUTURE_TOLERANCE_SECONDS)
        self.problems(ahead, lambda k: f"timestamp {_shown(values[k])} in created_at is more than a day ahead of now")
        return seconds

    def check_unique_pairs(self, first: np.ndarray, second: np.ndarray, second_count: int) -> None:
        """Report repeated (user, community) follows, naming the line of the first one."""
        valid = (first >= 0) & (second >= 0)
        key = np.where(valid, first.astype(np.int64) * max(second_count, 1) + second, -1 - np.arange(len(first)))
        _, first_at, inverse = np.unique(key, return_index=True, return_inverse=True)
        repeated = np.flatnonzero(first_at[inverse] != np.arange(len(key)))
        positions = _concat(self._chunk_positions, np.int64)
        for k in repeated.tolist():
            first_line = self.table.line_of(int(positions[first_at[inverse[k]]]))
            self.report.add(self.table, int(positions[k]), f"repeated follow (first on line {first_line})")


class _Entities(_Rows):
    """A table whose first column is its own id (users, communities, posts): ids must be unique."""

    def __init__(self, table: Table, name: str, report: _Report):
        super().__init__(table, name, report)
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.index: dict[str, int] = {}
        self._first_position: list[int] = []

    def read(self) -> Iterator[tuple[Sequence[Any], list[Sequence[Any]]]]:
        for columns in super().read():
            yield columns[0], columns[1:]

    def add_ids(self, values: Sequence[Any]) -> None:
        """Index new ids; an empty, overlong or repeated id is a problem (and the row is still kept)."""
        for k, value in enumerate(values):
            position = int(self.positions[k])
            problem = None
            if not isinstance(value, str) or not value:
                problem = "empty id"
            elif len(value) > MAX_ID_LENGTH:
                problem = f"id {_shown(value)} is longer than {MAX_ID_LENGTH} characters"
            elif value in self.index:
                first_line = self.table.line_of(self._first_position[self.index[value]])
                problem = f"duplicate id {_shown(value)} (first on line {first_line})"
            if problem:
                # The row stays (so its other columns are still checked) under an id no reference matches.
                self.report.add(self.table, position, problem)
                self.ids.append("")
            else:
                self.index[value] = len(self.ids)
                self.ids.append(value)
            self._first_position.append(position)

    def authors(self, values: Sequence[Any], users: Mapping[str, int]) -> np.ndarray:
        """Author indices: empty or unknown authors are -1 (deleted accounts are normal); overlong is a problem."""
        texts = [_text(v) for v in values]
        self.problems(
            np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) > MAX_ID_LENGTH,
            lambda k: f"author_id {_shown(texts[k])} is longer than {MAX_ID_LENGTH} characters",
        )
        return np.fromiter(map(users.get, texts, repeat(-1)), dtype=np.int32, count=len(texts))


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _timestamps(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds and validity of ISO 8601 strings, or of ``datetime`` values (naive means UTC)."""
    if set(map(type, values)) == {str}:
        return parse_timestamps(values)
    seconds, valid = parse_timestamps([v if isinstance(v, str) else "" for v in values])
    for k, value in enumerate(values):
        if isinstance(value, datetime):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            seconds[k] = math.floor(aware.timestamp())
            valid[k] = True
    return seconds, valid


def _shown(value: Any) -> str:
    """A value quoted for a message, cut short so that a huge bad field cannot flood the report."""
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60] + "...")
    return repr(value)


def _bad_ref(value: Any, column: str, kind: str) -> str:
    if value is None or value == "":
        return f"empty {column}"
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        return f"{column} {_shown(value)} is longer than {MAX_ID_LENGTH} characters"
    return f"unknown {column} {_shown(value)} (no such {kind})"
