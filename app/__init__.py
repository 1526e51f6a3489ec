"""The web app of recsvc: REST API over the precomputed recommendations (DESIGN section 7).

:func:`create_app` builds it as Flask's tutorial does: defaults, then the validated settings of
``common.config.load_settings()``, then a test's overrides. Blueprints are registered inside the factory.
Under gunicorn (``wsgi.py``, ``gunicorn.conf.py``) each worker builds its own app, loads the model before
serving and runs a reloader thread; under Flask's test client or dev server the model loads on first use.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

from flask import Flask, Response, g, request
from flask_cors import CORS

from app.json_provider import OrjsonProvider
from common.config import load_settings

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Swagger UI and ReDoc are served from the app's own static folder (see app/static/fetch-docs-assets.sh),
# so the documentation works without internet access.
_DOCS_ASSETS = "/static/vendor"


def _service_version() -> str:
    with _PYPROJECT.open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def create_app(test_config: dict | None = None) -> Flask:
    """Create the Flask app.

    Parameters
    ----------
    test_config : dict, optional
        Flask config overrides; a ``SETTINGS`` entry (a ``common.config.Settings``) replaces the settings
        read from the environment.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        API_TITLE="recsvc",
        API_VERSION=_service_version(),
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=f"{_DOCS_ASSETS}/swagger-ui/",
        # No validator badge: it would make the browser call an online validation service.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        OPENAPI_REDOC_PATH="redoc",
        OPENAPI_REDOC_URL=f"{_DOCS_ASSETS}/redoc/redoc.standalone.js",
        API_SPEC_OPTIONS={
            "info": {"description": "Personalised feed recommendations for the community app (LightFM hybrid)."},
            "components": {
                "securitySchemes": {
                    "adminToken": {"type": "http", "scheme": "bearer"},
                    "eventsToken": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "EVENTS_TOKEN, else ADMIN_TOKEN",
                    },
                }
            },
        },
    )
    if test_config is None or "SETTINGS" not in test_config:
        app.config["SETTINGS"] = load_settings()
    if test_config is not None:
        app.config.from_mapping(test_config)
    settings = app.config["SETTINGS"]
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False  # keep the documented field order, and skip sorting on every response

    from app import feed_shortcut, limiter, request_id
    from app.api import Api
    from app.runtime import build_runtime
    from app.schemas import PageLimitsPlugin
    from app.views import admin, events, health, metrics, recommendations, root, similar

    app.extensions["recsvc"] = build_runtime(settings)
    request_id.init_app(app)
    _record_request_metrics(app)
    # CORS headers only for requests that carry an Origin (browsers); the backend's server-to-server calls
    # need none, and skipping them is measurably cheaper on the hot path (as the CORS spec says to).
    CORS(app, origins=list(settings.cors_origins), expose_headers=["X-Request-ID"], always_send=False)
    limiter.init_app(app, settings)
    app.extensions["recsvc-events-limit"] = limiter.EndpointLimit(settings.events_rate_limit, "events", settings)

    app.url_map.converters["rest"] = recommendations.RestOfPathConverter
    page_limits = PageLimitsPlugin(settings.max_page_limit, settings.default_page_limit)
    api = Api(app, spec_kwargs={"extra_plugins": [page_limits]})
    for blueprint in (root.blp, recommendations.blp, similar.blp, events.blp, health.blp, admin.blp, metrics.blp):
        api.register_blueprint(blueprint)
    # Browsers ask for /favicon.ico on every page they show (the docs, a JSON answer): "no icon" rather than
    # a 404 that the browser's console reports as an error.
    app.add_url_rule("/favicon.ico", "favicon", lambda: ("", 204))
    feed_shortcut.install(app)  # plain feed pages answered before Flask's request machinery
    return app


def _record_request_metrics(app: Flask) -> None:
    """Count and time every request by endpoint (the URL rule, so user ids do not become labels)."""
    from app import metrics

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("request_started")
        rule = request.url_rule.rule if request.url_rule is not None else None
        elapsed = time.perf_counter() - started if started is not None else None
        metrics.observe_request(rule, request.method, response.status_code, elapsed)
        return response
