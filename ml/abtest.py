"""The statistics of the experiment report: a two-proportion test, and the report from the day counts.

Click-through is clicked impressions over impressions. A variant is compared to the control by the
two-sided two-proportion z-test (pooled standard error) for the p-value, and by the relative difference
``ctr / control_ctr - 1`` with a 95% interval from the delta method on the log of the ratio. Impressions
of one user are treated as independent, which makes the interval somewhat narrow when users see many
posts; ``benchmarks/experiment.py`` measures how it behaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from scipy.stats import norm

from ml.online import CLICK_TYPES, DayCounts

TRAILING_DAYS = 7


@dataclass(frozen=True)
class Comparison:
    """A variant against the control: relative difference of click-through, its interval and p-value."""

    relative_difference: float
    ci_low: float
    ci_high: float
    p_value: float


def compare(control_clicks: int, control_n: int, clicks: int, n: int, confidence: float = 0.95) -> Comparison | None:
    """Compare a variant's ``clicks``/``n`` to the control's; None when either side has no clicks or impressions."""
    if min(control_n, n, control_clicks, clicks) <= 0:
        return None
    p0, p1 = control_clicks / control_n, clicks / n
    pooled = (control_clicks + clicks) / (control_n + n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / n))
    p_value = 1.0 if se_pooled == 0 else float(2 * norm.sf(abs(p1 - p0) / se_pooled))
    z = float(norm.ppf(0.5 + confidence / 2))
    se_log = math.sqrt((1 - p0) / control_clicks + (1 - p1) / clicks)
    log_ratio = math.log(p1 / p0)
    return Comparison(
        relative_difference=p1 / p0 - 1,
        ci_low=math.exp(log_ratio - z * se_log) - 1,
        ci_high=math.exp(log_ratio + z * se_log) - 1,
        p_value=p_value,
    )


def _ctr(clicks: int, n: int) -> float | None:
    return clicks / n if n else None


def experiment_report(
    counts: Iterable[DayCounts], experiment: str, variants: Iterable[str], control: str
) -> list[dict[str, Any]]:
    """Per day and variant of ``experiment``: impressions, users, click-through by type, and against the control.

    Days are newest first; each variant's ``vs_control`` is None for the control itself and when a side
    has no clicks. A variant's rows are summed over the rankings it was served with (a ``model`` variant
    that fell back to the production model is still that variant).
    """
    names = list(variants)
    days: dict[date, dict[str, dict[str, Any]]] = {}
    for row in counts:
        if row.experiment != experiment or row.variant not in names:
            continue
        cell = days.setdefault(row.day, {}).setdefault(
            row.variant, {"impressions": 0, "users": 0, "clicks": dict.fromkeys((*CLICK_TYPES, "any"), 0)}
        )
        cell["impressions"] += row.impressions
        cell["users"] += row.users  # a variant's user is served one ranking a day, barring a fallback change
        for kind, value in row.clicks.items():
            cell["clicks"][kind] += value
    report = []
    for day in sorted(days, reverse=True):
        cells = days[day]
        base = cells.get(control)
        variants_out = []
        for name in names:
            cell = cells.get(name)
            if cell is None:
                continue
            n = cell["impressions"]
            vs = None
            if name != control and base is not None:
                found = {
                    kind: compare(base["clicks"][kind], base["impressions"], cell["clicks"][kind], n)
                    for kind in (*CLICK_TYPES, "any")
                }
                vs = {kind: None if c is None else c.__dict__ for kind, c in found.items()}
            variants_out.append(
                {
                    "variant": name,
                    "impressions": n,
                    "users": cell["users"],
                    "clicks": cell["clicks"],
                    "ctr": {kind: _ctr(value, n) for kind, value in cell["clicks"].items()},
                    "vs_control": vs,
                }
            )
        report.append({"day": day.isoformat(), "variants": variants_out})
    return report


def quality(counts: Iterable[DayCounts], today: date, drop_fraction: float) -> dict[str, Any]:
    """The production model's online click-through (any click) per day, and the drop alert.

    ``today``'s click-through (so far) is compared with the click-through of the ``TRAILING_DAYS`` days
    before it, pooled; ``alert`` is true when it is lower by more than ``drop_fraction`` of that.
    """
    per_day: dict[date, list[int]] = {}
    for row in counts:
        if row.ranking != "production":
            continue
        pair = per_day.setdefault(row.day, [0, 0])
        pair[0] += row.clicks["any"]
        pair[1] += row.impressions
    trailing = [per_day[d] for d in per_day if today - timedelta(days=TRAILING_DAYS) <= d < today]
    week_clicks, week_n = sum(c for c, _ in trailing), sum(n for _, n in trailing)
    clicks, n = per_day.get(today, (0, 0))
    ctr, week_ctr = _ctr(clicks, n), _ctr(week_clicks, week_n)
    alert = ctr is not None and week_ctr is not None and ctr < (1 - drop_fraction) * week_ctr
    return {
        "daily": [
            {"day": d.isoformat(), "impressions": n_, "clicks": c, "ctr": _ctr(c, n_)}
            for d, (c, n_) in sorted(per_day.items(), reverse=True)
        ],
        "ctr_today": ctr,
        "ctr_trailing_week": week_ctr,
        "drop_fraction": drop_fraction,
        "alert": alert,
    }


def report(
    counts: Iterable[DayCounts],
    today: date,
    drop_fraction: float,
    experiment: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The whole online report: the experiment's (``{"name", "variants", "control"}`` or None) and quality."""
    rows = list(counts)
    out: dict[str, Any] = {"experiment": None, "quality": quality(rows, today, drop_fraction)}
    if experiment is not None:
        out["experiment"] = {
            "name": experiment["name"],
            "control": experiment["control"],
            "days": experiment_report(rows, experiment["name"], experiment["variants"], experiment["control"]),
        }
    return out
