"""The shipped schema (``schema.sql``: users, communities, follows, posts, interactions) and its row counts."""

from __future__ import annotations

from pathlib import Path

from psycopg2 import extensions, sql

from ml.dataset import COLUMNS

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
TABLES = tuple(COLUMNS)  # also the order of import: referenced tables first


def create_schema(conn: extensions.connection) -> None:
    """Create the five tables and their indexes if missing (runs ``ml/db/schema.sql``), and commit."""
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA_PATH.read_text(encoding="utf-8"))


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
