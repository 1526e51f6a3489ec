"""``GET /``: what this service is, and where to go from here."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from app.api import Blueprint
from app.runtime import get_runtime
from app.schemas import RootSchema

blp = Blueprint("root", __name__, url_prefix="/", description="Service information")


@blp.route("")
class Root(MethodView):
    @blp.response(200, RootSchema)
    def get(self):
        """Service name, version and links"""
        loaded = get_runtime().holder.current
        return {
            "service": current_app.config["API_TITLE"],
            "version": current_app.config["API_VERSION"],
            "model_version": loaded.version if loaded else None,
            "links": {
                "recommendations": "/recommendations/{user_id}?limit=20&offset=0",
                "health": "/health",
                "docs": "/docs",
                "redoc": "/redoc",
                "openapi": "/openapi.json",
                "metrics": "/metrics",
                "model_status": "/admin/model-status",
            },
        }
