"""The training-data reader: the five configurable queries, from one read-only snapshot, into a Dataset.

The service only reads: a deployment's own (NestJS) schema works through plain SQL (``Settings.sql_queries``),
without migrations. Each result leaves PostgreSQL as CSV (``COPY (query) TO STDOUT``) and goes through the
same reader and validation as a dataset directory. A table's result is copied out whole, as CSV text
spooled to a temporary file beyond 64 MB, when the validation reaches that table, and dropped once its rows
are turned into arrays: the reader holds at most one table's text at a time, and never a large one in
memory (20M interactions: peak RSS in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import psycopg2
from psycopg2 import extensions, sql

from ml.csv_files import csv_rows
from ml.dataset import COLUMNS, TAG_SEPARATOR, Dataset, Table
from ml.db.schema import TABLES
from ml.errors import DatasetError
from ml.validate import build_dataset

# A query's CSV text stays in memory up to this size and goes to a temporary file beyond it.
SPOOL_BYTES = 64 * 2**20


@contextmanager
def read_snapshot(conn: extensions.connection, reader: str) -> Iterator[extensions.cursor]:
    """A cursor in one read-only REPEATABLE READ transaction, times in UTC; rolled back afterwards.

    Every read of the configured queries goes through it (the training read, its count of older rows, the
    live refresh), so what one read sees is one consistent snapshot, whatever is written meanwhile.
    ``conn``'s autocommit is restored; it must not be inside a transaction (``reader`` names the caller in
    the error).
    """
    if conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError(f"{reader} needs a connection that is not inside a transaction")
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            yield cur
    finally:
        conn.rollback()
        conn.autocommit = autocommit


def read_dataset(
    conn: extensions.connection, queries: Mapping[str, str], interactions_since: int | None = None
) -> Dataset:
    """Read the training data through the five configured queries, from one consistent snapshot.

    Parameters
    ----------
    conn : psycopg2 connection
        Not inside a transaction; the reads run in a read-only repeatable-read transaction that is ended
        before returning.
    queries : mapping of str to str
        One SELECT per table name of :data:`ml.dataset.COLUMNS` (``Settings.sql_queries``), returning
        exactly those columns, named so and in that order. ``tags`` may be an array or ``|``-joined
        text; timestamps may be ``timestamptz`` (any zone), ``timestamp`` (taken as UTC), ``date`` or
        ISO 8601 text.
    interactions_since : int, optional
        Unix seconds: read only the interactions created at or after it (``SQL_INTERACTIONS`` wrapped as
        ``SELECT * FROM (<query>) q WHERE q.created_at::timestamptz >= ...``, the live refresh's way), for
        :mod:`ml.incremental`, which merges them with the rows an earlier run read. The other four tables are
        read whole.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        A query fails or returns other columns, or a row is invalid (reported as
        ``"SQL_<TABLE> query:<row>: <what>"``).
    """
    # One snapshot for all five queries, so a row added meanwhile cannot refer to one not read.
    with read_snapshot(conn, "read_dataset") as cur:
        # Timestamps leave the database as ISO 8601 in UTC ("2026-11-26 10:15:00+00"), which the dataset
        # reader parses in bulk, whatever the server's zone; and a custom query that turns a timestamptz into
        # a date or a timestamp does so in UTC.
        cur.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        tables = {}
        for table in TABLES:
            source = f"SQL_{table.upper()} query"
            query = queries[table]
            if table == "interactions" and interactions_since is not None:
                query = _created_since(query, interactions_since).as_string(cur)
            tables[table] = Table(source, _rows(cur, table, query, source))
        return build_dataset(tables, name="database")


def count_created_before(conn: extensions.connection, query: str, until: int) -> int:
    """How many rows a configured query returns that were created before Unix second ``until``.

    :mod:`ml.incremental` compares it with the rows it keeps from an earlier read: a difference means rows
    were deleted or committed late since, and it reads everything instead. Same connection rules as
    :func:`read_dataset`.
    """
    with read_snapshot(conn, "count_created_before") as cur:
        wrapped = sql.SQL("SELECT count(*) FROM ({}) AS q WHERE q.created_at::timestamptz < to_timestamp({})")
        try:
            cur.execute(wrapped.format(sql.SQL(query.strip().rstrip(";")), sql.Literal(int(until))))
        except psycopg2.Error as exc:
            raise DatasetError(f"SQL_INTERACTIONS query failed: {(exc.pgerror or str(exc)).strip()}") from exc
        return int(cur.fetchone()[0])


def _created_since(query: str, since: int) -> sql.Composed:
    """``query`` wrapped, not edited, to the rows created at or after Unix second ``since`` (a deployment's
    own SQL keeps working; ``created_at`` may be any of the types the reader takes)."""
    return sql.SQL("SELECT * FROM ({}) AS q WHERE q.created_at::timestamptz >= to_timestamp({})").format(
        sql.SQL(query.strip().rstrip(";")), sql.Literal(int(since))
    )


def _rows(cur: extensions.cursor, table: str, query: str, source: str) -> Iterator[list[str]]:
    """The rows of one configured query, copied out when the first is asked for; the text is dropped after the last."""
    with _copy_out(cur, table, query, source) as text:
        yield from csv_rows(text, source).rows


def _copy_out(cur: extensions.cursor, table: str, query: str, source: str) -> io.TextIOWrapper:
    """Run one configured query and return its rows as CSV text (tags as ``|``-joined text), rewound.

    The text is spooled as UTF-8 bytes, to a temporary file beyond :data:`SPOOL_BYTES`: 20M interactions
    are a gigabyte of CSV, which a ``StringIO`` (four bytes a character) would hold four times over.
    """
    query = query.strip().rstrip(";")
    try:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(query)))
        described = [(column.name, column.type_code) for column in cur.description]
        cur.execute("SELECT oid FROM pg_type WHERE oid = ANY(%s) AND typcategory = 'A'", ([t for _, t in described],))
        arrays = {row[0] for row in cur.fetchall()}
    except psycopg2.Error as exc:
        raise DatasetError(f"{source} failed: {(exc.pgerror or str(exc)).strip()}\n  query: {query}") from exc
    names = tuple(name for name, _ in described)
    if names != COLUMNS[table]:
        raise DatasetError(
            f"{source} returns columns ({', '.join(names)}) but must return ({', '.join(COLUMNS[table])}),"
            f" named so and in this order (rename with AS)\n  query: {query}"
        )
    # Arrays (tags) leave as |-joined text; every other type as its text form.
    selected = [
        sql.SQL("array_to_string(q.{}, {})").format(sql.Identifier(name), sql.Literal(TAG_SEPARATOR))
        if type_code in arrays
        else sql.SQL("q.{}").format(sql.Identifier(name))
        for name, type_code in described
    ]
    # Entities in id order, so the same data always gets the same indices (and the same trained model).
    order = sql.SQL(' ORDER BY q.id::text COLLATE "C"') if "id" in names else sql.SQL("")
    statement = sql.SQL("COPY (SELECT {} FROM ({}) AS q{}) TO STDOUT WITH (FORMAT csv)").format(
        sql.SQL(", ").join(selected), sql.SQL(query), order
    )
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="recsvc-read-")
    try:
        cur.copy_expert(statement, spool)
    except psycopg2.Error as exc:
        spool.close()
        raise DatasetError(f"{source} failed: {(exc.pgerror or str(exc)).strip()}\n  query: {query}") from exc
    spool.seek(0)
    return io.TextIOWrapper(spool, encoding="utf-8", newline="")
