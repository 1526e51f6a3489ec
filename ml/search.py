"""Model search: hyperparameters and model families tuned on the deployment's own data, never on the gate.

The data are cut twice with the protocol of DESIGN section 9 (:func:`ml.evaluate.temporal_split`): the
first cut gives the *holdout* that gates publishing; the same cut applied again to the holdout's train part
gives the *validation* split. Every trial trains on the validation train part and is scored on the
validation test pairs, so nothing chosen here has seen the holdout's test pairs (:func:`validation_split`).

Three families compete on the validation split:

- ``lightfm``: components, loss (WARP, BPR, WARP-kOS), learning rate, epochs, regularisation (item and user
  alpha), max sampled, the interaction type weights and the half-life, searched with Optuna's TPE sampler;
  the median pruner stops a fit whose validation precision@10 after 5, 10, 20 or 40 epochs is below the
  median of earlier trials at that epoch. TPE spends the budget where good trials were found (eleven
  dimensions make a grid either coarse or unaffordable), the pruner stops hopeless fits early, and the
  budget (seconds or trials) is Optuna's own ``timeout``/``n_trials``.
- ``als`` (:mod:`ml.als`): factors, regularisation, iterations and its own confidence weighting (alpha,
  the interaction type weights and the half-life), searched with TPE.
- ``blend`` (:mod:`ml.blend`): the best LightFM and the best ALS model, per-user standardised scores, one
  weight chosen on validation.

Each study's first trial is the configuration in force (ALS's defaults when ALS is not in force), moved
into the searched ranges, so TPE starts from a known configuration. The best candidate by validation
precision@10 (NDCG@10 breaks ties) is then trained on the holdout's train part, as is the configuration in
force; it replaces that one only if it scores better on the holdout (:func:`run_search`). The choice, its
figures and every trial go to ``MODEL_DIR/search.json`` (:mod:`ml.model_config`), written atomically at
the end, so a search killed midway leaves the configuration in force. A search stopped by its caller (the
task's soft time limit) can still record what it found, the configuration in force kept (:class:`Progress`,
:func:`interrupted_record`). Hyperparameters a deployment sets in its environment
(:data:`ml.settings.SEARCHED_VARIABLES`) are pinned: the search leaves them alone, and
:func:`ml.model_config.effective_config` never overrides them.

Command line (``--model-dir`` reads the configuration in force and records the result there)::

    python -m ml.search DIR [--budget-seconds S | --trials N] [--seed S] [--model-dir DIR] [--json]
    python -m ml.search --from-db [--database-url URL] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import optuna

import ml.training
from ml.blend import blend
from ml.dataset import Dataset
from ml.errors import DatasetError, TrainingError
from ml.evaluate import MIN_USER_POSTS, Split, ranking_metrics, temporal_split
from ml.families import train_model
from ml.features import build_features
from ml.model import RecModel
from ml.model_config import FAMILIES, AlsSettings, ModelConfig, effective_config, write_search
from ml.settings import TrainingSettings

logger = logging.getLogger(__name__)

K = 10
PRIMARY, SECONDARY = f"precision@{K}", f"ndcg@{K}"
# Epochs after which a LightFM trial reports its validation precision to the pruner.
PRUNE_EPOCHS = (5, 10, 20, 40)
# Shares of a time budget: LightFM's study, then ALS's; the rest is the blend and the holdout comparison. ALS
# always gets its own share, even when LightFM's last trial ran over (a trial is never cut short), and every
# family at least one trial: so the budget is a target, which a slow trial and the final fits may overrun.
LIGHTFM_SHARE, ALS_SHARE = 0.55, 0.25
BLEND_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))

HALF_LIVES = (0.0, 30.0, 90.0, 180.0, 365.0, 730.0, 1460.0)
# The interaction weighting, searched for each family apart.
WEIGHTING_SPACE = {
    "weight_view": optuna.distributions.FloatDistribution(0.1, 2.0, log=True),
    "weight_like": optuna.distributions.FloatDistribution(0.5, 5.0, log=True),
    "weight_comment": optuna.distributions.FloatDistribution(0.5, 10.0, log=True),
    "half_life_days": optuna.distributions.CategoricalDistribution(HALF_LIVES),
}
LIGHTFM_SPACE = {
    "components": optuna.distributions.IntDistribution(8, 128, log=True),
    "loss": optuna.distributions.CategoricalDistribution(("warp", "bpr", "warp-kos")),
    "learning_rate": optuna.distributions.FloatDistribution(0.01, 0.3, log=True),
    "epochs": optuna.distributions.IntDistribution(5, 60),
    "item_alpha": optuna.distributions.FloatDistribution(1e-9, 1e-3, log=True),
    "user_alpha": optuna.distributions.FloatDistribution(1e-9, 1e-3, log=True),
    "max_sampled": optuna.distributions.IntDistribution(5, 50),
    **WEIGHTING_SPACE,
}
ALS_SPACE = {
    "factors": optuna.distributions.IntDistribution(8, 256, log=True),
    "regularization": optuna.distributions.FloatDistribution(1e-3, 10.0, log=True),
    "alpha": optuna.distributions.FloatDistribution(0.5, 100.0, log=True),
    "iterations": optuna.distributions.IntDistribution(3, 30),
    **WEIGHTING_SPACE,
}


def validation_split(holdout: Split) -> Split:
    """The validation split: the DESIGN section 9 cut applied again to the holdout's train part.

    Its train part holds only interactions of the holdout's train part; its test pairs are train pairs of
    the holdout. The holdout's test pairs appear in neither.
    """
    return temporal_split(holdout.train)


# --- the search ---


@dataclass
class _Validation:
    """The validation split with what every trial needs, computed once."""

    split: Split
    users: np.ndarray

    def score(self, model: RecModel) -> dict[str, float]:
        ranked, _ = model.top_k(self.users, K)
        return ranking_metrics(
            ranked, self.users, self.split.test_user, self.split.test_item, self.split.train.num_items, K
        )


def _key(metrics: Mapping[str, float]) -> tuple[float, float]:
    return (metrics[PRIMARY], metrics[SECONDARY])


@dataclass
class Progress:
    """What a running search has found: its trials and the best configuration of each family by validation.

    :func:`run_search` fills the one it is given as it goes, so a caller that stops the search midway (the
    task's soft time limit) still holds it and can record it (:func:`interrupted_record`).
    """

    started: float = field(default_factory=time.monotonic)
    trials: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, tuple[ModelConfig, dict[str, float]]] = field(default_factory=dict)
    data: dict[str, int] | None = None


def _document(
    progress: Progress, pinned: frozenset[str], budget_seconds: float | None, trials: int | None, seed: int
) -> dict[str, Any]:
    """The record's fields every search has, finished or not."""
    return {
        "searched_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "budget": {"seconds": budget_seconds, "trials": trials},
        "seed": seed,
        "pinned": sorted(pinned),
        "data": progress.data,
        "trials": progress.trials,
    }


def interrupted_record(
    progress: Progress,
    current: ModelConfig,
    pinned: frozenset[str],
    reason: str,
    budget_seconds: float | None = None,
    trials: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The record of a search stopped before its holdout comparison: the trials and each family's best by
    validation so far (no holdout figures: nothing was compared), ``adopted`` false and ``current`` kept."""
    document = _document(progress, pinned, budget_seconds, trials, seed)
    families = {
        family: {"config": config.to_json(), "validation": metrics, "holdout": None}
        for family, (config, metrics) in progress.candidates.items()
    }
    best_family = max(families, key=lambda f: _key(families[f]["validation"])) if families else None
    current_validation = next((t["validation"] for t in progress.trials if t["family"] == "current"), None)
    document.update(
        interrupted=True,
        current={"config": current.to_json(), "validation": current_validation, "holdout": None},
        families=families,
        popularity=None,
        best=families[best_family] | {"family": best_family} if best_family else None,
        adopted=False,
        reason=reason,
        chosen=current.to_json(),
        seconds=round(time.monotonic() - progress.started, 3),
    )
    return document


def run_search(
    dataset: Dataset,
    current: ModelConfig,
    pinned: frozenset[str] = frozenset(),
    budget_seconds: float | None = None,
    trials: int | None = None,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Search on the validation split, compare the best with ``current`` on the holdout, return the record.

    Parameters
    ----------
    dataset : Dataset
    current : ModelConfig
        The configuration in force; its ``training`` gives the pinned values, ``num_threads`` and ``seed``.
    pinned : frozenset of str
        Fields of :data:`ml.settings.SEARCHED_VARIABLES` the search leaves at ``current.training``'s values.
    budget_seconds, trials : optional
        The budget: wall seconds for the whole search, and/or trials per family study (at least one given).
    seed : int
        Seeds Optuna's sampler (the models' seed is ``current.training.seed``).
    families : tuple of str
        The families to try (a blend needs both others).
    progress : Progress, optional
        Filled as the search goes (for a caller that may stop it midway).

    Returns
    -------
    dict
        Strict JSON: ``searched_at``, ``seconds``, ``budget``, ``pinned``, ``data``, ``trials`` (each with
        ``family``, ``number``, ``state``, ``config``, ``validation``, ``seconds``), ``current`` and ``best``
        (config, validation and holdout metrics), ``families`` (the best of each family, likewise),
        ``adopted``, ``reason`` and ``chosen`` (the configuration in force after the search).

    Raises
    ------
    DatasetError
        When the data allow no validation split (too few users with enough history).
    """
    if budget_seconds is None and trials is None:
        raise ValueError("a search needs a budget: seconds, trials or both")
    progress = progress if progress is not None else Progress()
    started = progress.started
    deadline = started + budget_seconds if budget_seconds is not None else None
    holdout = temporal_split(dataset)
    validation = validation_split(holdout)
    if len(validation.test_user) == 0:
        raise DatasetError(
            f"no validation pairs: the search needs users with at least {MIN_USER_POSTS} distinct train posts"
        )
    val = _Validation(validation, np.unique(validation.test_user))
    progress.data = {
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": dataset.num_interactions,
        "validation_users": int(len(val.users)),
        "validation_pairs": int(len(validation.test_user)),
        "holdout_users": int(len(np.unique(holdout.test_user))),
        "holdout_pairs": int(len(holdout.test_user)),
    }
    records, candidates = progress.trials, progress.candidates

    def remaining(share: float) -> float | None:
        if deadline is None:
            return None
        return max(0.0, budget_seconds * share - (time.monotonic() - started))

    current_validation = val.score(train_model(validation.train, current))
    records.append(_record("current", 0, "COMPLETE", current, current_validation, 0.0))
    if "lightfm" in families:
        _search_lightfm(val, current.training, pinned, remaining(LIGHTFM_SHARE), trials, seed, progress)
    if "als" in families:
        timeout = None if deadline is None else max(remaining(LIGHTFM_SHARE + ALS_SHARE), budget_seconds * ALS_SHARE)
        _search_als(val, current, timeout, trials, seed, progress)
    if "blend" in families and {"lightfm", "als"} <= candidates.keys():
        _search_blend(val, candidates["lightfm"][0], candidates["als"][0], progress)

    document = _document(progress, pinned, budget_seconds, trials, seed)
    document.update(_choose(holdout, current, current_validation, candidates))
    document["seconds"] = round(time.monotonic() - started, 3)
    logger.info("search done in %.1f s: %s", document["seconds"], document["reason"])
    return document


def _choose(
    holdout: Split,
    current: ModelConfig,
    current_validation: dict[str, float],
    candidates: dict[str, tuple[ModelConfig, dict[str, float]]],
) -> dict[str, Any]:
    """The holdout comparison: the best of each family and the current configuration, trained on the
    holdout's train part; the best by validation is adopted only if it beats the current one there."""
    users = np.unique(holdout.test_user)

    def holdout_metrics(config: ModelConfig) -> dict[str, float]:
        ranked, _ = train_model(holdout.train, config).top_k(users, K)
        return ranking_metrics(ranked, users, holdout.test_user, holdout.test_item, holdout.train.num_items, K)

    popular = _popular_metrics(holdout, users)
    current_entry = {"config": current.to_json(), "validation": current_validation, "holdout": None}
    current_entry["holdout"] = holdout_metrics(current)
    families = {
        family: {"config": config.to_json(), "validation": metrics, "holdout": holdout_metrics(config)}
        for family, (config, metrics) in candidates.items()
    }
    result: dict[str, Any] = {"current": current_entry, "families": families, "popularity": popular}
    if not families:
        return result | {"best": None, "adopted": False, "reason": "no trial completed", "chosen": current.to_json()}
    best_family = max(families, key=lambda f: _key(families[f]["validation"]))
    best = families[best_family]
    result["best"] = best | {"family": best_family}
    if _key(current_validation) >= _key(best["validation"]):
        reason = (
            f"current configuration kept: it scores best on validation ({PRIMARY} {current_validation[PRIMARY]:.4f}; "
            f"the best trial, {best_family}, {best['validation'][PRIMARY]:.4f})"
        )
        return result | {"adopted": False, "reason": reason, "chosen": current.to_json()}
    if _key(best["holdout"]) > _key(current_entry["holdout"]):
        reason = (
            f"{best_family} adopted: holdout {PRIMARY} {best['holdout'][PRIMARY]:.4f} against the current "
            f"configuration's {current_entry['holdout'][PRIMARY]:.4f}"
        )
        return result | {"adopted": True, "reason": reason, "chosen": best["config"]}
    reason = (
        f"current configuration kept: the best by validation ({best_family}) scores {PRIMARY} "
        f"{best['holdout'][PRIMARY]:.4f} on the holdout, the current one {current_entry['holdout'][PRIMARY]:.4f}"
    )
    return result | {"adopted": False, "reason": reason, "chosen": current.to_json()}


def _popular_metrics(holdout: Split, users: np.ndarray) -> dict[str, float]:
    popular_items = ml.training.popularity(holdout.train)[0]
    excluded = ml.training.exclusions(holdout.train)
    ranked = np.full((len(users), K), -1, dtype=np.int64)
    for row, user in enumerate(users):
        seen = excluded.indices[excluded.indptr[user] : excluded.indptr[user + 1]]
        top = popular_items[~np.isin(popular_items, seen)][:K]
        ranked[row, : len(top)] = top
    return ranking_metrics(ranked, users, holdout.test_user, holdout.test_item, holdout.train.num_items, K)


def _record(
    family: str, number: int, state: str, config: ModelConfig | None, metrics: dict | None, seconds: float
) -> dict[str, Any]:
    return {
        "family": family,
        "number": number,
        "state": state,
        "config": config.to_json() if config else None,
        "validation": metrics,
        "seconds": round(seconds, 3),
    }


def _optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    timeout: float | None,
    trials: int | None,
    start: Mapping[str, Any],
) -> None:
    """Run the study within ``timeout`` seconds and ``trials`` trials, ``start`` (the values in force) first;
    at least one trial whatever is left."""
    study.enqueue_trial(dict(start))
    if timeout is not None and timeout <= 0:
        timeout, trials = None, 1
    study.optimize(objective, n_trials=trials, timeout=timeout, catch=(TrainingError,), gc_after_trial=False)


def _suggest(trial: optuna.Trial, space: Mapping[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
    """One value of each dimension of ``space`` from ``trial``."""
    values: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            values[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return values


def _within(space: Mapping[str, optuna.distributions.BaseDistribution], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` moved into ``space`` (a number clipped to its range; a choice not offered left out), so a
    configuration in force outside the searched ranges (an ``item_alpha`` of 0) can start a study."""
    inside: dict[str, Any] = {}
    for name, dist in space.items():
        value = values[name]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            if value in dist.choices:
                inside[name] = value
        else:
            inside[name] = type(dist.low)(min(max(value, dist.low), dist.high))
    return inside


def _finished(
    progress: Progress, family: str, number: int, config: ModelConfig, metrics: dict[str, float] | None, began: float
) -> None:
    """Record a trial (``metrics`` None: it failed) and keep its configuration if it is its family's best."""
    state = "COMPLETE" if metrics is not None else "FAIL"
    progress.trials.append(_record(family, number, state, config, metrics, time.monotonic() - began))
    shown = f"{metrics[PRIMARY]:.4f}" if metrics is not None else "-"
    logger.info(
        "%s trial %d %s in %.1f s: validation %s %s", family, number, state, time.monotonic() - began, PRIMARY, shown
    )
    best = progress.candidates.get(family)
    if metrics is not None and (best is None or _key(metrics) > _key(best[1])):
        progress.candidates[family] = (config, metrics)


def _search_lightfm(
    val: _Validation,
    base: TrainingSettings,
    pinned: frozenset[str],
    timeout: float | None,
    trials: int | None,
    seed: int,
    progress: Progress,
) -> None:
    """The LightFM study (TPE, median pruner over :data:`PRUNE_EPOCHS`), starting from ``base``."""
    train = val.split.train
    features = build_features(train)
    space = {name: dist for name, dist in LIGHTFM_SPACE.items() if name not in pinned}

    def objective(trial: optuna.Trial) -> float:
        began = time.monotonic()
        params = replace(base, **_suggest(trial, space))
        config = ModelConfig(training=params)
        weights = ml.training.interaction_weights(train, params)

        def checkpoint(epoch: int, estimator: Any) -> None:
            if epoch in PRUNE_EPOCHS and epoch < params.epochs:
                metrics = val.score(ml.training.to_rec_model(train, features, estimator))
                trial.report(metrics[PRIMARY], epoch)
                if trial.should_prune():
                    progress.trials.append(
                        _record("lightfm", trial.number, "PRUNED", config, metrics, time.monotonic() - began)
                    )
                    raise optuna.TrialPruned(f"pruned after {epoch} epochs")

        try:
            estimator = ml.training.fit(weights, features, params, after_epoch=checkpoint)
            metrics = val.score(ml.training.to_rec_model(train, features, estimator))
        except TrainingError:
            _finished(progress, "lightfm", trial.number, config, None, began)
            raise
        _finished(progress, "lightfm", trial.number, config, metrics, began)
        return metrics[PRIMARY]

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    _optimize(study, objective, timeout, trials, _within(space, asdict(base)))


def _search_als(
    val: _Validation,
    current: ModelConfig,
    timeout: float | None,
    trials: int | None,
    seed: int,
    progress: Progress,
) -> None:
    """The ALS study (TPE), starting from ``current``'s ALS settings (or the defaults). Its configurations
    carry ``current``'s LightFM settings, of which ALS uses ``num_threads`` and ``seed``."""

    def objective(trial: optuna.Trial) -> float:
        began = time.monotonic()
        config = ModelConfig(family="als", training=current.training, als=AlsSettings(**_suggest(trial, ALS_SPACE)))
        try:
            metrics = val.score(train_model(val.split.train, config))
        except TrainingError:
            _finished(progress, "als", trial.number, config, None, began)
            raise
        _finished(progress, "als", trial.number, config, metrics, began)
        return metrics[PRIMARY]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    _optimize(study, objective, timeout, trials, _within(ALS_SPACE, asdict(current.als or AlsSettings())))


def _search_blend(val: _Validation, lightfm: ModelConfig, als: ModelConfig, progress: Progress) -> None:
    """The blend of the two best models: each weight of :data:`BLEND_WEIGHTS` scored once on validation."""
    first = train_model(val.split.train, lightfm)
    second = train_model(val.split.train, als)
    for number, weight in enumerate(BLEND_WEIGHTS):
        began = time.monotonic()
        config = ModelConfig(family="blend", training=lightfm.training, als=als.als, blend_weight=weight)
        _finished(progress, "blend", number, config, val.score(blend(first, second, weight)), began)


# --- command line ---


def main(argv: list[str] | None = None) -> int:
    from ml.evaluate import _read_from_db, read_dataset_dir  # the dataset sources of ml.evaluate's command
    from ml.settings import database_url_from, environment, pinned_fields, sql_queries_from, training_from

    parser = argparse.ArgumentParser(prog="python -m ml.search", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("dataset_dir", nargs="?", help="a dataset directory (DESIGN section 3)")
    source.add_argument("--from-db", action="store_true", help="read the dataset from PostgreSQL")
    parser.add_argument("--database-url", help="with --from-db; default DATABASE_URL")
    parser.add_argument("--budget-seconds", type=float, help="wall seconds for the whole search")
    parser.add_argument("--trials", type=int, help="trials per family study")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default all)")
    parser.add_argument("--model-dir", help="read the configuration in force from, and record the result in, DIR")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    args = parser.parse_args(argv)
    if args.budget_seconds is None and args.trials is None:
        parser.error("give --budget-seconds, --trials or both")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if not families or set(families) - set(FAMILIES):
        parser.error(f"--families: a comma-separated subset of {', '.join(FAMILIES)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = environment()
    base = training_from(env)
    pinned = pinned_fields(env)
    current = effective_config(base, args.model_dir, pinned) if args.model_dir else ModelConfig(training=base)
    try:
        if args.from_db:
            dataset = _read_from_db(args.database_url or database_url_from(env), sql_queries_from(env))
        else:
            dataset = read_dataset_dir(args.dataset_dir)
        document = run_search(dataset, current, pinned, args.budget_seconds, args.trials, args.seed, families)
    except (DatasetError, TrainingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.model_dir:
        write_search(args.model_dir, document)
    print(json.dumps(document, indent=2) if args.json else format_table(document))
    return 0


def format_table(document: Mapping[str, Any]) -> str:
    """The search's figures as a table: current, the best of each family, popularity; then the choice."""
    names = [f"precision@{K}", f"recall@{K}", f"ndcg@{K}"]
    counts = {state: sum(1 for t in document["trials"] if t["state"] == state) for state in ("COMPLETE", "PRUNED")}
    lines = [
        f"search: {len(document['trials'])} trials ({counts['PRUNED']} pruned) in {document['seconds']:.1f} s; "
        f"{document['data']['validation_users']} validation users, {document['data']['holdout_users']} holdout users",
        f"{'holdout':<12}" + "".join(f"{name:>14}" for name in names) + f"{'val P@10':>12}",
    ]
    rows = [("current", document["current"])] + list(document["families"].items())
    for label, entry in rows:
        lines.append(
            f"{label:<12}"
            + "".join(f"{entry['holdout'][name]:>14.4f}" for name in names)
            + f"{entry['validation'][PRIMARY]:>12.4f}"
        )
    lines.append(f"{'popularity':<12}" + "".join(f"{document['popularity'][name]:>14.4f}" for name in names))
    lines.append(document["reason"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
