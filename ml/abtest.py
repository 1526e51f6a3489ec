"""The statistics of the experiment report: a two-proportion test, and the report from the day counts.

Click-through is clicked impressions over impressions. A variant is compared to the control by a two-sided
two-proportion z-test, and by the relative difference ``ctr / control_ctr - 1`` with a 95% interval (the
delta method on the log of the ratio). Users, not impressions, are what an experiment assigns, and one
user's impressions are alike (a user who clicks much clicks much on every page), so the standard error of
each click-through is the delta method's for a ratio of per-user sums (Deng et al., "Applying the delta
method in metric analytics", 2018): ``p_value`` and the interval use it. ``p_value_pooled`` is the
textbook pooled test that takes every impression as independent; it is reported for comparison, and it
finds differences where there are none too often (``benchmarks/experiment.py``: docs/EXPERIMENTS.md).
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
class Arm:
    """One variant's counts of one click type: impressions, clicks, users, and the per-user sums of squares."""

    n: int
    clicks: int
    users: int
    n2: int
    c2: int
    nc: int

    @property
    def ctr(self) -> float:
        return self.clicks / self.n

    def variance(self) -> float:
        """Variance of the click-through estimate, users as the unit (delta method for a ratio of means)."""
        k = self.users
        mean_n, mean_c = self.n / k, self.clicks / k
        var_n = self.n2 / k - mean_n**2
        var_c = self.c2 / k - mean_c**2
        cov = self.nc / k - mean_n * mean_c
        r = self.ctr
        return max(0.0, (var_c - 2 * r * cov + r * r * var_n) / (k * mean_n**2))


@dataclass(frozen=True)
class Comparison:
    """A variant against the control: relative difference of click-through, its interval and p-values."""

    relative_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_value_pooled: float


def compare(control: Arm, variant: Arm, confidence: float = 0.95) -> Comparison | None:
    """Compare ``variant``'s click-through with ``control``'s; None when a side has no clicks or one user only."""
    if min(control.clicks, variant.clicks) <= 0 or min(control.users, variant.users) < 2:
        return None
    p0, p1 = control.ctr, variant.ctr
    v0, v1 = control.variance(), variant.variance()
    se = math.sqrt(v0 + v1)
    p_value = 1.0 if se == 0 else float(2 * norm.sf(abs(p1 - p0) / se))
    pooled = (control.clicks + variant.clicks) / (control.n + variant.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / variant.n))
    p_pooled = 1.0 if se_pooled == 0 else float(2 * norm.sf(abs(p1 - p0) / se_pooled))
    z = float(norm.ppf(0.5 + confidence / 2))
    se_log = math.sqrt(v0 / p0**2 + v1 / p1**2)
    log_ratio = math.log(p1 / p0)
    return Comparison(
        relative_difference=p1 / p0 - 1,
        ci_low=math.exp(log_ratio - z * se_log) - 1,
        ci_high=math.exp(log_ratio + z * se_log) - 1,
        p_value=p_value,
        p_value_pooled=p_pooled,
    )


def _ctr(clicks: int, n: int) -> float | None:
    return clicks / n if n else None


def _arm(cell: Mapping[str, int], kind: str) -> Arm:
    return Arm(
        cell["impressions"], cell[f"c:{kind}"], cell["users"], cell["n2"], cell[f"c2:{kind}"], cell[f"nc:{kind}"]
    )


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
        kinds = (*CLICK_TYPES, "any")
        cell = days.setdefault(row.day, {}).setdefault(
            row.variant,
            {"impressions": 0, "users": 0, "n2": 0, **{f"{x}:{kind}": 0 for x in ("c", "c2", "nc") for kind in kinds}},
        )
        cell["impressions"] += row.impressions
        cell["users"] += row.users  # a variant's user is served one ranking a day, barring a fallback change
        cell["n2"] += row.n2
        for kind in kinds:
            cell[f"c:{kind}"] += row.clicks[kind]
            cell[f"c2:{kind}"] += row.c2.get(kind, 0)
            cell[f"nc:{kind}"] += row.nc.get(kind, 0)
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
            kinds = (*CLICK_TYPES, "any")
            clicks = {kind: cell[f"c:{kind}"] for kind in kinds}
            vs = None
            if name != control and base is not None:
                found = {kind: compare(_arm(base, kind), _arm(cell, kind)) for kind in kinds}
                vs = {kind: None if c is None else c.__dict__ for kind, c in found.items()}
            variants_out.append(
                {
                    "variant": name,
                    "impressions": n,
                    "users": cell["users"],
                    "clicks": clicks,
                    "ctr": {kind: _ctr(value, n) for kind, value in clicks.items()},
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
