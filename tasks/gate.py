"""The quality gate: a candidate is published only if it beats popularity and stays near the served model.

It compares holdout ``precision@10`` (DESIGN section 9) with the popularity baseline's on the same split and
with the value the served version recorded when it was trained (``QUALITY_GATE_MARGIN``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ml.artifact
from common.config import Settings
from common.recs_cache import RecsCache, served_version
from ml.errors import ArtifactError

log = logging.getLogger(__name__)

# The metric the quality gate compares (DESIGN section 9).
GATE_METRIC = "precision@10"


def current_gate_value(settings: Settings, cache: RecsCache) -> tuple[str | None, float | None]:
    """The version being served and its recorded holdout metric, or None where unknown.

    The served version is Redis's pointer (falling back to the on-disk one before the first publish); its
    metric comes from the artifact's metadata, written when that version was trained.
    """
    version = served_version(cache.current_version(), settings.model_dir)
    return version, gate_value(settings.model_dir, version)


def gate_value(model_dir: str, version: str | None) -> float | None:
    """The holdout metric ``version`` of ``model_dir`` recorded when it was trained, or None where unknown."""
    if version is None:
        return None
    try:
        metadata = ml.artifact.read_metadata(model_dir, version)
    except ArtifactError as exc:
        log.warning(
            "quality gate: cannot read the current version %s (%s); comparing with popularity only", version, exc
        )
        return None
    # A warm-started version's own figures are progressive, on another scale than a full fit's temporal holdout:
    # the gate compares with the full fit it descends from.
    metrics = metadata.get("fit_full_fit_metrics") if metadata.get("fit") == "warm" else metadata.get("metrics")
    try:
        return float(metrics["model"][GATE_METRIC])
    except (KeyError, TypeError, ValueError):
        log.warning("quality gate: version %s records no %s; comparing with popularity only", version, GATE_METRIC)
        return None


def quality_gate(metrics: Mapping[str, Any], current_value: float | None, margin: float) -> str | None:
    """Why the candidate must not be published, or None if it passes.

    It fails if its holdout ``precision@10`` is below the popularity baseline's on the same split, or more
    than ``margin`` (a fraction, ``QUALITY_GATE_MARGIN``) below the current model's recorded value.
    """
    value = float(metrics["model"][GATE_METRIC])
    baseline = float(metrics["popularity"][GATE_METRIC])
    if value < baseline:
        return f"quality gate: holdout {GATE_METRIC} {value:.4f} is below the popularity baseline's {baseline:.4f}"
    if current_value is not None and value < current_value * (1.0 - margin):
        return (
            f"quality gate: holdout {GATE_METRIC} {value:.4f} is more than {margin:.0%} below the current "
            f"model's {current_value:.4f}"
        )
    return None


def warm_gate(metrics: Mapping[str, Any], reference: float | None, margin: float) -> str | None:
    """Why a warm-started model must not be published (a full fit runs instead), or None if it passes.

    Its progressive figures (:func:`ml.warm.progressive_metrics`: the posts users went to next) differ in scale
    from the temporal holdout's (each user's last 20%), so it is held to the popularity baseline on the same
    pairs (it must beat it), and to ``reference``, the progressive ``precision@10`` of the first warm start
    after the last full fit, within ``margin``: a line of warm starts that drifted below either is refused.
    """
    value = float(metrics["model"][GATE_METRIC])
    baseline = float(metrics["popularity"][GATE_METRIC])
    if value <= baseline:
        return (
            f"warm start: progressive {GATE_METRIC} {value:.4f} does not beat the popularity baseline's {baseline:.4f}"
        )
    if reference is not None and value < reference * (1.0 - margin):
        return (
            f"warm start: progressive {GATE_METRIC} {value:.4f} drifted more than {margin:.0%} below "
            f"{reference:.4f}, the first warm start's after the last full fit"
        )
    return None
