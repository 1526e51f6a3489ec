"""The in-memory dataset: the five tables of the dataset format (DESIGN section 3), indexed.

Ids are mapped to dense integer indices once, here, so every later stage (features, training, ranking,
evaluation) works on numpy arrays. Readers of CSV directories and of PostgreSQL both end in
:func:`build_dataset`, which also owns the validation rules, so a bad row is refused the same way
whichever source it comes from.

Rows are consumed in chunks and turned into arrays straight away, so reading millions of interactions
keeps a few bytes per interaction in memory rather than a Python object per field.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import gc
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from common.ids import MAX_ID_LENGTH
from ml.errors import DatasetError
from ml.timestamps import parse_timestamps

logger = logging.getLogger(__name__)

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

_CHUNK_ROWS = 65_536
_MAX_LISTED_PER_TABLE = 1000  # problems kept per table; the rest are counted
_TYPE_INDEX = {name: i for i, name in enumerate(INTERACTION_TYPES)}


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


def read_dataset_dir(path: str | Path) -> Dataset:
    """Read and validate a dataset directory (DESIGN section 3).

    Parameters
    ----------
    path : str or Path
        A directory holding ``users.csv``, ``communities.csv``, ``follows.csv``, ``posts.csv`` and
        ``interactions.csv``, UTF-8 with a header row.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Listing every problem found as ``"<file>:<line>: <what>"``: a missing file, a wrong header, a wrong
        number of columns, an empty, overlong or duplicate id, a reference to an unknown id, an unknown
        interaction type or a bad timestamp.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset directory {path} does not exist or is not a directory")
    with contextlib.ExitStack() as stack:
        tables: dict[str, Table] = {}
        problems: list[str] = []
        for name, columns in COLUMNS.items():
            file_path = path / f"{name}.csv"
            try:
                file = stack.enter_context(file_path.open(newline="", encoding="utf-8-sig"))
                tables[name] = csv_table(file, file_path.name, columns)
            except FileNotFoundError:
                problems.append(f"{file_path.name}: missing (expected columns {','.join(columns)})")
            except DatasetError as exc:
                problems.extend(exc.problems)
        if problems:
            raise DatasetError(f"dataset directory {path} cannot be read:", problems)
        return build_dataset(tables, name=f"dataset directory {path}")


def csv_table(file: TextIO, source: str, columns: Sequence[str]) -> Table:
    """A :class:`Table` over an open CSV file whose header must be exactly ``columns``.

    The file must stay open while the table's rows are read. Blank lines are skipped; line numbers in
    messages are the file's real lines, also when a quoted field spans several lines.
    """
    rows = _CsvRows(file, source)
    header = rows.header()
    if header is None:
        raise DatasetError(f"{source} is empty", [f"{source}:1: empty file, expected header {','.join(columns)}"])
    if [h.strip() for h in header] != list(columns):
        raise DatasetError(
            f"{source} has a wrong header",
            [f"{source}:1: header is {','.join(header)!r}, expected {','.join(columns)!r}"],
        )
    return Table(source, rows, rows.line_of)


def csv_rows(file: TextIO, source: str) -> Table:
    """A :class:`Table` over CSV text without a header (such as ``COPY ... TO STDOUT``), rows numbered from 1."""
    return Table(source, _CsvRows(file, source))


class _CsvRows:
    """The data rows of a CSV file, read lazily in chunks, remembering on which line each row starts."""

    def __init__(self, file: TextIO, source: str):
        self._reader = csv.reader(file, strict=True)
        self._source = source
        # Rows usually sit on consecutive lines; only where that breaks (blank lines, quoted newlines)
        # is the (row index, line minus row index) pair recorded.
        self._break_rows: list[int] = []
        self._break_offsets: list[int] = []

    def header(self) -> list[str] | None:
        return next(iter(self._next_chunk(1)), None)

    def __iter__(self) -> Iterator[list[str]]:
        return chain.from_iterable(self._chunks())

    def line_of(self, index: int) -> int:
        at = bisect.bisect_right(self._break_rows, index) - 1
        return index + self._break_offsets[at]

    def _next_chunk(self, size: int) -> list[list[str]]:
        try:
            return list(islice(self._reader, size))
        except (csv.Error, UnicodeDecodeError) as exc:
            line = self._reader.line_num + 1
            raise DatasetError(f"{self._source} cannot be read", [f"{self._source}:{line}: {exc}"]) from None

    def _chunks(self) -> Iterator[list[list[str]]]:
        index = 0  # of the next data row
        while True:
            first_line = self._reader.line_num + 1
            chunk = self._next_chunk(_CHUNK_ROWS)
            if not chunk:
                return
            if self._reader.line_num - first_line + 1 == len(chunk) and [] not in chunk:
                self._note_start(index, first_line)  # the common case: one row per line
            else:
                chunk = self._track_lines(chunk, index, first_line)
            index += len(chunk)
            yield chunk

    def _track_lines(self, chunk: list[list[str]], index: int, line: int) -> list[list[str]]:
        """Note where each row starts when rows span several lines or blank lines sit between them."""
        rows = []
        for row in chunk:
            if row:
                self._note_start(index + len(rows), line)
                rows.append(row)
            # A quoted field holds the line ends it spans (\r\n, \n or \r each end one line).
            line += 1 + sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)
        return rows

    def _note_start(self, index: int, line: int) -> None:
        offset = line - index
        if not self._break_offsets or self._break_offsets[-1] != offset:
            self._break_rows.append(index)
            self._break_offsets.append(offset)


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
        while chunk := list(islice(rows, _CHUNK_ROWS)):
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


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags in order, without blanks and repeats, from a ``|``-joined string or a list."""
    if value is None:
        return ()
    parts = value.split(TAG_SEPARATOR) if isinstance(value, str) else (str(v) for v in value if v is not None)
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


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
