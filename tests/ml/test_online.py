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
    first = next(c for c in counts if c.variant == "a")  # u1: 2 impressions, one of them liked
    assert (first.n2, first.c2["any"], first.nc["any"], first.c2["view"]) == (4, 1, 2, 0)
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
    # Control: two users with (impressions, clicks) (10, 1) and (10, 3); variant: (10, 4) and (10, 6).
    # Control CTR 0.2: per user mean n 10, var n 0, mean c 2, var c (1 + 9)/2 - 4 = 1, cov (10 + 30)/2 - 20 = 0,
    # so Var = (1 - 0 + 0) / (2 * 10^2) = 0.005; the variant's (CTR 0.5) likewise 0.005. z = 0.3 / 0.1 = 3,
    # p = 2 * (1 - Phi(3)) = 0.0026998. Relative difference 1.5; se of the log ratio sqrt(0.005/0.04 +
    # 0.005/0.25) = 0.380789, so exp(ln 2.5 -+ 1.959964 * 0.380789) - 1 = 0.18526, 4.27312. The pooled test:
    # p = 14/40, se = sqrt(0.35 * 0.65 * 0.1) = 0.150831, z = 1.98898, p = 0.04671.
    control = abtest.Arm(n=20, clicks=4, users=2, n2=200, c2=10, nc=40)
    variant = abtest.Arm(n=20, clicks=10, users=2, n2=200, c2=52, nc=100)
    assert control.variance() == pytest.approx(0.005) and variant.variance() == pytest.approx(0.005)
    c = abtest.compare(control, variant)
    assert c.relative_difference == pytest.approx(1.5)
    assert c.p_value == pytest.approx(0.0026998, abs=1e-6)
    assert (c.ci_low, c.ci_high) == (pytest.approx(0.18525, abs=1e-4), pytest.approx(4.2731, abs=1e-4))
    assert c.p_value_pooled == pytest.approx(0.04671, abs=1e-4)
    assert abtest.compare(abtest.Arm(20, 0, 2, 200, 0, 0), variant) is None  # no clicks in the control
    same = abtest.compare(variant, variant)
    assert same.p_value == pytest.approx(1.0) and same.ci_low < 0 < same.ci_high


def _counts(day, variant, n, clicks, ranking="production", experiment="exp"):
    """``n // 10`` users of 10 impressions each; the clicks spread as evenly as they go (one more for some)."""
    users = n // 10
    base, extra = divmod(clicks, users)
    c2 = (users - extra) * base**2 + extra * (base + 1) ** 2
    zero = {"view": 0, "like": 0, "comment": 0}
    return online.DayCounts(
        day, experiment, variant, ranking, n, users, {**zero, "any": clicks},
        n2=users * 100, c2={**zero, "any": c2}, nc={**zero, "any": 10 * clicks},
    )  # fmt: skip


def test_report_compares_each_variant_with_the_control():
    day = date(2026, 3, 2)
    rows = [_counts(day, "model", 1000, 150), _counts(day, "pop", 1000, 100, ranking="popular")]
    result = abtest.report(rows, day, 0.2, {"name": "exp", "control": "pop", "variants": ["model", "pop"]})
    (only_day,) = result["experiment"]["days"]
    model, pop = only_day["variants"]
    assert (model["variant"], model["impressions"], model["ctr"]["any"]) == ("model", 1000, 0.15)
    # 150 of 1000 against 100 of 1000: the pooled test's p (by hand) 0.000723; every user of the control
    # clicked once and the variant's once or twice, so by users the difference is far clearer.
    assert model["vs_control"]["any"]["p_value_pooled"] == pytest.approx(0.000723, abs=2e-6)
    assert model["vs_control"]["any"]["p_value"] < 1e-6
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
