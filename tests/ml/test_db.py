"""The PostgreSQL layer against the real server: schema, atomic COPY loader, and the configurable reader."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import errors

import ml.db.read
from ml import demo
from ml.csv_files import read_dataset_dir
from ml.dataset import INTERACTION_TYPES
from ml.db.connection import ConnectError, connect, create_database
from ml.db.load import load_dataset_dir
from ml.db.read import read_dataset
from ml.db.schema import count_rows, create_schema
from ml.errors import DatasetError
from ml.settings import DEFAULT_QUERIES
from testing.postgres import PASSWORD, PasswordPostgres, unavailable_reason
from testing.processes import free_port
from tests.ml.datasets import dataset_records, tiny_tables, write_dataset_dir

ROOT = Path(__file__).resolve().parents[2]
EMPTY = dict.fromkeys(DEFAULT_QUERIES, 0)


def test_schema_is_idempotent_and_enforces_the_format(pg_conn):
    create_schema(pg_conn)
    create_schema(pg_conn)
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO users VALUES ('u1', 'fan', now()), ('u2', '', now())")
        cur.execute("INSERT INTO communities VALUES ('c1', 'C')")
        cur.execute("INSERT INTO posts (id, community_id, created_at) VALUES ('p1', 'c1', now())")
    pg_conn.commit()
    insert = "INSERT INTO interactions (user_id, post_id, type, created_at) VALUES "
    bad = [
        (insert + "('u1', 'p1', 'share', now())", errors.CheckViolation),
        (insert + "('u9', 'p1', 'view', now())", errors.ForeignKeyViolation),
        ("INSERT INTO follows VALUES ('u1', 'nope', now())", errors.ForeignKeyViolation),
        ("INSERT INTO users VALUES ('u1', 'fan', now())", errors.UniqueViolation),
        (f"INSERT INTO users VALUES ('{'x' * 129}', 'fan', now())", errors.StringDataRightTruncation),
    ]
    for statement, error in bad:
        with pytest.raises(error), pg_conn.cursor() as cur:
            cur.execute(statement)
        pg_conn.rollback()


def test_load_then_read_equals_the_directory(pg_conn, tiny_dataset_dir):
    with pg_conn.cursor() as cur:  # neither the loader nor the reader may depend on the session's zone
        cur.execute("SET TIME ZONE 'Asia/Seoul'")
    pg_conn.commit()
    counts = load_dataset_dir(pg_conn, tiny_dataset_dir)
    assert counts == {"users": 4, "communities": 2, "follows": 4, "posts": 5, "interactions": 12}
    assert count_rows(pg_conn) == counts
    from_db = read_dataset(pg_conn, DEFAULT_QUERIES)
    assert dataset_records(from_db) == dataset_records(read_dataset_dir(tiny_dataset_dir))
    with pg_conn.cursor() as cur:
        cur.execute("SELECT author_id, tags FROM posts ORDER BY id")
        assert cur.fetchall()[:4] == [
            ("u3", ["music", "concert"]),
            (None, ["fanart"]),
            ("u3", []),
            ("deleted-user", ["dance", "mv", "dance"]),
        ]
        cur.execute("SELECT role, created_at FROM users WHERE id = 'u4'")  # naive timestamp in the file: UTC
        assert cur.fetchone() == ("moderator", datetime(2026, 1, 4, 12, tzinfo=UTC))
    pg_conn.rollback()


def test_demo_data_round_trips_through_the_database(pg_conn, tmp_path):
    demo.generate(tmp_path / "demo", users=300, posts=600, interactions=20_000, seed=5)
    load_dataset_dir(pg_conn, tmp_path / "demo")
    from_db = read_dataset(pg_conn, DEFAULT_QUERIES)
    assert dataset_records(from_db) == dataset_records(read_dataset_dir(tmp_path / "demo"))
    # Entities come back in id order, so the same data always gets the same indices.
    assert from_db.user_ids == sorted(from_db.user_ids) and from_db.item_ids == sorted(from_db.item_ids)


def test_the_reader_spools_large_results_to_disk_and_reads_them_back_alike(pg_conn, tmp_path, monkeypatch):
    demo.generate(tmp_path / "demo", users=200, posts=300, interactions=5_000, seed=3)
    load_dataset_dir(pg_conn, tmp_path / "demo")
    in_memory = read_dataset(pg_conn, DEFAULT_QUERIES)
    monkeypatch.setattr(ml.db.read, "SPOOL_BYTES", 1024)  # every table but communities goes to a file
    assert dataset_records(read_dataset(pg_conn, DEFAULT_QUERIES)) == dataset_records(in_memory)


def _bad_interactions(tmp_path):
    tables = tiny_tables()
    tables["interactions"][3][2] = "share"
    return write_dataset_dir(tmp_path / "bad", tables)


def test_a_bad_row_imports_nothing(pg_conn, tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset_dir(pg_conn, _bad_interactions(tmp_path))
    assert info.value.problems == [
        "interactions.csv:5: unknown interaction type 'share' (expected view, like, comment)"
    ]
    assert count_rows(pg_conn) == EMPTY


def test_a_bad_row_leaves_existing_data_unchanged_even_with_replace(pg_conn, tiny_dataset_dir, tmp_path):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    before = count_rows(pg_conn)
    for replace in (False, True):
        with pytest.raises(DatasetError, match="interactions.csv:5"):
            load_dataset_dir(pg_conn, _bad_interactions(tmp_path), replace=replace)
        assert count_rows(pg_conn) == before


def test_existing_ids_are_refused_with_their_lines_and_nothing_is_appended(pg_conn, tiny_dataset_dir, tmp_path):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    tables = tiny_tables()
    tables["users"] = [["new-1", "fan", "2026-01-01"], *tables["users"][2:]]  # u3 and u4 exist already
    tables["follows"] = tables["interactions"] = []
    tables["posts"] = [["p1", "bts", "", "", "2026-02-01"]]
    tables["communities"] = [["bts", "again"], ["exo", "EXO-L"]]
    with pytest.raises(DatasetError) as info:
        load_dataset_dir(pg_conn, write_dataset_dir(tmp_path / "again", tables))
    assert info.value.problems == [
        "users.csv:3: id 'u3' already exists in the database",
        "users.csv:4: id 'u4' already exists in the database",
        "communities.csv:2: id 'bts' already exists in the database",
        "posts.csv:2: id 'p1' already exists in the database",
    ]
    assert count_rows(pg_conn) == {"users": 4, "communities": 2, "follows": 4, "posts": 5, "interactions": 12}


def test_append_and_replace(pg_conn, tiny_dataset_dir, tmp_path):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    renamed = {
        name: [[f"{v}-b" if v and k in _ID_COLUMNS[name] else v for k, v in enumerate(row)] for row in rows]
        for name, rows in tiny_tables().items()
    }
    load_dataset_dir(pg_conn, write_dataset_dir(tmp_path / "b", renamed))
    assert count_rows(pg_conn) == {"users": 8, "communities": 4, "follows": 8, "posts": 10, "interactions": 24}
    load_dataset_dir(pg_conn, tiny_dataset_dir, replace=True)
    assert count_rows(pg_conn) == {"users": 4, "communities": 2, "follows": 4, "posts": 5, "interactions": 12}
    with pg_conn.cursor() as cur:
        cur.execute("SELECT min(id) FROM interactions")  # RESTART IDENTITY
        assert cur.fetchone() == (1,)
    pg_conn.rollback()


def _keys_and_indexes(conn) -> set[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s)"
            " UNION ALL SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
            (list(EMPTY), list(EMPTY)),
        )
        found = set(cur.fetchall())
    conn.rollback()
    return found


def test_the_loader_rebuilds_every_foreign_key_and_index_it_drops_for_the_copy(pg_conn, tiny_dataset_dir, tmp_path):
    create_schema(pg_conn)
    shipped = _keys_and_indexes(pg_conn)
    assert sum(definition.startswith("FOREIGN KEY") for _, definition in shipped) == 5
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    assert _keys_and_indexes(pg_conn) == shipped
    with pytest.raises(DatasetError):  # a failed import rolls the drops back too
        load_dataset_dir(pg_conn, _bad_interactions(tmp_path), replace=True)
    assert _keys_and_indexes(pg_conn) == shipped
    load_dataset_dir(pg_conn, tiny_dataset_dir, replace=True)
    assert _keys_and_indexes(pg_conn) == shipped
    with pytest.raises(errors.ForeignKeyViolation), pg_conn.cursor() as cur:
        cur.execute("INSERT INTO interactions (user_id, post_id, type, created_at) VALUES ('u9', 'p1', 'view', now())")
    pg_conn.rollback()


# Positions of id columns per table (the author of a post too).
_ID_COLUMNS = {"users": {0}, "communities": {0}, "follows": {0, 1}, "posts": {0, 1, 2}, "interactions": {0, 1}}


# --- custom queries over a NestJS-style schema (camelCase, uuid ids, enums, a tags join table) ---

NEST_SCHEMA = """
CREATE SCHEMA nest;
CREATE TYPE nest."Role" AS ENUM ('FAN', 'ARTIST', 'MODERATOR');
CREATE TYPE nest."InteractionKind" AS ENUM ('VIEW', 'LIKE', 'COMMENT');
CREATE TABLE nest."User" (id uuid PRIMARY KEY, role nest."Role" NOT NULL, "createdAt" timestamp(3) NOT NULL);
CREATE TABLE nest."Community" (id uuid PRIMARY KEY, "displayName" text NOT NULL);
CREATE TABLE nest."CommunityMember" ("userId" uuid NOT NULL, "communityId" uuid NOT NULL, "joinedAt" timestamp(3));
CREATE TABLE nest."Post" (
    id uuid PRIMARY KEY, "communityId" uuid NOT NULL, "authorId" uuid,
    "createdAt" timestamp(3) NOT NULL, "deletedAt" timestamp(3)
);
CREATE TABLE nest."Tag" (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE nest."_PostToTag" ("A" uuid NOT NULL, "B" int NOT NULL);
CREATE TABLE nest."Interaction" (
    id serial PRIMARY KEY, "userId" uuid NOT NULL, "postId" uuid NOT NULL,
    kind nest."InteractionKind" NOT NULL, "createdAt" timestamp(3) NOT NULL
);
"""

NEST_QUERIES = {
    "users": 'SELECT id::text AS id, lower(role::text) AS role, "createdAt" AS created_at FROM nest."User"',
    "communities": 'SELECT id AS id, "displayName" AS name FROM nest."Community"',
    "follows": 'SELECT "userId" AS user_id, "communityId" AS community_id, "joinedAt" AS created_at'
    ' FROM nest."CommunityMember"',
    "posts": 'SELECT p.id, p."communityId" AS community_id, p."authorId" AS author_id,'
    " coalesce(string_agg(t.name, '|' ORDER BY t.name), '') AS tags, p.\"createdAt\" AS created_at"
    ' FROM nest."Post" p LEFT JOIN nest."_PostToTag" pt ON pt."A" = p.id LEFT JOIN nest."Tag" t ON t.id = pt."B"'
    ' WHERE p."deletedAt" IS NULL GROUP BY p.id;',
    "interactions": 'SELECT i."userId" AS user_id, i."postId" AS post_id, lower(i.kind::text) AS type,'
    ' i."createdAt" AS created_at FROM nest."Interaction" i JOIN nest."Post" p ON p.id = i."postId"'
    ' WHERE p."deletedAt" IS NULL',
}


@pytest.fixture
def nest_conn(pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute(NEST_SCHEMA)
    pg_conn.commit()
    yield pg_conn
    pg_conn.rollback()
    with pg_conn.cursor() as cur:
        cur.execute("DROP SCHEMA nest CASCADE")
    pg_conn.commit()


def _uid(value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, value))


def _naive(seconds) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC).replace(tzinfo=None)


def _fill_nest(conn, ds) -> None:
    """Store a dataset the way a NestJS app would: uuids, enums, naive UTC timestamps, a tags join table."""
    now = datetime(2026, 3, 1)
    tags = sorted({t for row in ds.item_tags for t in row})
    with conn.cursor() as cur:
        for user, role in zip(ds.user_ids, ds.user_roles, strict=True):
            cur.execute('INSERT INTO nest."User" VALUES (%s, %s, %s)', (_uid(user), role.upper(), now))
        for community, name in zip(ds.community_ids, ds.community_names, strict=True):
            cur.execute('INSERT INTO nest."Community" VALUES (%s, %s)', (_uid(community), name))
        for u, c in zip(ds.follow_user, ds.follow_community, strict=True):
            cur.execute(
                'INSERT INTO nest."CommunityMember" VALUES (%s, %s, %s)',
                (_uid(ds.user_ids[u]), _uid(ds.community_ids[c]), now),
            )
        for name in tags:
            cur.execute('INSERT INTO nest."Tag" (name) VALUES (%s)', (name,))
        for i, post in enumerate(ds.item_ids):
            author = ds.item_author[i]
            cur.execute(
                'INSERT INTO nest."Post" VALUES (%s, %s, %s, %s, NULL)',
                (_uid(post), _uid(ds.community_ids[ds.item_community[i]]),
                 _uid(ds.user_ids[author]) if author >= 0 else None, _naive(ds.item_time[i])),
            )  # fmt: skip
            for tag in ds.item_tags[i]:
                cur.execute('INSERT INTO nest."_PostToTag" VALUES (%s, %s)', (_uid(post), tags.index(tag) + 1))
        for u, i, t, s in zip(ds.inter_user, ds.inter_item, ds.inter_type, ds.inter_time, strict=True):
            cur.execute(
                'INSERT INTO nest."Interaction" ("userId", "postId", kind, "createdAt") VALUES (%s, %s, %s, %s)',
                (_uid(ds.user_ids[u]), _uid(ds.item_ids[i]), INTERACTION_TYPES[t].upper(), _naive(s)),
            )
        # A soft-deleted post (and a view of it) that the queries leave out.
        community = _uid(ds.community_ids[0])
        cur.execute('INSERT INTO nest."Post" VALUES (%s, %s, NULL, %s, %s)', (_uid("gone"), community, now, now))
        cur.execute(
            'INSERT INTO nest."Interaction" ("userId", "postId", kind, "createdAt") VALUES (%s, %s, %s, %s)',
            (_uid(ds.user_ids[0]), _uid("gone"), "VIEW", now),
        )
    conn.commit()


def _in_uuids(records: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Expected records once ids are uuids (authors unknown to users stay unknown) and tags sorted by name."""
    known_users = {u for u, _ in records["users"]}
    return {
        "users": sorted((_uid(u), r) for u, r in records["users"]),
        "communities": sorted((_uid(c), n) for c, n in records["communities"]),
        "follows": sorted((_uid(u), _uid(c)) for u, c in records["follows"]),
        "posts": sorted(
            (_uid(p), _uid(c), _uid(a) if a in known_users else "", tuple(sorted(t)), s)
            for p, c, a, t, s in records["posts"]
        ),
        "interactions": sorted((_uid(u), _uid(p), t, s) for u, p, t, s in records["interactions"]),
    }


def test_custom_queries_read_a_nestjs_schema(nest_conn, tiny_dataset_dir):
    expected = read_dataset_dir(tiny_dataset_dir)
    _fill_nest(nest_conn, expected)
    from_db = read_dataset(nest_conn, NEST_QUERIES)
    assert dataset_records(from_db) == _in_uuids(dataset_records(expected))


def test_tags_may_be_an_array_or_joined_text_and_queries_compute_in_utc(pg_conn, tiny_dataset_dir):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    with pg_conn.cursor() as cur:  # 2026-02-01T10:00Z is already 2026-02-02 in this zone
        cur.execute("SET TIME ZONE 'Pacific/Kiritimati'")
    pg_conn.commit()
    queries = dict(DEFAULT_QUERIES)
    queries["posts"] = (
        "SELECT id, community_id, author_id, array_to_string(tags, '|') AS tags, created_at::date AS created_at"
        " FROM posts"
    )
    from_db = read_dataset(pg_conn, queries)
    assert from_db.item_tags[0] == ("music", "concert")
    assert from_db.item_time[0] == int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("table", "query", "message"),
    [
        ("users", "SELECT id, created_at FROM users", r"SQL_USERS query returns columns \(id, created_at\) but"),
        ("users", "SELECT id, created_at, role FROM users", r"must return \(id, role, created_at\), named so and in"),
        ("follows", 'SELECT "userId", community_id, created_at FROM follows', r"SQL_FOLLOWS query failed: ERROR: +col"),
        ("posts", "SELECT * FROM nowhere", r'SQL_POSTS query failed: ERROR: +relation "nowhere" does not exist'),
    ],
)  # fmt: skip
def test_a_query_with_wrong_columns_or_bad_sql_is_a_clear_error(pg_conn, tiny_dataset_dir, table, query, message):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    with pytest.raises(DatasetError, match=message):
        read_dataset(pg_conn, {**DEFAULT_QUERIES, table: query})
    assert pg_conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_bad_rows_from_queries_are_reported_by_query_and_row(pg_conn, tiny_dataset_dir):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    queries = {
        **DEFAULT_QUERIES,
        "posts": "SELECT id, community_id, author_id, tags, created_at FROM posts WHERE id <> 'p3'",
        "interactions": "SELECT user_id, post_id, type, created_at FROM interactions ORDER BY id",
    }
    with pytest.raises(DatasetError) as info:
        read_dataset(pg_conn, queries)
    assert info.value.problems == [
        "SQL_INTERACTIONS query:6: unknown post_id 'p3' (no such post)",
        "SQL_INTERACTIONS query:7: unknown post_id 'p3' (no such post)",
        "SQL_INTERACTIONS query:9: unknown post_id 'p3' (no such post)",
    ]


def test_query_rows_are_numbered_by_row_even_across_multiline_values(pg_conn, tiny_dataset_dir):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE posts SET tags = ARRAY[E'two\\nlines', 'fine'] WHERE id = 'p1'")
    pg_conn.commit()
    posts = (
        "SELECT id, CASE WHEN id = 'p3' THEN 'nowhere' ELSE community_id END AS community_id, author_id, tags,"
        " created_at FROM posts"
    )
    with pytest.raises(DatasetError) as info:
        read_dataset(pg_conn, {**DEFAULT_QUERIES, "posts": posts})
    assert info.value.problems == ["SQL_POSTS query:3: unknown community_id 'nowhere' (no such community)"]


def test_reader_leaves_the_connection_as_it_found_it(pg_conn, tiny_dataset_dir):
    load_dataset_dir(pg_conn, tiny_dataset_dir)
    pg_conn.autocommit = True
    read_dataset(pg_conn, DEFAULT_QUERIES)
    assert pg_conn.autocommit is True
    pg_conn.autocommit = False
    with pg_conn.cursor() as cur:
        cur.execute("SELECT 1")
    with pytest.raises(ValueError, match="not inside a transaction"):
        read_dataset(pg_conn, DEFAULT_QUERIES)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ml.db", *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False
    )


def test_command_line(pg_conn, database_url, tiny_dataset_dir, tmp_path):
    result = _cli("count", "--database-url", database_url)
    assert result.returncode == 0 and result.stdout.split() == [w for t in EMPTY for w in (t, "0")]
    assert _cli("init", "--database-url", database_url).returncode == 0
    result = _cli("load", str(tiny_dataset_dir), "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "12 interactions" in result.stdout
    result = _cli("load", str(_bad_interactions(tmp_path)), "--database-url", database_url, "--replace")
    assert result.returncode == 1
    assert "interactions.csv:5: unknown interaction type 'share'" in result.stderr
    result = _cli("count", "--database-url", database_url)
    assert "interactions 12" in result.stdout
    result = _cli("count", "--database-url", "postgresql://postgres@127.0.0.1:1/none")
    assert result.returncode == 1 and result.stderr.startswith("error:")


def test_command_line_reads_the_database_url_from_the_settings(pg_conn, database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DB_"))}
    result = _cli("count", env={**env, "DATABASE_URL": database_url})
    assert result.returncode == 0 and "interactions 0" in result.stdout
    result = _cli("count", env={**env, "DATABASE_URL": "mysql://somewhere/db"})
    assert result.returncode == 1 and "DATABASE_URL='mysql://somewhere/db' is invalid" in result.stderr


def test_command_line_reads_no_variable_but_the_database(pg_conn, database_url):
    """``ml.db`` reads ``DATABASE_URL`` (ml.settings), not the service's configuration, which may be wrong elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DB_"))}
    result = _cli("count", env={**env, "DATABASE_URL": database_url, "REDIS_URL": "nonsense", "API_PORT": "0"})
    assert result.returncode == 0, result.stderr
    assert "interactions 0" in result.stdout


def test_create_database_creates_once(database_url):
    name = f"recsvc_test_created_{uuid.uuid4().hex[:8]}"
    url = database_url.rsplit("/", 1)[0] + "/" + name
    admin = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    try:
        assert create_database(url) is True
        assert create_database(url) is False
        psycopg2.connect(url).close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# --- refused connections: one line naming DATABASE_URL, what went wrong and what to do (issue 10, defect 5) ---

MISSING_ROLE = "recsvc_no_such_role"
WRONG_PASSWORD = "wrong-pw-8812"


@pytest.fixture(scope="module")
def password_postgres():
    """A private PostgreSQL that asks for passwords (the shared test server trusts 127.0.0.1)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no password-protected PostgreSQL can be made here: {reason}")
    server = PasswordPostgres()
    try:
        yield server.start()
    finally:
        server.close()


def _server_url(database_url: str, user: str, database: str) -> str:
    """``database_url``'s server, as ``user``, on ``database``."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port or 5432}", path=f"/{database}"))


def refused_cases(database_url: str, server) -> dict[str, tuple[str, list[str]]]:
    """URL and the words its one-line error must hold, per way a connection can be refused."""
    return {
        "missing role": (
            _server_url(database_url, MISSING_ROLE, "postgres"),
            [f'role "{MISSING_ROLE}" does not exist', "createuser", "DATABASE_URL=postgresql://"],
        ),
        "wrong password": (
            server.url(password=WRONG_PASSWORD),
            ['password of role "postgres" was refused', "postgresql://postgres:***@127.0.0.1"],
        ),
        "no password": (server.url(password=None), ["asks for a password", "postgresql://USER:PASSWORD@"]),
        "missing database": (
            _server_url(database_url, "postgres", "recsvc_no_such_db"),
            ['database "recsvc_no_such_db" does not exist', "--create-database"],
        ),
        "no server": (
            f"postgresql://postgres@127.0.0.1:{free_port()}/recsvc",
            ["no PostgreSQL server answers at 127.0.0.1:", "make services"],
        ),
    }


def _assert_one_line(message: str, expected: list[str]) -> None:
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message
    assert "DATABASE_URL" in message
    assert WRONG_PASSWORD not in message and PASSWORD not in message
    for words in expected:
        assert words in message, message


def test_refused_connections_raise_one_line_naming_the_cause(database_url, password_postgres):
    assert connect(password_postgres.url()).close() is None  # the right password gets in
    for case, (url, expected) in refused_cases(database_url, password_postgres).items():
        with pytest.raises(ConnectError) as refused:
            connect(url)
        assert isinstance(refused.value, psycopg2.OperationalError), case  # still retried as an outage
        _assert_one_line(str(refused.value), expected)


@pytest.mark.parametrize(
    "command",
    [["ml.db", "count"], ["ml.db", "init"], ["ml.db", "load", "{dataset}"], ["ml.evaluate", "--from-db"]],
    ids=" ".join,
)
def test_commands_that_read_the_database_fail_in_one_line(command, database_url, password_postgres, tiny_dataset_dir):
    argv = [arg.format(dataset=tiny_dataset_dir) for arg in command]
    for case, (url, expected) in refused_cases(database_url, password_postgres).items():
        result = subprocess.run(
            [sys.executable, "-m", *argv, "--database-url", url], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0, case
        assert result.stderr.startswith("error: cannot connect to PostgreSQL"), (case, result.stderr)
        _assert_one_line(result.stderr, expected)


def test_a_url_without_a_user_says_whose_login_name_was_tried(database_url):
    """The default DATABASE_URL names no user: libpq then uses the login name (or PGUSER), a role that may not exist."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DB_", "PG"))}
    parts = urlsplit(database_url)
    url = f"postgresql://{parts.hostname}:{parts.port or 5432}/recsvc"
    result = _cli("count", env={**env, "DATABASE_URL": url, "PGUSER": MISSING_ROLE})
    assert result.returncode == 1
    _assert_one_line(result.stderr, [f'role "{MISSING_ROLE}" does not exist', "names no user"])
