"""Prometheus metrics of a web worker, correct across several gunicorn workers.

Under gunicorn, ``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, so
prometheus_client keeps every value in a per-process file there and :func:`render` adds them up across the
live workers (a dead worker's files are marked by the ``child_exit`` hook). Without that variable (Flask's
test client, the dev server) the values live in this process's default registry.

The model's age is derived at scrape time: ``recsvc_model_created_timestamp_seconds`` per worker, and
``recsvc_model_age_seconds`` of the worker that answered the scrape. So are the gauges read from Redis
(:class:`ScrapeState`): whether Redis answers, the last training run's outcome, and the online report of
``tasks.online_report`` (experiment click-through per variant, the production model's online click-through
against its trailing week). deploy/prometheus/alerts.yml alerts on them; deploy/grafana/recsvc.json plots them.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase

REQUESTS = Counter("recsvc_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "recsvc_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PAGES = Counter(
    "recsvc_recommendation_pages_total",
    "Recommendation pages served; source=cache is a Redis hit, source=model a fallback computed by the worker",
    ["strategy", "source"],
)
LIST_MEMO = Counter(
    "recsvc_list_memo_lookups_total",
    "Lookups of a user's list in the worker's memory before Redis (app.list_memo), by outcome (hit, miss)",
    ["outcome"],
)
CACHE_ERRORS = Counter("recsvc_cache_errors_total", "Redis calls of request handling that failed")
MODEL_LOADS = Counter("recsvc_model_loads_total", "Model loads by the web workers, by outcome", ["outcome"])
MODEL_INFO = Gauge(
    "recsvc_model_info", "1 for the model version each worker holds", ["version"], multiprocess_mode="liveall"
)
MODEL_CREATED = Gauge(
    "recsvc_model_created_timestamp_seconds",
    "When the model each worker holds was trained (Unix time)",
    multiprocess_mode="liveall",
)
RELOADER_LISTENING = Gauge(
    "recsvc_reloader_listening",
    "1 while the worker's model reloader is subscribed to the update channel, 0 while it reconnects",
    multiprocess_mode="liveall",
)
SERVED_PAGES_LOST = Counter(
    "recsvc_served_pages_lost_total",
    "Feed pages not recorded in the served stream (the impressions) because Redis failed",
)
MODEL_LOADED = Gauge(
    "recsvc_model_loaded_timestamp_seconds",
    "When each worker loaded the model it holds (Unix time)",
    multiprocess_mode="liveall",
)


@functools.lru_cache(maxsize=1024)
def labelled(metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
    """``metric.labels(*labels)``, cached: request handling labels a metric three times per request.

    ``labels()`` validates the labels and takes a lock on every call; the cached children are the same
    objects it returns (no child of these metrics is ever removed), so the values are unchanged. The
    cache is bounded because the HTTP method comes from the client.
    """
    return metric.labels(*labels)


@functools.cache
def endpoint_label(rule: str) -> str:
    """The URL rule without its converters (``/recommendations/<user_id>``): labels that routing details keep."""
    return re.sub(r"<(?:[^:<>]+:)?([^:<>]+)>", r"<\1>", rule)


def observe_request(rule: str | None, method: str, status: int, seconds: float | None) -> None:
    """Count a request answered by the URL rule ``rule`` (None: no route matched), and time it if ``seconds``."""
    endpoint = endpoint_label(rule) if rule is not None else "<unmatched>"
    labelled(REQUESTS, endpoint, method, str(status)).inc()
    if seconds is not None:
        labelled(LATENCY, endpoint).observe(seconds)


def record_model_swap(previous_version: str | None, version: str, created_at: float | None) -> None:
    """Update the model gauges after a worker swapped in ``version``."""
    if previous_version is not None and previous_version != version:
        MODEL_INFO.labels(previous_version).set(0)
    MODEL_INFO.labels(version).set(1)
    if created_at is not None:
        MODEL_CREATED.set(created_at)
    MODEL_LOADED.set(time.time())


class _ModelAgeCollector:
    """``recsvc_model_age_seconds`` of the answering worker, computed at scrape time."""

    def __init__(self, created_at: Callable[[], float | None]):
        self._created_at = created_at

    def collect(self):
        created = self._created_at()
        if created is not None:
            yield GaugeMetricFamily(
                "recsvc_model_age_seconds",
                "Seconds since the model held by the worker answering this scrape was trained",
                value=time.time() - created,
            )


@dataclass(frozen=True)
class ScrapeState:
    """What a scrape reads from Redis (once per scrape): None where Redis did not answer or had nothing."""

    redis_up: bool
    training_outcome: Mapping[str, Any] | None
    online_report: Mapping[str, Any] | None


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels)) if labels else GaugeMetricFamily(name, doc)


class _ScrapeStateCollector:
    """The gauges read from Redis at scrape time (see :class:`ScrapeState`)."""

    def __init__(self, state: Callable[[], ScrapeState]):
        self._state = state

    def collect(self):
        state = self._state()
        yield GaugeMetricFamily("recsvc_redis_up", "1 if Redis answered this scrape, else 0", value=int(state.redis_up))
        outcome = state.training_outcome
        if outcome is not None:
            failed = outcome.get("status") in ("failed", "rejected")
            yield GaugeMetricFamily(
                "recsvc_training_last_run_failed",
                "1 if the last training run failed or was rejected by the quality gate, else 0",
                value=int(failed),
            )
        report = state.online_report
        if report is None:
            return
        yield from _quality_gauges(report["quality"])
        if report.get("experiment"):
            yield from _experiment_gauges(report["experiment"])


def _quality_gauges(quality: Mapping[str, Any]):
    for name, key, doc in (
        ("recsvc_online_ctr", "ctr_today", "Online click-through of the production model today (UTC), any click"),
        ("recsvc_online_ctr_trailing_week", "ctr_trailing_week", "The same over the seven days before today"),
    ):
        if quality[key] is not None:
            yield GaugeMetricFamily(name, doc, value=quality[key])
    yield GaugeMetricFamily(
        "recsvc_online_ctr_drop_fraction",
        "The configured alert threshold (CTR_DROP_ALERT_FRACTION): a drop of today's CTR by more than this",
        value=quality["drop_fraction"],
    )
    yield GaugeMetricFamily(
        "recsvc_online_ctr_drop_alert",
        "1 if today's online CTR is below (1 - CTR_DROP_ALERT_FRACTION) x the trailing week's, else 0",
        value=int(quality["alert"]),
    )


def _experiment_gauges(experiment: Mapping[str, Any]):
    impressions = _gauge(
        "recsvc_experiment_impressions", "Impressions today (UTC), per variant", ["experiment", "variant"]
    )
    ctr = _gauge(
        "recsvc_experiment_ctr", "Click-through today, per variant and click type", ["experiment", "variant", "type"]
    )
    diff = _gauge(
        "recsvc_experiment_relative_difference",
        "Today's relative CTR difference (any click) of a variant against the control",
        ["experiment", "variant", "bound"],
    )
    p_value = _gauge(
        "recsvc_experiment_p_value", "Two-proportion test p-value against the control, today", ["experiment", "variant"]
    )
    days = experiment["days"]
    if days:
        name = experiment["name"]
        for row in days[0]["variants"]:
            impressions.add_metric([name, row["variant"]], row["impressions"])
            for kind, value in row["ctr"].items():
                if value is not None:
                    ctr.add_metric([name, row["variant"], kind], value)
            vs = (row["vs_control"] or {}).get("any")
            if vs is not None:
                for bound, key in (("estimate", "relative_difference"), ("low", "ci_low"), ("high", "ci_high")):
                    diff.add_metric([name, row["variant"], bound], vs[key])
                p_value.add_metric([name, row["variant"]], vs["p_value"])
    yield from (impressions, ctr, diff, p_value)


class _WorkersCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector of the workers' files, skipping a file that is not sized yet.

    A worker creates its file empty and sizes it just after; the library's reader fails on an empty file,
    which fails the whole scrape, and for good if the worker was killed in between (client_python#1199,
    open in 0.26). An empty file holds no value yet, so leaving it out loses nothing.
    """

    def collect(self):
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if not _empty(path)]
        return self.merge(files, accumulate=True)


def _empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except FileNotFoundError:  # a dead worker's live gauge, removed meanwhile: the merge knows those
        return False


def render(
    model_created_at: Callable[[], float | None], state: Callable[[], ScrapeState] | None = None
) -> tuple[bytes, str]:
    """The Prometheus text exposition of every worker's metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shared = CollectorRegistry()
        _WorkersCollector(shared)
    else:
        shared = REGISTRY
    local = CollectorRegistry()
    local.register(_ModelAgeCollector(model_created_at))
    if state is not None:
        local.register(_ScrapeStateCollector(state))
    return generate_latest(shared) + generate_latest(local), CONTENT_TYPE_LATEST
