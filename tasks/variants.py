"""The models of an experiment's ``model`` variants: trained, gated and published by every training run.

A variant ``{"ranking": "model", "training": {...}}`` (:mod:`common.experiments`) names settings that override
the production ones. Each training run, on the data it read once (:class:`tasks.pipeline.RunData`), and before
the production model, runs every such variant through the production stages with:

- its configuration: the production one (the model search's choice, with the environment's pinned fields)
  with the variant's overrides pinned on top (:func:`variant_config`);
- its own line of versions (:attr:`common.experiments.Variant.lineage`): artifacts in
  ``MODEL_DIR/variants/<lineage>`` (own ``CURRENT``, pruning to ``MODEL_BACKUPS``, warm-start state), lists
  and metadata under ordinary version keys, and the pointer ``{ctl}variant:<lineage>``
  (:meth:`common.recs_cache.RecsCache.publish_variant_version`), never the production pointer;
- its own gate: the holdout must beat popularity and stay within ``QUALITY_GATE_MARGIN`` of the variant's own
  current version. A variant that fails it (or cannot be fitted) publishes nothing: its current version, if
  any, keeps being served, else its users get the production feed with ``variant_fallback: true``; the run's
  outcome says so under ``variants``. A variant never stops the production model's run, nor the reverse.
- its own unchanged check: a variant whose current version was trained on the same data with the same
  configuration is ``unchanged`` (unless the run is forced).

Each variant's stages are timed on their own (the run's outcome lists them per variant) and the run's
``variants`` stage is their total: what the experiment costs each run. Lines no longer declared are retired
(:meth:`common.recs_cache.RecsCache.retire_variants`). :func:`ensure_variants_published` publishes a variant's
current artifact again when Redis lost its pointer or lists, as :mod:`tasks.publication` does for production.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ml.artifact
import ml.model_config
from common.config import Settings
from common.experiments import Variant, variant_model_dir
from common.recs_cache import Lock, RecsCache, renew_lock, served_version
from ml.errors import ArtifactError
from ml.model import RecModel
from tasks import limits, pipeline
from tasks.data_checks import trained_alike
from tasks.gate import GATE_METRIC, gate_value
from tasks.outcomes import Candidate, RunAborted, RunRejected, Stages

log = logging.getLogger(__name__)


def model_variants(settings: Settings) -> tuple[Variant, ...]:
    """The declared experiment's ``model`` variants (none without an experiment)."""
    return settings.experiment.model_variants if settings.experiment is not None else ()


def variant_settings(settings: Settings, variant: Variant) -> Settings:
    """The run's settings as the variant's stages see them: its artifact directory and training settings."""
    return dataclasses.replace(
        settings,
        model_dir=variant_model_dir(settings.model_dir, variant.lineage),
        training=variant.settings or settings.training,
        pinned_training=settings.pinned_training | variant.pinned,
    )


def variant_config(settings: Settings, variant: Variant) -> ml.model_config.ModelConfig:
    """What the variant fits: the production configuration (the search's choice in ``MODEL_DIR``) with the
    variant's overrides, which the search never replaces."""
    own = variant_settings(settings, variant)
    return ml.model_config.effective_config(own.training, settings.model_dir, own.pinned_training)


def train_variants(
    settings: Settings, cache: RecsCache, lock: Lock, data: pipeline.RunData, stages: Stages, force: bool = False
) -> dict[str, dict[str, Any]]:
    """Train, gate and publish every model variant on ``data``; variant name -> its report.

    Also retires the lines of variants no longer declared. The whole is the run's ``variants`` stage.
    """
    variants = model_variants(settings)
    cache.retire_variants([v.lineage for v in variants], settings.recs_retain_seconds)
    if not variants:
        return {}
    reports = {}
    with stages.time("variants"):
        for variant in variants:
            reports[variant.name] = train_variant(settings, cache, lock, variant, data, force)
    return reports


def train_variant(
    settings: Settings, cache: RecsCache, lock: Lock, variant: Variant, data: pipeline.RunData, force: bool = False
) -> dict[str, Any]:
    """One variant's stages: unchanged check, fit, gate, artifact, lists, publish. Returns its report.

    A rejection is the report's status (``rejected``, with the reason); a lost lock or an unreachable
    Redis end the whole run, as they would the production stages.
    """
    own = variant_settings(settings, variant)
    config = variant_config(settings, variant)
    stages = Stages()
    served = cache.variant_version(variant.lineage)
    current = served_version(served, own.model_dir)
    try:
        if not force and served is not None and cache.is_published(served):
            if trained_alike(own.model_dir, served, data.fingerprint, config):
                return _report("unchanged", variant, stages, version=served)
        pipeline.check_trainable(data)
        candidate, model = pipeline.fit_candidate(
            own,
            data,
            config,
            current,
            gate_value(own.model_dir, current),
            stages,
            metadata={"variant": _identity(settings, variant)},
        )
    except RunRejected as exc:
        log.warning("variant %s: %s; its current version %s stays", variant.name, exc.reason, served)
        return _report("rejected", variant, stages, version=served, reason=exc.reason)
    previous = precompute_and_publish_variant(own, cache, lock, variant, candidate, model, stages)
    log.info("variant %s: published version %s (previous %s)", variant.name, candidate.version, previous)
    metric = ((candidate.metrics or {}).get("model") or {}).get(GATE_METRIC)
    return _report(
        "published",
        variant,
        stages,
        version=candidate.version,
        previous_version=previous,
        fit=(candidate.fit or {}).get("kind"),
        **{GATE_METRIC: metric},
    )


def precompute_and_publish_variant(
    own: Settings, cache: RecsCache, lock: Lock, variant: Variant, candidate: Candidate, model: RecModel, stages: Stages
) -> str | None:
    """Write every user's list of the variant's version (in this process), then publish it; the previous version.

    ``own`` is :func:`variant_settings`. Like :func:`tasks.pipeline.publish`: only while the run holds the
    lock, Redis first, then the variant directory's ``CURRENT``.
    """
    with stages.time("precompute"):
        pipeline.stage_version(own, cache, candidate, model)
        pipeline.precompute_users(own, cache, candidate.version, model, 0, candidate.num_users)
    with stages.time("publish"):
        if not renew_lock(lock):
            raise RunAborted(
                f"variant {variant.name} version {candidate.version} not published: the run lost the training lock"
                f" (it took longer than {limits.lock_ttl(own)} s, see TRAIN_TIME_LIMIT_SECONDS)"
            )
        previous = cache.publish_variant_version(variant.lineage, candidate.version, own.recs_retain_seconds)
        ml.artifact.set_current(own.model_dir, candidate.version)
    return previous


def unpublished_variants(settings: Settings, cache: RecsCache) -> list[Variant]:
    """The model variants with a current artifact whose version Redis does not serve (pointer or lists lost).

    Cheap enough for every ``tasks.ensure_published`` check: a GET and an HGET per variant, and a read of the
    variant directory's ``CURRENT``.
    """
    missing = []
    for variant in model_variants(settings):
        version = cache.variant_version(variant.lineage)
        if version is not None and cache.is_published(version):
            continue
        try:
            on_disk = ml.artifact.current_version(variant_model_dir(settings.model_dir, variant.lineage))
        except ArtifactError as exc:
            log.warning("variant %s: unreadable CURRENT (%s)", variant.name, exc)
            continue
        if on_disk is not None:
            missing.append(variant)
    return missing


def ensure_variants_published(settings: Settings, cache: RecsCache, lock: Lock) -> dict[str, dict[str, Any]]:
    """Publish again, under the held lock, each variant's current artifact that Redis does not serve.

    Variant name -> ``{"status": "republished", "version"}``, or ``{"status": "unservable", "reason"}`` when
    the artifact does not load (the variant's users get the production feed until a run trains it).
    """
    done = {}
    for variant in unpublished_variants(settings, cache):
        own = variant_settings(settings, variant)
        version = ml.artifact.current_version(own.model_dir)
        try:
            model, metadata = ml.artifact.load(own.model_dir, version)
        except ArtifactError as exc:
            log.warning("variant %s: cannot publish version %s again: %s", variant.name, version, exc)
            done[variant.name] = {"status": "unservable", "reason": str(exc)}
            continue
        candidate = Candidate.of_artifact(version, model, metadata)
        precompute_and_publish_variant(own, cache, lock, variant, candidate, model, Stages())
        log.info("variant %s: published version %s again (Redis had lost it)", variant.name, version)
        done[variant.name] = {"status": "republished", "version": version}
    return done


def _identity(settings: Settings, variant: Variant) -> dict[str, Any]:
    """What the artifact records of the variant it belongs to."""
    assert settings.experiment is not None
    return {
        "experiment": settings.experiment.name,
        "name": variant.name,
        "lineage": variant.lineage,
        "training": dict(variant.training),
    }


def _report(status: str, variant: Variant, stages: Stages, **fields: Any) -> dict[str, Any]:
    """A variant's part of the run's outcome (kept short: the outcome is the task result Flower shows)."""
    report = {"status": status, "lineage": variant.lineage, "version": None, "reason": None, **fields}
    report["stages"] = dict(stages.durations)
    return report
