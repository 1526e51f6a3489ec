"""The A/B experiment: its variants, and which variant a user gets.

One experiment at a time, none by default: ``EXPERIMENT`` (JSON) or ``EXPERIMENT_FILE`` (a JSON file)
declares it, and :func:`common.config.load_settings` validates it (:func:`parse_experiment`). Each variant
has a traffic share and a ranking:

- ``production``: the served model's feed;
- ``popular``: the popularity feed (the usual control);
- ``model``: a model trained with other settings (``training``: LightFM/weight variables overriding the
  production ones). Each training run also trains, gates and publishes it under versions of its own
  (:mod:`tasks.variants`), in its own artifact directory (:func:`variant_model_dir`) and behind its own
  Redis pointer, both named by the variant's :attr:`Variant.lineage`. While no such model is served, its
  users get the production feed and the response says ``variant_fallback: true``.

Assignment is a hash of (experiment name, user id): the same on every request, process and host, and it
changes only when the experiment's name or shares change. Renaming the experiment reshuffles everyone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ml.settings import TrainingSettings

RANKINGS = ("production", "popular", "model")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_SCALE = float(2**64)


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment."""

    name: str
    share: float
    ranking: str  # one of RANKINGS
    training: Mapping[str, str] = field(default_factory=dict)  # variable -> value, for ranking "model"
    # For ranking "model": the name of its line of models (its artifact directory and Redis pointer), and,
    # when the declaration was checked against the environment, the settings it trains with and the
    # searched fields its overrides pin (the model search's choice never replaces them).
    lineage: str = ""
    settings: TrainingSettings | None = None
    pinned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Experiment:
    """A named experiment: variants with shares summing to 1, and the control the others are compared to."""

    name: str
    variants: tuple[Variant, ...]
    control: str

    def __post_init__(self) -> None:
        bounds, total = [], 0.0
        for variant in self.variants:
            total += variant.share
            bounds.append(total)
        object.__setattr__(self, "_bounds", tuple(bounds))

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    @property
    def model_variants(self) -> tuple[Variant, ...]:
        """The variants whose model the training pipeline trains (ranking ``model``)."""
        return tuple(v for v in self.variants if v.ranking == "model")

    def assign(self, user_id: str) -> Variant:
        """The user's variant: the first whose cumulative share exceeds the user's hash point in [0, 1)."""
        point = bucket(self.name, user_id)
        for variant, bound in zip(self.variants, self._bounds, strict=True):
            if point < bound:
                return variant
        return self.variants[-1]  # shares summing to 1 - 1e-12 leave a sliver: it goes to the last variant


def bucket(experiment: str, user_id: str) -> float:
    """A point in [0, 1) from SHA-256 of (experiment, user id): uniform, and the same in every process."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def lineage(experiment: str, variant: str, training: Mapping[str, str]) -> str:
    """The name of a model variant's line of versions: ``<experiment>-<variant>-<8 hex digits of its settings>``.

    Changing the experiment's name, the variant's name or its ``training`` starts a new line, so a model
    trained with other settings is never served for a new declaration (its users fall back until trained).
    The characters are those of the names (a-z, 0-9, ``_``, ``-``): safe in a path and in a Redis key.
    """
    digest = hashlib.sha256(json.dumps(sorted(training.items())).encode()).hexdigest()[:8]
    return f"{experiment}-{variant}-{digest}"


def variant_model_dir(model_dir: str | os.PathLike, lineage: str) -> str:
    """The artifact directory of a model variant's versions: ``MODEL_DIR/variants/<lineage>``.

    A directory of its own, with its own ``CURRENT``, pruning and warm-start state, so the production
    versions (rollback, pruning, the gate's and warm start's current version) never see a variant's.
    """
    return os.path.join(os.fspath(model_dir), "variants", lineage)


def model_variant_dirs(experiment: Experiment | None, model_dir: str | os.PathLike) -> dict[str, str]:
    """Lineage -> artifact directory of every model variant of ``experiment`` (none without one)."""
    variants = experiment.model_variants if experiment is not None else ()
    return {v.lineage: variant_model_dir(model_dir, v.lineage) for v in variants}


def parse_experiment(raw: str, check_training: Any = None) -> Experiment:
    """The experiment declared by JSON ``raw``; ValueError naming what is wrong.

    ``{"name": "pop-control", "control": "popular", "variants": [{"name": "model", "share": 0.5,
    "ranking": "production"}, {"name": "popular", "share": 0.5, "ranking": "popular"}]}``.
    ``check_training`` validates a ``model`` variant's ``training`` mapping (it raises ValueError) and
    returns the variant's ``(TrainingSettings, pinned fields)`` (:attr:`Variant.settings`, :attr:`Variant.pinned`).
    """
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError("must be a JSON object with name, variants and control")
    unknown = set(spec) - {"name", "variants", "control"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    name = _name(spec.get("name"), "name")
    raw_variants = spec.get("variants")
    if not isinstance(raw_variants, list) or len(raw_variants) < 2:
        raise ValueError("variants must be a list of at least two variants")
    variants = tuple(_variant(v, i, name, check_training) for i, v in enumerate(raw_variants))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    total = sum(v.share for v in variants)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"variant shares must sum to 1, not {total:g}")
    control = spec.get("control", names[0])
    if control not in names:
        raise ValueError(f"control {control!r} is not one of the variants {names}")
    return Experiment(name, variants, control)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"{what} must be 1-40 characters a-z, 0-9, '_' or '-', starting with a letter or digit")
    return value


def _variant(spec: Any, index: int, experiment: str, check_training: Any) -> Variant:
    where = f"variants[{index}]"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object with name, share and ranking")
    unknown = set(spec) - {"name", "share", "ranking", "training"}
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    name = _name(spec.get("name"), f"{where}.name")
    share = spec.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"{where}.share must be a number in (0, 1]")
    ranking = spec.get("ranking")
    if ranking not in RANKINGS:
        raise ValueError(f"{where}.ranking must be one of {', '.join(RANKINGS)}")
    training = spec.get("training", {})
    if ranking != "model" and training:
        raise ValueError(f"{where}.training is only for ranking 'model'")
    if ranking == "model":
        if not isinstance(training, dict) or not training:
            raise ValueError(f"{where}.training must map training variables to values for ranking 'model'")
        training = {str(k): str(v) for k, v in training.items()}
        settings, pinned = None, frozenset()
        if check_training is not None:
            try:
                settings, pinned = check_training(training)
            except ValueError as exc:
                raise ValueError(f"{where}.training: {exc}") from None
        return Variant(name, float(share), ranking, training, lineage(experiment, name, training), settings, pinned)
    return Variant(name, float(share), ranking, training)
