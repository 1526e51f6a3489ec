"""``GET /metrics``: Prometheus metrics of all web workers."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView

from app import metrics
from app.api import Blueprint
from app.cache_guard import CacheUnavailable
from app.runtime import get_runtime

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Prometheus metrics")


@blp.route("")
class Metrics(MethodView):
    @blp.doc(responses={200: {"description": "Prometheus text exposition", "content": {"text/plain": {}}}})
    def get(self):
        """Prometheus metrics

        Request counts and latencies by endpoint, model version, age and loads, cache hits and fallbacks,
        summed over every worker of this gunicorn; whether Redis answers, the last training run, and the
        online click-through of the experiment's variants and of the production model.
        """
        runtime = get_runtime()
        holder = runtime.holder

        def model_created_at() -> float | None:
            loaded = holder.current
            return loaded.created_at if loaded is not None else None

        def state() -> metrics.ScrapeState:
            try:
                outcome = runtime.guard.call(runtime.cache.last_training_outcome)
                report = runtime.guard.call(runtime.cache.online_report)
            except CacheUnavailable:
                return metrics.ScrapeState(False, None, None)
            return metrics.ScrapeState(True, outcome, report)

        body, content_type = metrics.render(model_created_at, state)
        return Response(body, content_type=content_type)
