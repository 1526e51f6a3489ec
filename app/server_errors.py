"""JSON answers for the requests gunicorn refuses itself, before they reach the app.

A request line over ``limit_request_line`` (8,190 bytes), a header over ``limit_request_field_size`` (8,190
bytes), too many headers, or malformed HTTP is answered by gunicorn's worker, which writes an HTML page
through ``gunicorn.util.write_error``. DESIGN section 7 promises JSON for every error, so
``gunicorn.conf.py`` calls :func:`install` to replace that one function with :func:`write_json_error`: same
status and reason, the DESIGN error shape, and an ``X-Request-ID`` like every other response.
"""

from __future__ import annotations

import json
import uuid

from gunicorn import util

from app.api import error_body


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's error response as a DESIGN JSON error (the signature of ``util.write_error``)."""
    body = json.dumps(error_body(status_int, mesg or reason)).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {uuid.uuid4().hex}\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Make gunicorn's workers answer the requests they refuse with :func:`write_json_error`."""
    util.write_error = write_json_error
