"""The ``X-Request-ID`` of every request: taken from the caller when well-formed, else made up.

A made-up id is 32 random hex digits (128 bits, the shape of ``uuid4().hex``), made with ``os.urandom``
directly: building a ``UUID`` object on every request would only cost time.

It is echoed in the response, attached to every log record written while the request is handled (see
:class:`RequestIdFilter`), and gunicorn's access line takes it from the response header
(:mod:`app.access_log`). Requests that Flask
handles keep it in ``g``; the feed's shortcut (:mod:`app.feed_shortcut`), which answers without Flask's
request context, binds it to :data:`CURRENT` while it works.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar

from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-ID"
# Caller-supplied ids are kept only if they are short and plain, so they cannot forge log lines.
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")


#: The id of the request a thread is answering outside Flask's request context (None: see ``g``).
CURRENT: ContextVar[str | None] = ContextVar("request_id", default=None)


def _new_id() -> str:
    return os.urandom(16).hex()


def resolve(supplied: str) -> str:
    """The request's id: ``supplied`` (the caller's header) when well-formed, else a new one."""
    return supplied if _ACCEPTED.match(supplied) else _new_id()


def init_app(app: Flask) -> None:
    """Give every request an id and put it in the response."""

    @app.before_request
    def _assign_request_id() -> None:
        g.request_id = resolve(request.headers.get(HEADER, ""))

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        # g.request_id is missing only if an earlier before_request hook failed before ours ran.
        response.headers[HEADER] = g.get("request_id") or _new_id()
        return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to log records (``-`` outside a request) that do not bring their own (the access
    log's, :mod:`app.access_log`, written after its request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "request_id"):
            return True
        bound = CURRENT.get()
        if bound is not None:
            record.request_id = bound
        else:
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True
