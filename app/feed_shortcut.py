"""The feed's shortcut: plain feed and similar-post pages answered in front of Flask.

Feed pages are the service's hot path, and Flask's request machinery (request context, routing, the view's
decorators, the before and after hooks, the response object) costs a worker as much again as the bare
endpoint does under load: ``benchmarks/serve.py`` measured the feed at about a third more requests per
second without it (docs/PERFORMANCE.md, "The feed's shortcut"). This WSGI middleware wraps the Flask app's
``wsgi_app`` and answers the requests whose answer it can give exactly as the view would:

- ``GET /recommendations/<user_id>`` with a valid user id, and ``GET /posts/<post_id>/similar``, with query
  arguments that the view's schema reads through ``plain_load`` (each valid as written);
- without an ``Origin`` header (CORS headers are Flask's to add);
- and only while rate limiting is off (flask-limiter counts requests in Flask's hooks): with ``RATE_LIMIT``
  set, as with ``API_FEED_SHORTCUT=0``, :func:`install` leaves the app as it is.

It gives those pages what Flask's hooks give every request: the request id (:mod:`app.request_id`, also on
the log records written meanwhile), the request metrics (:func:`app.metrics.observe_request`) and the JSON
of the app's provider; the answer itself is the view's own function's. Everything else goes to Flask
untouched: other paths and methods, arguments that are not plainly valid (the view words their 400), and a
page that raised (no model yet, an unknown post, a bug), which Flask then asks for again and answers as usual
(a 503, a 404, a logged 500). A test holds the two answers equal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from app import metrics, request_id
from app.feed import FeedService
from app.schemas import (
    QueryArgumentsSchema,
    RecommendationsQuerySchema,
    SimilarQuerySchema,
    check_user_id,
)
from app.views.recommendations import feed_page
from app.views.similar import similar_page
from ml.ids import MAX_ID_LENGTH

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# A query of these characters only has no escapes, no '+' and no non-ASCII byte: each ``name=value`` field
# is read as written, so splitting it gives what Werkzeug's ``request.args`` gives, at a fraction of the cost
# of ``parse_qsl`` and a ``MultiDict`` (the shortcut's largest part after the page itself).
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.,:~=&-]*")


def query_arguments(query: str) -> Mapping[str, str] | None:
    """The query's arguments as Werkzeug's ``request.args`` reads them, the first of a repeated one; None if
    the query is not valid UTF-8. ``query`` is the WSGI ``QUERY_STRING`` (its bytes as latin-1)."""
    if _PLAIN_QUERY.fullmatch(query):
        args: dict[str, str] = {}
        for field in query.split("&"):
            if field:  # parse_qsl skips empty fields, and keeps a name without '=' with a blank value
                name, _, value = field.partition("=")
                args.setdefault(name, value)
        return args
    try:
        query = query.encode("latin-1").decode()
    except UnicodeError:
        return None
    # As Werkzeug's ``request.args``: blank values kept, undecodable escapes left as they are.
    return MultiDict(parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote"))


def _check_post_path(post_id: str) -> None:
    """A post id the similar view answers as is (its ``string`` converter: no ``/``; longer ones are its 404)."""
    if not 1 <= len(post_id) <= MAX_ID_LENGTH or "/" in post_id:
        raise ValidationError("not a plain post id")


@dataclass(frozen=True)
class Route:
    """A view the shortcut answers for: its path ``prefix<id>suffix``, its query schema and its answer."""

    rule: str  # the view's URL rule: the requests' metrics label
    prefix: str
    suffix: str
    check: Callable[[str], None]  # raises ValidationError for a path id the view would not answer as is
    query: QueryArgumentsSchema
    answer: Callable[[FeedService, str, dict], dict]  # the view's own function: (feed, path id, query) -> body

    def path_id(self, path: str) -> str | None:
        """The id in ``path`` if it is this route's path, else None."""
        if not path.startswith(self.prefix) or not path.endswith(self.suffix):
            return None
        return path[len(self.prefix) : len(path) - len(self.suffix)]


ROUTES = (
    Route(
        "/recommendations/<rest:user_id>",
        "/recommendations/",
        "",
        check_user_id,
        RecommendationsQuerySchema(),
        feed_page,
    ),
    Route("/posts/<post_id>/similar", "/posts/", "/similar", _check_post_path, SimilarQuerySchema(), similar_page),
)


def install(app: Flask) -> None:
    """Put the shortcut in front of ``app`` (built by ``create_app``), unless it is off or rate limiting is on."""
    settings = app.config["SETTINGS"]
    if settings.api_feed_shortcut and not settings.rate_limit:
        app.wsgi_app = FeedShortcut(app, app.wsgi_app)  # type: ignore[method-assign]


class FeedShortcut:
    """A WSGI app answering plain pages of :data:`ROUTES` itself and passing every other request to ``flask_wsgi``."""

    def __init__(self, app: Flask, flask_wsgi: WsgiApp):
        self.flask_wsgi = flask_wsgi
        self._feed = app.extensions["recsvc"].feed
        self._settings = app.config["SETTINGS"]
        self._body = app.json.response_body  # type: ignore[attr-defined]  (app.json_provider.OrjsonProvider)
        self._content_type = app.json.mimetype  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        found = self.plain_request(environ)
        if found is None:
            return self.flask_wsgi(environ, start_response)
        route, path_id, query = found
        rid = request_id.resolve(environ.get("HTTP_X_REQUEST_ID", ""))
        bound = request_id.CURRENT.set(rid)
        try:
            body = self._body(route.answer(self._feed, path_id, query))
        except Exception:  # no model yet, an unknown post, a bug: Flask asks again and answers it
            body = None
        finally:
            request_id.CURRENT.reset(bound)
        if body is None:
            return self.flask_wsgi(environ, start_response)
        metrics.observe_request(route.rule, "GET", 200, time.perf_counter() - started)
        headers = [("Content-Type", self._content_type), ("Content-Length", str(len(body))), (request_id.HEADER, rid)]
        start_response("200 OK", headers)
        return [body]

    def plain_request(self, environ: dict[str, Any]) -> tuple[Route, str, dict] | None:
        """The route, path id and loaded query of ``environ`` if the shortcut answers it, else None (Flask does)."""
        if environ.get("REQUEST_METHOD") != "GET" or "HTTP_ORIGIN" in environ:
            return None
        # WSGI passes the path and query as latin-1 strings of their bytes; Werkzeug reads them as UTF-8 (the
        # path with U+FFFD for bytes that are not).
        path = environ.get("PATH_INFO", "")
        if not path.isascii():
            path = path.encode("latin-1").decode(errors="replace")
        for route in ROUTES:
            path_id = route.path_id(path)
            if path_id is not None:
                break
        else:
            return None
        try:
            route.check(path_id)
        except ValidationError:
            return None
        args = query_arguments(environ.get("QUERY_STRING", ""))
        if args is None:
            return None
        loaded = route.query.plain_load(args, self._settings)
        return (route, path_id, loaded) if loaded is not None else None
