"""PostgreSQL: the shipped schema, a bulk loader for dataset directories, and the training-data reader.

The service only reads: :func:`read_dataset` runs the five configurable queries (``Settings.sql_queries``)
inside one read-only snapshot and streams each result with ``COPY (query) TO STDOUT`` into the same CSV
reader and validation as a dataset directory, so a deployment's own (NestJS) schema works through plain
SQL, without migrations. :func:`load_dataset_dir` is for demo data, tests and docker init: it validates a
directory first, then imports it with ``COPY`` in one transaction, so a bad file imports nothing.

Command line::

    python -m ml.db init  [--database-url URL]            create the schema (idempotent)
    python -m ml.db load DIR [--database-url URL] [--replace]
    python -m ml.db count [--database-url URL]            rows per table (0 where a table is missing)
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import extensions, sql

from common.config import load_settings
from ml.dataset import COLUMNS, TAG_SEPARATOR, Dataset, build_dataset, csv_rows, csv_table, read_dataset_dir
from ml.errors import DatasetError

logger = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
TABLES = tuple(COLUMNS)  # also the order of import: referenced tables first


class ConnectError(psycopg2.OperationalError):
    """PostgreSQL could not be reached or refused the connection, said in one line for the operator.

    The message names ``DATABASE_URL`` (password hidden), what went wrong and what to do; ``kind`` is one of
    ``role``, ``password``, ``database``, ``unreachable``, ``refused`` (pg_hba.conf) or ``other``. It stays an
    ``OperationalError``, so the training task still retries it like any outage.
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):
        # Celery and multiprocessing rebuild exceptions from their arguments.
        return type(self), (str(self), self.kind)


def connect(database_url: str, database: str | None = None) -> extensions.connection:
    """Open a connection that talks UTF-8 and names itself in ``pg_stat_activity``.

    ``database`` replaces the URL's database (``postgres`` to check the server or create databases). A
    connection that fails raises :class:`ConnectError` with a one-line message.
    """
    options = {"dbname": database} if database else {}
    try:
        conn = psycopg2.connect(database_url, connect_timeout=10, application_name="recsvc", **options)
    except psycopg2.OperationalError as exc:
        # The one line says all libpq said (and what to do); its multi-line original would only repeat it.
        raise connect_error(database_url, exc) from None
    conn.set_client_encoding("UTF8")
    return conn


def redact_url(database_url: str) -> str:
    """The URL (or ``key=value`` string) with its password replaced by ``***``, for messages and logs."""
    if "://" not in database_url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", database_url)
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"))


# libpq's wording (it is not localised for connection failures before the server answers).
_UNREACHABLE = re.compile(
    r"connection refused|could not translate host name|timeout expired|no route to host|network is unreachable|"
    r"could not connect to server|no such file or directory|connection timed out|server closed the connection",
    re.IGNORECASE,
)


def connect_error(database_url: str, exc: psycopg2.OperationalError) -> ConnectError:
    """Turn psycopg2's failure to connect into a :class:`ConnectError`: what went wrong, and what to do."""
    # libpq reports each address it tried ("connection to server at ... failed: ..."): match over all of them
    # (one may be refused while another answers "role does not exist"), show the last.
    text = str(exc).strip() or type(exc).__name__
    attempts = re.findall(r"failed: (?:FATAL:\s+)?(.*)", text) or [text.splitlines()[0]]
    detail = attempts[-1].strip()
    shown = redact_url(database_url)
    parts = urlsplit(database_url) if "://" in database_url else None
    hostinfo = parts.netloc.rpartition("@")[2] if parts else ""
    host = f"{parts.hostname}:{parts.port or 5432}" if parts and parts.hostname else "the default host"
    no_user = (
        " (DATABASE_URL names no user, so your login name or PGUSER was used)" if parts and not parts.username else ""
    )
    role_missing = re.search(r'role "([^"]*)" does not exist', text)
    password_refused = re.search(r'password authentication failed for user "([^"]*)"', text)
    missing = re.search(r'database "([^"]*)" does not exist', text)
    if role_missing:
        kind, role = "role", role_missing
        example = (
            urlunsplit(parts._replace(netloc=f"postgres@{hostinfo}")) if parts else "postgresql://postgres@HOST/DB"
        )
        what = (
            f'role "{role[1]}" does not exist{no_user}; create it (sudo -u postgres createuser --createdb {role[1]}) '
            f"or set DATABASE_URL to a role that exists, e.g. DATABASE_URL={example}"
        )
    elif password_refused:
        kind, role = "password", password_refused
        what = (
            f'the password of role "{role[1]}" was refused; put the right one in DATABASE_URL '
            "(postgresql://USER:PASSWORD@HOST:PORT/DB, special characters percent-encoded) or set it: "
            f"sudo -u postgres psql -c \"ALTER ROLE {role[1]} PASSWORD '...'\""
        )
    elif "no password supplied" in text:
        kind = "password"
        what = (
            f"the server asks for a password and DATABASE_URL has none{no_user}; add it "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB) or connect as a role the server trusts"
        )
    elif missing:
        kind = "database"
        what = (
            f'database "{missing[1]}" does not exist; create it with python scripts/services.py --create-database '
            f"(or createdb {missing[1]})"
        )
    elif "pg_hba.conf" in text:
        kind = "refused"
        what = f"the server does not admit this role from this host ({detail}); allow it in pg_hba.conf"
    elif _UNREACHABLE.search(detail):
        kind = "unreachable"
        what = f"no PostgreSQL server answers at {host} ({detail}); start it (make services) or fix DATABASE_URL"
    else:
        kind = "other"
        what = f"{detail}; check DATABASE_URL"
    return ConnectError(f"cannot connect to PostgreSQL with DATABASE_URL={shown}: {what}", kind)


def create_database(database_url: str) -> bool:
    """Create the database ``database_url`` names unless it exists (through the server's ``postgres`` database).

    Returns True when it was created. Used by ``make run`` (scripts/services.py) and the benchmarks.
    """
    name = unquote(urlsplit(database_url).path.lstrip("/"))
    conn = connect(database_url, database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


def create_schema(conn: extensions.connection) -> None:
    """Create the five tables and their indexes if missing (runs ``ml/schema.sql``), and commit."""
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA_PATH.read_text(encoding="utf-8"))


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
    dataset = read_dataset_dir(path)
    counts = {
        "users": dataset.num_users,
        "communities": len(dataset.community_ids),
        "follows": len(dataset.follow_user),
        "posts": dataset.num_items,
        "interactions": dataset.num_interactions,
    }
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")  # naive timestamps in the files are UTC
            cur.execute(SCHEMA_PATH.read_text(encoding="utf-8"))
            if replace:
                cur.execute(
                    sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(map(sql.Identifier, TABLES)))
                )
            else:
                _refuse_existing_ids(cur, path, dataset)
            for table in TABLES:
                with (path / f"{table}.csv").open("rb") as file:
                    _copy_in(cur, table, file)
    except psycopg2.Error as exc:
        where = f" ({exc.diag.context.strip()})" if exc.diag.context else ""
        raise DatasetError(f"import of {path} failed, nothing was imported: {exc.pgerror or exc}{where}") from exc
    logger.info("imported %s: %s", path, counts)
    return counts


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


def read_dataset(conn: extensions.connection, queries: Mapping[str, str]) -> Dataset:
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

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        A query fails or returns other columns, or a row is invalid (reported as
        ``"SQL_<TABLE> query:<row>: <what>"``).
    """
    if conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError("read_dataset needs a connection that is not inside a transaction")
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            # One snapshot for all five queries, so a row added meanwhile cannot refer to one not read.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Timestamps then leave the database as ISO 8601 in UTC ("2026-11-26 10:15:00+00"), which the
            # dataset reader parses in bulk, whatever the server's zone; and a custom query that turns a
            # timestamptz into a date or a timestamp does so in UTC.
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            cur.execute("SET LOCAL DateStyle = 'ISO, YMD'")
            tables = {}
            for table in TABLES:
                source = f"SQL_{table.upper()} query"
                tables[table] = csv_rows(_copy_out(cur, table, queries[table], source), source)
            return build_dataset(tables, name="database")
    finally:
        conn.rollback()
        conn.autocommit = autocommit


def _copy_out(cur: extensions.cursor, table: str, query: str, source: str) -> io.StringIO:
    """Run one configured query and return its rows as CSV text (tags as ``|``-joined text), rewound."""
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
    out = io.StringIO(newline="")
    try:
        cur.copy_expert(statement, out)
    except psycopg2.Error as exc:
        raise DatasetError(f"{source} failed: {(exc.pgerror or str(exc)).strip()}\n  query: {query}") from exc
    out.seek(0)
    return out


def count_rows(conn: extensions.connection) -> dict[str, int]:
    """Rows per table of the shipped schema; 0 for a table that does not exist yet."""
    counts = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' AND pg_table_is_visible(oid)",
            (list(TABLES),),
        )
        present = {row[0] for row in cur.fetchall()}
        for table in TABLES:
            if table in present:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                counts[table] = cur.fetchone()[0]
            else:
                counts[table] = 0
    return counts


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="PostgreSQL URL (default: DATABASE_URL or DB_* settings)")
    parser = argparse.ArgumentParser(prog="python -m ml.db", description="The shipped PostgreSQL schema and loader.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", parents=[common], help="create the schema if needed")
    load = commands.add_parser(
        "load", parents=[common], help="create the schema if needed and import a dataset directory"
    )
    load.add_argument("directory", help="dataset directory (users.csv, communities.csv, ...)")
    load.add_argument("--replace", action="store_true", help="empty the tables first (in the same transaction)")
    commands.add_parser("count", parents=[common], help="print rows per table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        conn = connect(args.database_url or load_settings().database_url)
    except (ValueError, psycopg2.Error) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}".strip(), file=sys.stderr)
        return 1
    try:
        if args.command == "init":
            create_schema(conn)
            print("schema ready")
        elif args.command == "load":
            counts = load_dataset_dir(conn, args.directory, replace=args.replace)
            print("imported " + ", ".join(f"{n} {table}" for table, n in counts.items()))
        else:
            for table, n in count_rows(conn).items():
                print(f"{table} {n}")
    except (DatasetError, psycopg2.Error) as exc:
        print(f"error: {exc}".strip(), file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
