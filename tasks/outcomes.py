"""What a training run ends with: its outcome, the exceptions that end it early, and what the outcome reports.

An outcome is a JSON dict with the same keys for every status (``published``, ``unchanged``, ``skipped``,
``rejected``, ``failed``): the result of ``tasks.train``, and the last training outcome ``/admin/model-status``
shows. :class:`Stages` times the pipeline's stages; :class:`Candidate` is a trained, saved, unpublished version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ml.model import RecModel

log = logging.getLogger(__name__)

SKIPPED_REASON = "training already running"


class RunRejected(Exception):
    """The run refuses to publish: unusable data or a model that fails the quality gate.

    Not an error of the service: the current model stays, and the reason goes into the run's outcome.
    ``details`` carries what was known when the run stopped (counts, metrics).
    """

    def __init__(self, reason: str, **details: Any):
        super().__init__(reason)
        self.reason = reason
        self.details = details


class RunUnchanged(Exception):
    """The data and training parameters are those the served version was trained on: nothing to publish.

    Retraining would only reshuffle every feed (LightFM's parallel fit gives another model on the same data) and
    fill the kept versions with copies. ``version`` is the served version; ``details`` carries the counts.
    """

    def __init__(self, version: str, **details: Any):
        super().__init__(f"the data and training parameters are unchanged since version {version}")
        self.reason = str(self)
        self.version = version
        self.details = details


class RunAborted(RuntimeError):
    """The run cannot finish safely (it lost the training lock, or a chunk wrote fewer lists than expected)."""


class Stages:
    """Wall-clock seconds of each pipeline stage, in the order they ran."""

    def __init__(self, durations: Mapping[str, float] | None = None):
        self.durations: dict[str, float] = dict(durations or {})

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        log.info("training stage %s started", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - start)

    def record(self, name: str, seconds: float) -> None:
        self.durations[name] = round(seconds, 3)


@dataclass(frozen=True)
class Candidate:
    """A trained model saved as an artifact (not yet current), with what its outcome reports.

    ``metrics`` is None for a first model trained before any user had enough history for a holdout.
    """

    version: str
    created_at: str
    num_users: int
    num_items: int
    num_interactions: int
    metrics: dict[str, Any] | None
    fit: dict[str, Any] | None = None  # warm or full and why, how the data was read (tasks.pipeline._Fit.report)

    @classmethod
    def of_artifact(cls, version: str, model: RecModel, metadata: Mapping[str, Any]) -> Candidate:
        """A saved version as a candidate again (published anew: a rollback, a republish after Redis lost it)."""
        return cls(
            version=version,
            created_at=metadata["created_at"],
            num_users=model.num_users,
            num_items=model.num_items,
            num_interactions=int((metadata.get("counts") or {}).get("num_interactions", 0)),
            metrics=metadata.get("metrics"),
        )

    def update_message(self) -> dict[str, Any]:
        """The message announced on the model-updates channel (DESIGN section 6)."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "num_users": self.num_users,
            "num_items": self.num_items,
        }


def outcome(status: str, reason: str | None = None, stages: Stages | None = None, **fields: Any) -> dict[str, Any]:
    """A run's result: JSON-ready, the same keys for every status (``published``, ``unchanged``, ``skipped``,
    ``rejected``, ``failed``)."""
    result = {
        "status": status,
        "reason": reason,
        "version": None,
        "num_users": None,
        "num_items": None,
        "num_interactions": None,
        "metrics": None,
        "fit": None,
        "stages": dict(stages.durations) if stages else {},
        "variants": {},  # the experiment's model variants: name -> what the run did with it (tasks.variants)
    }
    result.update(fields)
    result["finished_at"] = _now_iso()
    return result


def skipped_outcome() -> dict[str, Any]:
    """The outcome of a run that found another one holding the training lock."""
    return outcome("skipped", SKIPPED_REASON)


def published_outcome(candidate: Candidate, stages: Stages, previous_version: str | None, **fields: Any) -> dict:
    """The outcome of a run whose version is now current."""
    return outcome(
        "published",
        None,
        stages,
        version=candidate.version,
        previous_version=previous_version,
        num_users=candidate.num_users,
        num_items=candidate.num_items,
        num_interactions=candidate.num_interactions,
        metrics=candidate.metrics,
        fit=candidate.fit,
        **fields,
    )


def rejected_outcome(exc: RunRejected, stages: Stages) -> dict[str, Any]:
    """The outcome of a run that refused to publish; the current model stays."""
    return outcome("rejected", exc.reason, stages, **exc.details)


def unchanged_outcome(exc: RunUnchanged, stages: Stages) -> dict[str, Any]:
    """The outcome of a run that found nothing new to learn; ``version`` is the one still served."""
    return outcome("unchanged", exc.reason, stages, version=exc.version, **exc.details)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
