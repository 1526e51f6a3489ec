"""The impressions table and the online report on a hand-computed fixture (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ml import abtest, online

SCHEMA = "recsvc_online_test"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
QUERY = "SELECT user_id, post_id, type, created_at FROM interactions"


@pytest.fixture
def conn(pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE interactions (user_id text, post_id text, type text, created_at timestamptz)")
    pg_conn.commit()
    yield pg_conn
    pg_conn.rollback()
    with pg_conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    pg_conn.commit()


def _imp(entry, position, user, post, variant, shown_at):
    return online.Impression(entry, position, user, post, position + 1, "exp", variant, "production", "v1", shown_at)


FIXTURE = [
    _imp("1-0", 0, "u1", "p1", "a", T0),
    _imp("1-0", 1, "u1", "p2", "a", T0),
    _imp("2-0", 0, "u2", "p1", "b", T0),
    _imp("2-0", 1, "u2", "p3", "b", T0),
    _imp("3-0", 0, "u3", "p1", "b", T0 + 24 * H),
]
ACTIONS = [
    ("u1", "p1", "view", T0 - H),  # before the impression: not a click
    ("u1", "p1", "like", T0 + H),
    ("u1", "p2", "comment", T0 + 25 * H),  # after the 24 h window
    ("u2", "p1", "view", T0 + H),
    ("u2", "p1", "like", T0 + 2 * H),
    ("u3", "p1", "view", T0 + 24 * H + 0.5 * H),
    ("u9", "p1", "view", T0 + H),  # not impressed
]


def test_rows_are_inserted_once_and_counted_by_hand(conn):
    online.create_online_schema(conn, SCHEMA)
    online.create_online_schema(conn, SCHEMA)  # idempotent
    assert online.insert_impressions(conn, SCHEMA, FIXTURE) == 5
    assert online.insert_impressions(conn, SCHEMA, FIXTURE) == 0  # the same entries moved again: nothing written
    conn.commit()
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO interactions VALUES (%s, %s, %s, %s)", ACTIONS)
    conn.commit()
    counts = online.day_counts(conn, SCHEMA, QUERY, T0 - 24 * H, T0 + 48 * H, 24 * H)
    got = {(c.day, c.variant): (c.impressions, c.users, dict(c.clicks)) for c in counts}
    day1, day2 = date(2026, 3, 2), date(2026, 3, 3)
    assert got == {
        (day1, "a"): (2, 1, {"view": 0, "like": 1, "comment": 0, "any": 1}),
        (day1, "b"): (2, 1, {"view": 1, "like": 1, "comment": 0, "any": 1}),
        (day2, "b"): (1, 1, {"view": 1, "like": 0, "comment": 0, "any": 1}),
    }
    # A shorter window loses u2's like (2 h after) but keeps the views (1 h and 30 min after).
    short = online.day_counts(conn, SCHEMA, QUERY, T0 - 24 * H, T0 + 48 * H, 1.5 * H)
    assert {(c.day, c.variant): c.clicks["like"] for c in short} == {(day1, "a"): 1, (day1, "b"): 0, (day2, "b"): 0}


def test_two_proportion_comparison_by_hand():
    # Control 100/1000, variant 150/1000: pooled p = 0.125, se = sqrt(0.125 * 0.875 * 2/1000) = 0.014790,
    # z = 0.05 / 0.014790 = 3.3806, p = 2 * (1 - Phi(3.3806)) = 0.000723. Relative difference 0.5; on the
    # log scale se = sqrt(0.9/100 + 0.85/150) = 0.121106, so exp(ln 1.5 -+ 1.96 * 0.121106) - 1 = 0.1831, 0.9018.
    c = abtest.compare(100, 1000, 150, 1000)
    assert c.relative_difference == pytest.approx(0.5)
    assert c.p_value == pytest.approx(0.000723, abs=2e-6)
    assert c.ci_low == pytest.approx(0.1831, abs=1e-3)
    assert c.ci_high == pytest.approx(0.9018, abs=1e-3)
    assert abtest.compare(0, 1000, 10, 1000) is None
    same = abtest.compare(50, 1000, 50, 1000)
    assert same.p_value == pytest.approx(1.0) and same.ci_low < 0 < same.ci_high


def _counts(day, variant, n, clicks, ranking="production", experiment="exp"):
    return online.DayCounts(
        day, experiment, variant, ranking, n, n // 10, {"view": 0, "like": 0, "comment": 0, "any": clicks}
    )


def test_report_compares_each_variant_with_the_control():
    day = date(2026, 3, 2)
    rows = [_counts(day, "model", 1000, 150), _counts(day, "pop", 1000, 100, ranking="popular")]
    result = abtest.report(rows, day, 0.2, {"name": "exp", "control": "pop", "variants": ["model", "pop"]})
    (only_day,) = result["experiment"]["days"]
    model, pop = only_day["variants"]
    assert (model["variant"], model["impressions"], model["ctr"]["any"]) == ("model", 1000, 0.15)
    assert model["vs_control"]["any"]["p_value"] == pytest.approx(0.000723, abs=2e-6)
    assert model["vs_control"]["like"] is None  # no likes on either side
    assert pop["vs_control"] is None
    assert result["quality"]["ctr_today"] == 0.15  # only the production ranking counts


def test_quality_alert_against_the_trailing_week():
    today = date(2026, 3, 10)
    week = [_counts(today - timedelta(days=d), "production", 1000, 100, experiment="") for d in range(1, 8)]
    older = [_counts(today - timedelta(days=9), "production", 1000, 900, experiment="")]  # outside the week
    ok = abtest.quality([*week, *older, _counts(today, "production", 1000, 81, experiment="")], today, 0.2)
    assert ok["ctr_trailing_week"] == pytest.approx(0.1) and ok["alert"] is False
    dropped = abtest.quality([*week, _counts(today, "production", 1000, 79, experiment="")], today, 0.2)
    assert dropped["alert"] is True
    assert abtest.quality([], today, 0.2)["alert"] is False  # nothing served yet: no alert
