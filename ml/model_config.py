"""What a training run fits (:class:`ModelConfig`), and the model search's record of what it chose.

The model search (:mod:`ml.search`) records its result in ``MODEL_DIR/search.json``; the configuration it chose
is what training fits from then on (:func:`effective_config`), except for the hyperparameters the environment
pins (:func:`ml.settings.pinned_fields`): those always keep the environment's value. Without a recorded
choice, training fits the environment's LightFM, as before the search existed.

This module imports no model library, so the web (``/admin/model-status``) reads the record cheaply;
:mod:`ml.families` fits a configuration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ml.artifact import write_atomically
from ml.settings import TrainingSettings

logger = logging.getLogger(__name__)

FAMILIES = ("lightfm", "als", "blend")
SEARCH_FILE = "search.json"


@dataclass(frozen=True)
class AlsSettings:
    """Hyperparameters of the ALS fit (:mod:`ml.als`), its confidence weighting included.

    ALS has its own interaction type weights and half-life, searched apart from LightFM's: its confidence
    ``1 + alpha * weight`` grows linearly with the weight, where LightFM's WARP only samples by it, so the
    weights that suit one family need not suit the other. The defaults are LightFM's.
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    weight_view: float = 1.0
    weight_like: float = 2.0
    weight_comment: float = 3.0
    half_life_days: float = 365.0  # 0 disables time decay


@dataclass(frozen=True)
class ModelConfig:
    """What a training run fits: the family, LightFM's settings (also ``num_threads`` and ``seed`` of every
    family), ALS's settings (``als`` and ``blend``) and the blend's LightFM weight."""

    family: str = "lightfm"
    training: TrainingSettings = field(default_factory=TrainingSettings)
    als: AlsSettings | None = None
    blend_weight: float | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; one of {', '.join(FAMILIES)}")
        if self.family != "lightfm" and self.als is None:
            raise ValueError(f"a {self.family} model needs ALS settings")
        if self.family == "blend" and self.blend_weight is None:
            raise ValueError("a blend needs its weight")

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "training": asdict(self.training),
            "als": asdict(self.als) if self.als else None,
            "blend_weight": self.blend_weight,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ModelConfig:
        als = document.get("als")
        return cls(
            family=document["family"],
            training=TrainingSettings(**document["training"]),
            als=AlsSettings(**als) if als else None,
            blend_weight=document.get("blend_weight"),
        )


def effective_config(base: TrainingSettings, model_dir: str | Path, pinned: frozenset[str]) -> ModelConfig:
    """The configuration in force: the search's choice in ``model_dir``, with every pinned field from ``base``.

    Without a recorded choice (no search yet, or an unreadable file, which is logged) it is ``base``'s LightFM.
    Fields the search does not tune (``num_threads``, ``seed``) always come from ``base``.
    """
    document = read_search(model_dir)
    if not document or not document.get("chosen"):
        return ModelConfig(training=base)
    try:
        chosen = ModelConfig.from_json(document["chosen"])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("%s: unusable chosen configuration (%s); using the environment's", SEARCH_FILE, exc)
        return ModelConfig(training=base)
    kept = {name: getattr(base, name) for name in pinned} | {"num_threads": base.num_threads, "seed": base.seed}
    return replace(chosen, training=replace(chosen.training, **kept))


def read_search(model_dir: str | Path) -> dict[str, Any] | None:
    """The last search's record (``MODEL_DIR/search.json``), or None when there is none or it is unreadable."""
    path = Path(model_dir) / SEARCH_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable (%s)", path, exc)
        return None
    return document if isinstance(document, dict) else None


def write_search(model_dir: str | Path, document: Mapping[str, Any]) -> None:
    """Record a search's result atomically: a reader sees the previous record or this one, never a part."""
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / SEARCH_FILE, json.dumps(document, indent=2, allow_nan=False).encode())


def family_of(metadata: Mapping[str, Any]) -> str:
    """The family of an artifact version from its metadata; a version from before the search was LightFM."""
    return (metadata.get("model") or {}).get("family", "lightfm")


def summary(document: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The headline of a search record (no trials): for ``/admin/model-status`` and the task's result."""
    if not document:
        return None
    states: dict[str, int] = {}
    for trial in document.get("trials", []):
        states[trial["state"].lower()] = states.get(trial["state"].lower(), 0) + 1
    best = document.get("best") or {}
    current = document.get("current") or {}
    return {
        "searched_at": document.get("searched_at"),
        "seconds": document.get("seconds"),
        "budget": document.get("budget"),
        "pinned": document.get("pinned"),
        "trials": states,
        "adopted": document.get("adopted"),
        "reason": document.get("reason"),
        "chosen": document.get("chosen"),
        "best_family": best.get("family"),
        "best_holdout": best.get("holdout"),
        "current_holdout": current.get("holdout"),
        "families": {
            family: {"validation": entry["validation"], "holdout": entry["holdout"]}
            for family, entry in (document.get("families") or {}).items()
        },
    }
