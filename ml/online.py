"""recsvc's own PostgreSQL table of served impressions, and the online counts the experiment report is built from.

The table lives in a schema of recsvc's own (``ONLINE_SCHEMA``, default ``recsvc_online``), created here and
never in the backend's tables. Each row is one post of one served page; its key is the Redis stream entry
id of the page plus the post's position on it, so moving the same entry twice writes nothing the second
time (``ON CONFLICT DO NOTHING``). Every statement is parameterised; the schema name is quoted as an
identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from psycopg2 import extensions, sql
from psycopg2.extras import execute_values

CLICK_TYPES = ("view", "like", "comment")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.impressions (
    entry_id text NOT NULL,          -- the page's Redis stream entry id
    position smallint NOT NULL,      -- the post's place on that page, from 0
    user_id text NOT NULL,
    post_id text NOT NULL,
    rank integer NOT NULL,           -- the post's rank in the user's feed, from 1
    experiment text NOT NULL,        -- '' without an experiment
    variant text NOT NULL,           -- 'production' without an experiment
    ranking text NOT NULL,           -- what was served: production, popular or model
    model_version text NOT NULL,
    shown_at timestamptz NOT NULL,   -- the entry id's Redis time
    PRIMARY KEY (entry_id, position)
);
CREATE INDEX IF NOT EXISTS impressions_shown_at_idx ON {schema}.impressions (shown_at);
"""


@dataclass(frozen=True)
class Impression:
    """One post of one served page, as the table stores it."""

    entry_id: str
    position: int
    user_id: str
    post_id: str
    rank: int
    experiment: str
    variant: str
    ranking: str
    model_version: str
    shown_at: datetime


@dataclass(frozen=True)
class DayCounts:
    """Impressions of one (day, experiment, variant, ranking), those followed by each kind of click, and users."""

    day: date
    experiment: str
    variant: str
    ranking: str
    impressions: int
    users: int
    clicks: Mapping[str, int]  # view, like, comment and "any"
    # Sums over the users of n_u^2, c_u^2 and n_u * c_u (n_u: a user's impressions, c_u: its clicks of a
    # type): what the variance of click-through needs when users, not impressions, are randomised.
    n2: int = 0
    c2: Mapping[str, int] = field(default_factory=dict)
    nc: Mapping[str, int] = field(default_factory=dict)


def create_online_schema(conn: extensions.connection, schema: str) -> None:
    """Create the schema and the impressions table if missing (idempotent); commits."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_DDL).format(schema=sql.Identifier(schema)))
    conn.commit()


def insert_impressions(conn: extensions.connection, schema: str, rows: Iterable[Impression]) -> int:
    """Insert ``rows``, skipping those already there; returns how many were new. The caller commits."""
    values = [
        (
            r.entry_id,
            r.position,
            r.user_id,
            r.post_id,
            r.rank,
            r.experiment,
            r.variant,
            r.ranking,
            r.model_version,
            r.shown_at,
        )
        for r in rows
    ]
    if not values:
        return 0
    query = sql.SQL(
        "INSERT INTO {}.impressions (entry_id, position, user_id, post_id, rank, experiment, variant, ranking,"
        " model_version, shown_at) VALUES %s ON CONFLICT DO NOTHING RETURNING 1"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        inserted = execute_values(cur, query.as_string(conn), values, page_size=1000, fetch=True)
    return len(inserted)


def day_counts(
    conn: extensions.connection,
    schema: str,
    interactions_query: str,
    since: datetime,
    until: datetime,
    window: timedelta,
) -> list[DayCounts]:
    """Per UTC day of ``shown_at`` in [since, until): impressions, users, and clicks within ``window`` after.

    A click of a type counts once per impression: the impressed user acted on the impressed post with
    that type at or after the impression and before ``window`` ran out. ``interactions_query`` is the
    service's ``SQL_INTERACTIONS`` (columns user_id, post_id, type, created_at), run as a subquery.
    """
    query = sql.SQL(
        """
        WITH imp AS (
            SELECT entry_id, position, user_id, post_id, experiment, variant, ranking, shown_at
            FROM {schema}.impressions WHERE shown_at >= %(since)s AND shown_at < %(until)s
        ), act AS (
            SELECT q.user_id::text AS user_id, q.post_id::text AS post_id, q.type::text AS type, q.created_at
            FROM ({interactions}) AS q
            WHERE q.created_at >= %(since)s AND q.created_at < %(until)s + %(window)s
        ), hits AS (
            SELECT imp.entry_id, imp.position,
                   bool_or(act.type = 'view') AS v, bool_or(act.type = 'like') AS l,
                   bool_or(act.type = 'comment') AS c
            FROM imp JOIN act ON act.user_id = imp.user_id AND act.post_id = imp.post_id
                 AND act.created_at >= imp.shown_at AND act.created_at < imp.shown_at + %(window)s
            GROUP BY imp.entry_id, imp.position
        ), per_user AS (
            SELECT (imp.shown_at AT TIME ZONE 'UTC')::date AS day, imp.experiment, imp.variant, imp.ranking,
                   imp.user_id, count(*) AS n, count(*) FILTER (WHERE hits.v) AS v,
                   count(*) FILTER (WHERE hits.l) AS l, count(*) FILTER (WHERE hits.c) AS c,
                   count(hits.entry_id) AS a
            FROM imp LEFT JOIN hits USING (entry_id, position)
            GROUP BY 1, 2, 3, 4, 5
        )
        SELECT day, experiment, variant, ranking, sum(n), count(*), sum(v), sum(l), sum(c), sum(a),
               sum(n * n), sum(v * v), sum(l * l), sum(c * c), sum(a * a), sum(n * v), sum(n * l), sum(n * c),
               sum(n * a)
        FROM per_user
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        """
    ).format(schema=sql.Identifier(schema), interactions=sql.SQL(interactions_query))
    with conn.cursor() as cur:
        cur.execute(query, {"since": since, "until": until, "window": window})
        rows: Sequence[tuple] = cur.fetchall()
    conn.rollback()  # read-only: end the transaction
    kinds = (*CLICK_TYPES, "any")
    out = []
    for day, experiment, variant, ranking, n, users, *sums in rows:
        sums = [int(x) for x in sums]
        clicks, squares, products = sums[0:4], sums[5:9], sums[9:13]
        out.append(
            DayCounts(
                day, experiment, variant, ranking, int(n), users, dict(zip(kinds, clicks, strict=True)),
                n2=sums[4], c2=dict(zip(kinds, squares, strict=True)), nc=dict(zip(kinds, products, strict=True)),
            )
        )  # fmt: skip
    return out
