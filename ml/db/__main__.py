"""``python -m ml.db``: create the shipped schema, import a dataset directory, count rows.

Command line::

    python -m ml.db init  [--database-url URL]            create the schema (idempotent)
    python -m ml.db load DIR [--database-url URL] [--replace]
    python -m ml.db count [--database-url URL]            rows per table (0 where a table is missing)

Without ``--database-url`` it reads ``DATABASE_URL`` (or ``DB_*``) and nothing else of the configuration
(``ml.settings``), so another process's bad variable cannot stop it.
"""

from __future__ import annotations

import argparse
import logging
import sys

import psycopg2

from ml.db.connection import connect
from ml.db.load import load_dataset_dir
from ml.db.schema import count_rows, create_schema
from ml.errors import DatasetError
from ml.settings import database_url_from, environment


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
        conn = connect(args.database_url or database_url_from(environment()))
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
