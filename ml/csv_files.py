"""Reading a dataset directory: five CSV files (DESIGN section 3), read lazily in chunks.

:func:`read_dataset_dir` reads and validates a directory; :func:`csv_table` and :func:`csv_rows` turn an open
CSV file (with or without a header) into a :class:`~ml.dataset.Table` for :func:`ml.validate.build_dataset`,
keeping each row's real line number for the error messages.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
from collections.abc import Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import TextIO

from ml.dataset import CHUNK_ROWS, COLUMNS, Dataset, Table
from ml.errors import DatasetError
from ml.validate import build_dataset


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
        self._file = file
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
        except UnicodeDecodeError as exc:
            # The decoder reads blocks ahead of the CSV reader: the line is found again in the file's bytes.
            line = _undecodable_line(self._file) or self._reader.line_num + 1
            byte = exc.object[exc.start : exc.start + 1].hex()
            problem = f"{self._source}:{line}: not UTF-8 (byte 0x{byte}: {exc.reason})"
            raise DatasetError(f"{self._source} cannot be read", [problem]) from None
        except csv.Error as exc:
            line = self._reader.line_num + 1
            raise DatasetError(f"{self._source} cannot be read", [f"{self._source}:{line}: {exc}"]) from None

    def _chunks(self) -> Iterator[list[list[str]]]:
        index = 0  # of the next data row
        while True:
            first_line = self._reader.line_num + 1
            chunk = self._next_chunk(CHUNK_ROWS)
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


def _undecodable_line(file: TextIO) -> int | None:
    """The number of the first line of ``file`` that is not UTF-8, read again from disk; None if it has no path.

    Only on the error path: a UTF-8 sequence never holds a newline byte, so lines split cleanly.
    """
    name = getattr(file, "name", None)
    if not isinstance(name, str) or not Path(name).is_file():
        return None
    with open(name, "rb") as raw:
        for number, line in enumerate(raw, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
