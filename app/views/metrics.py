"""``GET /metrics``: Prometheus metrics of all web workers."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView

from app import metrics
from app.api import Blueprint
from app.runtime import get_runtime

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Prometheus metrics")


@blp.route("")
class Metrics(MethodView):
    @blp.doc(responses={200: {"description": "Prometheus text exposition", "content": {"text/plain": {}}}})
    def get(self):
        """Prometheus metrics

        Request counts and latencies by endpoint, model version, age and loads, cache hits and fallbacks,
        summed over every worker of this gunicorn.
        """
        holder = get_runtime().holder

        def model_created_at() -> float | None:
            loaded = holder.current
            return loaded.created_at if loaded is not None else None

        body, content_type = metrics.render(model_created_at)
        return Response(body, content_type=content_type)
