"""The bulk loader: a dataset directory validated and imported with ``COPY`` in one transaction.

For demo data, tests and docker init (``python -m ml.db load DIR``): a bad file imports nothing (the files are
validated while the server copies them, and the transaction commits only once they passed). The five
tables' foreign keys and secondary indexes are dropped before the copy and built again after it, in the same
transaction: one join per foreign key and one sort per index instead of a check and an index insert per row
(20M interactions: 105 s, docs/PERFORMANCE.md). Readers never see the tables
without them (DDL takes an exclusive lock until the commit).
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
from psycopg2 import extensions, sql

from ml.csv_files import csv_table, read_dataset_dir
from ml.dataset import COLUMNS, TAG_SEPARATOR, Dataset
from ml.db.schema import SCHEMA_PATH, TABLES
from ml.errors import DatasetError

logger = logging.getLogger(__name__)


def load_dataset_dir(conn: extensions.connection, path: str | Path, replace: bool = False) -> dict[str, int]:
    """Import a dataset directory into the shipped schema, all or nothing.

    Parameters
    ----------
    conn : psycopg2 connection
        Not inside a transaction; the import runs in its own and commits it.
    path : str or Path
        A dataset directory (DESIGN section 3).
    replace : bool
        Empty the five tables first (in the same transaction). Otherwise rows are appended, and ids that
        already exist in the database are refused.

    Returns
    -------
    dict of str to int
        Rows imported per table.

    Raises
    ------
    DatasetError
        The directory is invalid (every bad row with file and line), or an id already exists, or the
        database refused a row; nothing is imported in any of these cases.
    """
    path = Path(path)
    # The files are validated in a thread while the server copies them: on two cores the two halves of the
    # work overlap. The transaction commits only once the validation has passed.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="validate") as pool:
        validating = pool.submit(read_dataset_dir, path)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL TIME ZONE 'UTC'")  # naive timestamps in the files are UTC
                cur.execute(SCHEMA_PATH.read_text(encoding="utf-8"))
                if replace:
                    cur.execute(
                        sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(map(sql.Identifier, TABLES)))
                    )
                else:
                    _refuse_existing_ids(cur, path, validating.result())
                rebuild = _drop_foreign_keys_and_indexes(cur)
                for table in TABLES:
                    with (path / f"{table}.csv").open("rb") as file:
                        _copy_in(cur, table, file)
                cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index sorts in memory
                for statement in rebuild:
                    cur.execute(statement)
                dataset = validating.result()  # a bad file rolls the copy back
        except (psycopg2.Error, OSError) as exc:
            validating.result()  # the file's own problem, with its line, says more than the server's
            if isinstance(exc, OSError):
                raise
            where = f" ({exc.diag.context.strip()})" if exc.diag.context else ""
            raise DatasetError(f"import of {path} failed, nothing was imported: {exc.pgerror or exc}{where}") from exc
    counts = {
        "users": dataset.num_users,
        "communities": len(dataset.community_ids),
        "follows": len(dataset.follow_user),
        "posts": dataset.num_items,
        "interactions": dataset.num_interactions,
    }
    logger.info("imported %s: %s", path, counts)
    return counts


def _drop_foreign_keys_and_indexes(cur: extensions.cursor) -> list[str]:
    """Drop the foreign keys and the indexes (other than primary keys) of the five tables; return the
    statements that create them again, indexes first (a foreign key's checks then use them).

    The definitions are read back from the catalog (``pg_get_indexdef``, ``pg_get_constraintdef``), so
    ``schema.sql`` stays their one statement.
    """
    cur.execute(
        "SELECT format('DROP INDEX %%I.%%I', n.nspname, i.relname), pg_get_indexdef(i.oid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = i.relnamespace"
        " WHERE t.relname = ANY(%s) AND pg_table_is_visible(t.oid) AND NOT x.indisprimary"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid AND c.contype <> 'f')"
        " ORDER BY i.relname",
        (list(TABLES),),
    )
    indexes = cur.fetchall()
    cur.execute(
        "SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', c.conrelid::regclass, c.conname),"
        " format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s',"
        " c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))"
        " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
        " WHERE c.contype = 'f' AND t.relname = ANY(%s) AND pg_table_is_visible(t.oid) ORDER BY c.conname",
        (list(TABLES),),
    )
    foreign_keys = cur.fetchall()
    for drop, _ in foreign_keys + indexes:
        cur.execute(drop)
    return [create for _, create in indexes + foreign_keys]


def _copy_in(cur: extensions.cursor, table: str, file: io.BufferedReader) -> None:
    """COPY one validated file into its table; posts go through a staging table to turn tags into an array."""
    if table == "posts":
        cur.execute(
            "CREATE TEMP TABLE posts_import (id text, community_id text, author_id text, tags text, created_at text)"
            " ON COMMIT DROP"
        )
        cur.copy_expert(_copy_from_stdin("posts_import", COLUMNS["posts"]), file)
        cur.execute(
            "INSERT INTO posts (id, community_id, author_id, tags, created_at)"
            " SELECT id, community_id, NULLIF(author_id, ''), array_remove(string_to_array(tags, %s), ''),"
            " created_at::timestamptz FROM posts_import",
            (TAG_SEPARATOR,),
        )
    else:
        cur.copy_expert(_copy_from_stdin(table, COLUMNS[table]), file)


def _copy_from_stdin(table: str, columns: tuple[str, ...]) -> sql.Composed:
    # In CSV an unquoted empty field means NULL; optional text (role, name, tags) stays an empty string.
    not_null = [c for c in columns if c in ("role", "name", "tags")]
    force = sql.SQL(", FORCE_NOT_NULL ({})").format(sql.SQL(", ").join(map(sql.Identifier, not_null)))
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING 'UTF8'{})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        force if not_null else sql.SQL(""),
    )


def _refuse_existing_ids(cur: extensions.cursor, path: Path, dataset: Dataset) -> None:
    """Raise DatasetError listing, with file and line, every user, community or post id already stored."""
    problems = []
    for table, ids in (
        ("users", dataset.user_ids),
        ("communities", dataset.community_ids),
        ("posts", dataset.item_ids),
    ):
        cur.execute(
            sql.SQL("SELECT t.id FROM {} AS t WHERE t.id = ANY(%s)").format(sql.Identifier(table)), (list(ids),)
        )
        existing = {row[0] for row in cur.fetchall()}
        if existing:
            with (path / f"{table}.csv").open(newline="", encoding="utf-8-sig") as file:
                rows = csv_table(file, f"{table}.csv", COLUMNS[table])
                problems.extend(
                    f"{rows.source}:{rows.line_of(i)}: id {row[0]!r} already exists in the database"
                    for i, row in enumerate(rows.rows)
                    if row[0] in existing
                )
    if problems:
        raise DatasetError(f"{path} repeats ids already in the database (load with replace to overwrite):", problems)
