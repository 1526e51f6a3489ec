"""The live refresh as plain functions: read what is new in PostgreSQL since the last refresh, publish it live.

``tasks.refresh`` (:mod:`tasks.refresh`) runs :func:`refresh` every ``REFRESH_INTERVAL_SECONDS``. A run

1. finds the served model version (Redis's pointer) and loads its artifact (once per version per process);
2. reads the live state (:meth:`RecsCache.live_state`). If it was built against another version (a new
   model was published), it starts over from the new model's data snapshot (the artifact's
   ``data_snapshot``, or its last interaction for older artifacts): an empty pool, and every live user the
   new model knows dropped;
3. reads, through the configured ``SQL_*`` queries wrapped as ``SELECT ... FROM (<query>) q WHERE
   q.created_at > %s``, the posts, users, follows and interactions newer than each table's watermark minus
   ``REFRESH_LOOKBACK_SECONDS`` (a row whose transaction committed after a refresh read past its
   ``created_at`` is still found; rows read twice are recognised and skipped);
4. records fresh interactions in the users' ``seen:`` sets (a post's author has seen it too), and, if
   a post or a live user is new or changed, publishes a new live generation: the pool of posts the model
   does not know (newest first), the live users whose role or follows changed, and the new watermarks
   (:meth:`RecsCache.publish_live`); otherwise only the watermarks move.

A run that fails anywhere before the publish leaves the previous generation and watermarks in place, so the
next run reads the same rows again; recording an interaction twice keeps its first arrival. Nothing here
imports Celery.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg2 import extensions, sql

import ml.artifact
from common.config import Settings
from common.recs_cache import PoolPost, RecsCache, live_user_at
from ml.dataset import INTERACTION_TYPES, parse_tags
from ml.db.read import read_snapshot
from ml.timestamps import FUTURE_TOLERANCE_SECONDS

log = logging.getLogger(__name__)

# Rows read per table per run at most, oldest first: a backlog (a long outage, the minutes of a training run)
# is worked off over a few runs with bounded memory instead of in one huge read.
MAX_ROWS_PER_TABLE = 100_000

# The tables the refresh follows, each with a watermark.
TABLES = ("posts", "users", "follows", "interactions")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The columns of each followed table the refresh uses (besides created_at), as the SQL_* queries name them.
_COLUMNS = {
    "posts": ("id", "community_id", "author_id", "tags"),
    "users": ("id",),
    "follows": ("user_id",),
    "interactions": ("user_id", "post_id", "type"),
}


@dataclass
class Found:
    """What one run read and what it changed (counts for the task result)."""

    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    new_posts: int = 0
    changed_users: int = 0
    dropped_users: int = 0
    interactions: int = 0


@functools.lru_cache(maxsize=1)
def model_ids(model_dir: str, version: str) -> tuple[frozenset[str], frozenset[str], dict[str, Any]]:
    """(post ids, user ids, metadata) of a model version, read once per version by each process."""
    model, metadata = ml.artifact.load(model_dir, version)
    return frozenset(model.item_ids), frozenset(model.user_ids), metadata


def snapshot_watermark(metadata: Mapping[str, Any]) -> datetime:
    """Where a model's data end: the latest ``created_at`` it read, as recorded in its artifact metadata.

    Every row created after the model's read has a later ``created_at`` than any row the read saw, so the
    newest recorded time of any table bounds them all from below; rows between it and the read are known
    to the model and skipped. Artifacts without ``data_snapshot`` fall back to ``data_window``'s last
    interaction; with neither, everything is read (and what the model knows is skipped).
    """
    times = [value for value in (metadata.get("data_snapshot") or {}).values() if value]
    if not times:
        last = (metadata.get("data_window") or {}).get("last_interaction")
        times = [last] if last else []
    return max((_parse(value) for value in times), default=_EPOCH)


def refresh(settings: Settings, cache: RecsCache, conn: extensions.connection) -> dict[str, Any]:
    """One refresh run (see the module docstring); returns its outcome, JSON-ready.

    ``conn`` is an open PostgreSQL connection outside a transaction; the reads run in one read-only
    transaction that is ended before returning. The outcome's ``status`` is ``published`` (a new
    generation), ``unchanged`` (nothing new) or ``no-model`` (nothing served yet).
    """
    started = time.perf_counter()
    version = cache.current_version()
    if version is None:
        return _outcome("no-model", started)
    items, users, metadata = model_ids(settings.model_dir, version)
    state = cache.live_state()
    new_model = state is None or state.model_version != version
    if new_model:
        watermarks = dict.fromkeys(TABLES, snapshot_watermark(metadata))
        pool: list[PoolPost] = []
    else:
        watermarks = {table: _parse(state.watermarks.get(table)) for table in TABLES}
        pool = cache.live_pool(state.generation) or []
    found = Found()
    lookback = timedelta(seconds=settings.refresh_lookback_seconds)
    queries = settings.sql_queries

    with read_snapshot(conn, "refresh") as cur:
        rows = {table: _read_since(cur, queries[table], table, watermarks[table], lookback) for table in TABLES}
        for table, table_rows in rows.items():
            found.rows[table] = len(table_rows)
            if table_rows:
                watermarks[table] = max(watermarks[table], table_rows[-1][-1])

        pooled = {post[0] for post in pool}
        fresh = [row for row in rows["posts"] if row[0] not in items and row[0] not in pooled]
        found.new_posts = len(fresh)
        pool = _newest_first(pool, fresh, settings.live_max_posts)

        candidates = {row[0] for row in rows["users"]} | {row[0] for row in rows["follows"]}
        candidates -= users
        changed = _user_features(cur, queries, sorted(candidates)) if candidates else {}
        user_changes = _changed_users(cache, changed, state.generation if state else 0)
    if new_model:
        dropped = set(cache.live_user_ids()) & users
        user_changes.update(dict.fromkeys(dropped, None))
        found.dropped_users = len(dropped)
    found.changed_users = len(user_changes) - found.dropped_users

    events = [
        (user_id, post_id, kind) for user_id, post_id, kind, _ in rows["interactions"] if kind in INTERACTION_TYPES
    ]
    # The author of a fresh post has seen it: it never enters the author's own feed (as trained posts don't).
    events += [(row[2], row[0], "view") for row in fresh if row[2]]
    if events:
        cache.record_events(events, cap=settings.events_max_per_user, ttl=settings.events_ttl_seconds)
    found.interactions = len(rows["interactions"])

    marks = {table: mark.isoformat() for table, mark in watermarks.items()}
    if not (new_model or fresh or user_changes):
        # Interactions alone need no new generation: the web workers read seen: on every page.
        if marks != state.watermarks:
            cache.update_live_watermarks(marks)
        return _outcome("unchanged", started, found, version, state.generation, marks, len(pool))
    generation = cache.publish_live(
        pool,
        user_changes,
        version,
        marks,
        retain_seconds=settings.recs_retain_seconds,
        max_posts=settings.live_max_posts,
        max_users=settings.live_max_users,
    )
    return _outcome("published", started, found, version, generation, marks, len(pool), new_model=new_model)


def _read_since(cur: extensions.cursor, query: str, table: str, watermark: datetime, lookback: timedelta) -> list:
    """The rows of a configured query created after ``watermark - lookback``, oldest first.

    The lookback window up to ``watermark`` is read whole (rows committed late); past the watermark at most
    MAX_ROWS_PER_TABLE rows are read, so every run moves the watermark forward however large a backlog is.
    Each row is the query's columns (tags as a tuple) followed by ``created_at`` as an aware datetime. The
    query is wrapped, not edited, so a deployment's own SQL works; the times are bound parameters.
    """
    columns = sql.SQL(", ").join(sql.SQL("q.{}").format(sql.Identifier(c)) for c in _COLUMNS[table])
    source = sql.SQL(
        "SELECT {columns}, q.created_at::timestamptz AS refresh_at FROM ({query}) AS q WHERE {where}"
        " ORDER BY refresh_at"
    )
    window = source.format(
        columns=columns, query=sql.SQL(_strip(query)), where=sql.SQL("q.created_at::timestamptz BETWEEN %s AND %s")
    )
    cur.execute(window, (watermark - lookback, watermark))
    rows = cur.fetchall()
    # A row dated more than FUTURE_TOLERANCE_SECONDS ahead of the database's clock waits until it is not: taken
    # now, it would move the watermark past every row written until then.
    beyond = source.format(
        columns=columns,
        query=sql.SQL(_strip(query)),
        where=sql.SQL(
            "q.created_at::timestamptz > %s AND q.created_at::timestamptz <= now() + make_interval(secs => %s)"
        ),
    )
    cur.execute(sql.SQL("{} LIMIT %s").format(beyond), (watermark, FUTURE_TOLERANCE_SECONDS, MAX_ROWS_PER_TABLE))
    rows += cur.fetchall()
    if table == "posts":
        return [(post_id, community, author, parse_tags(tags), at) for post_id, community, author, tags, at in rows]
    return rows


def _user_features(cur: extensions.cursor, queries: Mapping[str, str], user_ids: Sequence[str]) -> dict[str, dict]:
    """``{"role", "follows"}`` of each user id that ``SQL_USERS`` returns (others are left out)."""
    cur.execute(
        sql.SQL("SELECT q.id, q.role FROM ({}) AS q WHERE q.id = ANY(%s)").format(sql.SQL(_strip(queries["users"]))),
        (list(user_ids),),
    )
    features = {user_id: {"role": role or None, "follows": []} for user_id, role in cur.fetchall()}
    cur.execute(
        sql.SQL("SELECT q.user_id, q.community_id FROM ({}) AS q WHERE q.user_id = ANY(%s) ORDER BY 1, 2").format(
            sql.SQL(_strip(queries["follows"]))
        ),
        (list(features),),
    )
    for user_id, community_id in cur.fetchall():
        features[user_id]["follows"].append(community_id)
    return features


def _changed_users(cache: RecsCache, features: Mapping[str, dict], generation: int) -> dict[str, dict | None]:
    """The users of ``features`` whose live record at ``generation`` differs (a new user, or new follows)."""
    ids = list(features)
    current = cache.client.hmget(cache.live_users_key, ids) if ids else []
    return {
        user_id: features[user_id]
        for user_id, raw in zip(ids, current, strict=True)
        if live_user_at(raw, generation) != features[user_id]
    }


def _newest_first(pool: Iterable[PoolPost], fresh: Iterable[tuple], limit: int) -> list[PoolPost]:
    """The pool with the fresh posts added, newest first, at most ``limit`` posts."""
    added = [(post_id, tags, community, at.timestamp()) for post_id, community, _, tags, at in fresh]
    return sorted([*pool, *added], key=lambda post: (-post[3], post[0]))[:limit]


def _strip(query: str) -> str:
    return query.strip().rstrip(";")


def _parse(value: str | None) -> datetime:
    if not value:
        return _EPOCH
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _outcome(
    status: str,
    started: float,
    found: Found | None = None,
    version: str | None = None,
    generation: int | None = None,
    watermarks: Mapping[str, str] | None = None,
    pool_size: int | None = None,
    new_model: bool = False,
) -> dict[str, Any]:
    """A run's result for Flower and ``celery result``: what it found, where it now stands, how long it took."""
    found = found or Found()
    return {
        "status": status,
        "model_version": version,
        "new_model": new_model,
        "generation": generation,
        "read": found.rows,
        "new_posts": found.new_posts,
        "changed_users": found.changed_users,
        "dropped_users": found.dropped_users,
        "interactions": found.interactions,
        "pool_size": pool_size,
        "watermarks": dict(watermarks or {}),
        "seconds": round(time.perf_counter() - started, 3),
    }
