"""flask-smorest's ``Api`` and ``Blueprint`` adapted to this service's single error shape.

Every error the service answers, whether raised by ``abort(...)`` in a view, by argument validation, by
werkzeug routing (404, 405), by the rate limiter (429) or by an unexpected exception (500), has the shape
of DESIGN section 7::

    {"error": {"code": "<machine_code>", "message": "<human text>", "details": {...}}}

Views raise errors with :func:`abort`, which takes the machine code and details as keyword arguments.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, NoReturn

import flask_smorest
from flask import request
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException, InternalServerError

from app.schemas import ErrorResponseSchema

log = logging.getLogger(__name__)

# Machine codes of the statuses the service answers; others get their HTTP phrase in snake case.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_body(status: int, message: str, code: str | None = None, details: dict | None = None) -> dict:
    """The DESIGN error payload for ``status``."""
    code = code or _CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return {"error": {"code": code, "message": message, "details": details or {}}}


def invalid_arguments_message(fields: dict[str, dict]) -> str:
    """The message of a 400 ``invalid_arguments``, naming the arguments at fault (details has the reasons)."""
    names = ", ".join(name for per_location in fields.values() for name in per_location)
    return f"invalid request arguments: {names}"


def abort(
    status: int, message: str, *, code: str | None = None, details: dict | None = None, headers: dict | None = None
) -> NoReturn:
    """Stop the request with an error of the DESIGN shape (``code`` defaults to one per status)."""
    flask_smorest.abort(status, message=message, code=code, details=details, headers=headers)
    raise AssertionError("unreachable")  # flask_smorest.abort always raises; this tells type checkers


class ArgumentsParser(FlaskParser):
    """webargs' parser answering invalid query or path arguments with 400 rather than 422.

    webargs drops query arguments a schema does not know; here the schema decides (``unknown`` of its
    Meta; the query schemas refuse them, see ``app.schemas.QueryArgumentsSchema``), so that a misspelt
    ``limt=5`` is an error rather than silently ignored.

    A query schema may offer a shortcut, ``plain_load(args) -> dict | None`` (see
    ``RecommendationsQuerySchema``): it is asked first, and when it answers, webargs and marshmallow are
    skipped; when it returns None the arguments are parsed (and their errors worded) as usual.
    """

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None, "querystring": None}

    def _handle_invalid_json_error(self, error, req, *args, **kwargs) -> NoReturn:
        """A body that is not JSON: where parsing stopped, its field errors a map by name like any location's."""
        reason = f"not valid JSON: {error}"
        abort(400, f"the body is {reason}", code="invalid_arguments", details={"fields": {"json": {"body": [reason]}}})

    def parse(self, argmap, req=None, *, location=None, **kwargs):
        plain_load = getattr(argmap, "plain_load", None)
        if plain_load is not None and location == "query" and kwargs.get("validate") is None:
            parsed = plain_load((req or request).args)
            if parsed is not None:
                return parsed
        return super().parse(argmap, req, location=location, **kwargs)


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint whose argument errors are 400 JSON errors of the DESIGN shape."""

    ARGUMENTS_PARSER = ArgumentsParser()

    def error_response(self, status: int, description: str):
        """Document an error ``status`` of the DESIGN shape that no named response covers (413, 414, 429)."""
        return self.alt_response(status, schema=ErrorResponseSchema, description=description)


# The longest request line the web takes (gunicorn.conf.py's limit_request_line): gunicorn's largest bound short of
# none (its default is 4,094), so that DESIGN's 200 excluded post ids fit when they are UUIDs.
REQUEST_LINE_LIMIT = 8190
# A longer one is answered by gunicorn, before the app sees the request.
REQUEST_LINE_TOO_LONG = (
    f"The request line is over {REQUEST_LINE_LIMIT:,} bytes (e.g. a long `exclude`): gunicorn's answer"
)


class Api(flask_smorest.Api):
    """The flask-smorest API: documents and answers every error in the DESIGN shape."""

    ERROR_SCHEMA = ErrorResponseSchema

    def _register_error_handlers(self):
        super()._register_error_handlers()
        # Anything that is not an HTTPException is a bug or an outage: log it with its traceback and the
        # request id, and answer a 500 JSON error that reveals nothing internal.
        self._app.register_error_handler(Exception, self.handle_unexpected_exception)

    def handle_http_exception(self, error: HTTPException):
        """Answer an HTTPException (abort, validation, routing, rate limit) as a DESIGN error."""
        data: dict[str, Any] = getattr(error, "data", None) or {}
        status = error.code or 500
        details = data.get("details") or {}
        code = data.get("code")
        message = data.get("message") or error.description or HTTPStatus(status).phrase
        if "messages" in data:  # webargs validation: field errors per location
            code = code or "invalid_arguments"
            message = data.get("message") or invalid_arguments_message(data["messages"])
            details = {"fields": data["messages"]}
        elif status == 404 and not data:  # routing: Werkzeug's text speaks of web pages
            message = f"no such path: {request.path} (the API is described at /openapi.json)"
        elif status == 405 and getattr(error, "valid_methods", None):
            message = f"{request.method} is not allowed on {request.path}"
            details = {"allowed_methods": sorted(error.valid_methods)}
        if isinstance(error, InternalServerError) and error.original_exception is not None:
            log.error("unhandled exception", exc_info=error.original_exception)
        headers = {
            name: value for name, value in error.get_headers() if name.lower() not in ("content-type", "content-length")
        }
        headers.update(data.get("headers") or {})
        return error_body(status, message, code, details), status, headers

    def handle_unexpected_exception(self, error: Exception):
        """Answer an exception no view handled: log it, and return a 500 DESIGN error."""
        if isinstance(error, HTTPException):
            return self.handle_http_exception(error)
        log.exception("unhandled exception in %s %s", request.method, request.path)
        return error_body(500, "internal server error; the request id identifies it in the logs"), 500
