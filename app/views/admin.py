"""``/admin``: reload the model now, the model's status, the experiment's report.

Requires ``Authorization: Bearer $ADMIN_TOKEN``.

Without a configured ``ADMIN_TOKEN`` the admin endpoints are disabled and answer 403 ``admin_disabled``.
Each answer comes from the one worker that handled the request; the other workers follow the published
version through their reloaders.
"""

from __future__ import annotations

import os
import time

from flask.views import MethodView

from app.api import Blueprint, abort
from app.auth import is_preflight, require_bearer
from app.cache_guard import CacheUnavailable
from app.model_holder import iso_time
from app.runtime import get_runtime
from app.schemas import ExperimentsSchema, ModelStatusSchema, ReloadSchema
from ml.model_config import read_search, summary

blp = Blueprint("admin", __name__, url_prefix="/admin", description="Model administration (admin token)")

_AUTH_DOC = {"security": [{"adminToken": []}]}


@blp.before_request
def _require_admin_token() -> None:
    if is_preflight():
        return
    token = get_runtime().settings.admin_token
    if token is None:
        abort(403, "admin endpoints are disabled: set ADMIN_TOKEN to enable them", code="admin_disabled")
    require_bearer(token, "recsvc admin", "missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)")


@blp.route("/reload-model")
class ReloadModel(MethodView):
    @blp.doc(**_AUTH_DOC)
    @blp.response(200, ReloadSchema)
    @blp.alt_response(500, schema=ReloadSchema, description="The load failed; the previous model is still served")
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    def post(self):
        """Reload the published model from disk now

        Loads the version Redis says is current (or the disk's CURRENT if Redis is unavailable) into the
        worker that handles this request, unless that worker already holds it.
        """
        holder = get_runtime().holder
        outcome = holder.reload()
        previous, current = outcome.previous, outcome.current
        body = {
            "success": outcome.success,
            "message": outcome.reason,
            "details": {
                "reloaded": outcome.reloaded,
                "reason": outcome.reason,
                "previous_version": previous.version if previous else None,
                "current_version": current.version if current else None,
                "previous_reload_time": iso_time(previous.loaded_at) if previous else None,
                "current_reload_time": iso_time(current.loaded_at) if current else None,
                "num_users": current.num_users if current else None,
                "num_items": current.num_items if current else None,
            },
        }
        return body, 200 if outcome.success else 500


@blp.route("/model-status")
class ModelStatus(MethodView):
    @blp.doc(**_AUTH_DOC)
    @blp.response(200, ModelStatusSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    def get(self):
        """The model this worker serves, its age and metrics, and the last training outcome"""
        runtime = get_runtime()
        loaded = runtime.holder.get()
        try:
            cache_version = runtime.guard.call(runtime.cache.current_version)
            outcome = runtime.guard.call(runtime.cache.last_training_outcome)
            report = runtime.guard.call(runtime.cache.online_report)
        except CacheUnavailable:
            cache_version = outcome = report = None
        age = loaded.age_seconds(time.time()) if loaded else None
        return {
            "worker_pid": os.getpid(),
            "version": loaded.version if loaded else None,
            "created_at": iso_time(loaded.created_at) if loaded else None,
            "loaded_at": iso_time(loaded.loaded_at) if loaded else None,
            "age_seconds": round(age, 1) if age is not None else None,
            "num_users": loaded.num_users if loaded else None,
            "num_items": loaded.num_items if loaded else None,
            "metrics": loaded.metadata.get("metrics") if loaded else None,
            "cache_version": cache_version,
            "last_load_error": runtime.holder.last_error,
            "last_training_outcome": outcome,
            "model_family": loaded.family if loaded else None,
            "search": summary(read_search(runtime.settings.model_dir)),
            "online": report["quality"] if report else None,
        }


@blp.route("/experiments")
class Experiments(MethodView):
    @blp.doc(**_AUTH_DOC)
    @blp.response(200, ExperimentsSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    def get(self):
        """The running experiment and its last online report

        Per variant per day: impressions, users, click-through by type, and the relative difference to the
        control with its 95% interval and p-value. `tasks.online_report` computes it (every
        ONLINE_REPORT_INTERVAL_SECONDS); `report` is null before its first run or without an experiment.
        """
        runtime = get_runtime()
        experiment = runtime.settings.experiment
        try:
            report = runtime.guard.call(runtime.cache.online_report)
            backlog = runtime.guard.call(runtime.cache.served_backlog)
        except CacheUnavailable:
            report = backlog = None
        configured = None
        if experiment is not None:
            configured = {
                "name": experiment.name,
                "control": experiment.control,
                "variants": [
                    {"name": v.name, "share": v.share, "ranking": v.ranking, "training": dict(v.training)}
                    for v in experiment.variants
                ],
            }
        found = report.get("experiment") if report else None
        return {
            "configured": configured,
            "report": found if found and experiment and found["name"] == experiment.name else None,
            "computed_at": report.get("computed_at") if report else None,
            "attribution_window_hours": runtime.settings.attribution_window_hours,
            "served_backlog": backlog,
        }
