"""``GET /health``: whether this worker can serve, and the state of each dependency."""

from __future__ import annotations

from flask.views import MethodView

from app.api import Blueprint
from app.runtime import get_runtime
from app.schemas import HealthSchema

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness")


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="No model is loaded: the worker cannot serve")
    def get(self):
        """Service and dependency health

        200 while the worker can serve (it holds a model; Redis down only degrades it), 503 otherwise.
        PostgreSQL is needed only by training and is reported for information.
        """
        runtime = get_runtime()
        loaded = runtime.holder.get()
        redis_check = runtime.redis_probe.result()
        postgres = runtime.postgres_probe.result()
        model = {
            "ok": loaded is not None,
            "required": True,
            "version": loaded.version if loaded else None,
            "age_seconds": round(age, 1) if loaded and (age := loaded.age_seconds()) is not None else None,
            "error": None if loaded else (runtime.holder.last_error or {}).get("error") or "no model is published yet",
        }
        if loaded is None:
            status = "unavailable"
        elif not redis_check.ok:
            status = "degraded"
        else:
            status = "ok"
        body = {
            "status": status,
            "checks": {
                "model": model,
                "redis": {
                    "ok": redis_check.ok,
                    "required": False,
                    "latency_ms": redis_check.latency_ms,
                    "error": redis_check.error,
                },
                "postgres": {
                    "ok": postgres.ok,
                    "required": False,
                    "latency_ms": postgres.latency_ms,
                    "error": postgres.error,
                },
            },
        }
        return body, 200 if loaded is not None else 503
