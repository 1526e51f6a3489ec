"""gunicorn's access log, with only the atoms its format names made for each request.

gunicorn's ``Logger.access`` makes every atom it knows for each request (the time formatted, every request
and response header and environ variable as ``{name}i``, ``{name}o`` and ``{name}e``), copies them into a
``SafeAtoms`` with their quotes escaped, and formats ``access_log_format`` from that: about 25 us of a
worker's CPU per request, nearly a tenth of what the bare endpoint costs in all (docs/PERFORMANCE.md, "A cheaper
access log"). :class:`AccessLogger` (``gunicorn.conf.py``'s ``logger_class``) hands the format a mapping
that makes an atom when the format asks for it, with gunicorn's value and escaping, so every line is the
one gunicorn would write (a test holds the two equal for every atom gunicorn documents).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from app.request_id import HEADER

# gunicorn.conf.py's access_log_format: who asked, what for, how it went, and the request id to find the rest.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'

_REQUEST_ID = HEADER.lower()

# The atoms that are an environ variable as it is, and what stands for it when it is not there.
_FROM_ENVIRON = {
    "h": ("REMOTE_ADDR", "-"),
    "m": ("REQUEST_METHOD", None),
    "U": ("PATH_INFO", None),
    "q": ("QUERY_STRING", None),
    "H": ("SERVER_PROTOCOL", None),
    "f": ("HTTP_REFERER", "-"),
    "a": ("HTTP_USER_AGENT", "-"),
}


def _last(headers: Any, name: str) -> Any:
    """The value of the last header (a pair, or a mapping's item) whose lower-cased name is ``name``, or "-"
    (gunicorn's dict of them keeps the last)."""
    found = "-"
    for key, value in headers.items() if hasattr(headers, "items") else headers:
        if key.lower() == name:
            found = value
    return found


class _Atoms(dict):
    """One request's atoms, each made the first time the format asks for it; "-" for one gunicorn lacks.

    A dict (``logging`` formats a record's message from a mapping argument, and a dict subclass's missing
    keys go to ``__missing__``) that holds ``l``, always "-", so that it is never empty: ``logging`` takes an
    empty mapping for no arguments at all.
    """

    __slots__ = ("_logger", "_resp", "_req", "_environ", "_time")

    def __init__(self, logger: Logger, resp: Any, req: Any, environ: dict[str, Any], request_time: Any):
        super().__init__(l="-")
        self._logger = logger
        self._resp = resp
        self._req = req
        self._environ = environ
        self._time = request_time

    def __missing__(self, key: str) -> Any:
        value = self._header(key.lower()) if key.startswith("{") else self._base(key)
        if isinstance(value, str):
            value = value.replace('"', '\\"')
        self[key] = value
        return value

    def _header(self, key: str) -> Any:
        """``{name}i``, ``{name}o``, ``{name}e``: a request or response header, an environ variable."""
        name, kind = key[1:-2], key[-2:]
        if kind == "}i":
            return _last(getattr(self._req, "headers", self._req), name)
        if kind == "}o":
            return _last(self._resp.headers, name)
        if kind == "}e":
            return _last(self._environ, name)
        return "-"

    def _base(self, key: str) -> Any:
        """The one-letter atoms, as ``gunicorn.glogging.Logger.atoms`` makes them."""
        environ, resp, elapsed = self._environ, self._resp, self._time
        if key in _FROM_ENVIRON:
            variable, default = _FROM_ENVIRON[key]
            return environ.get(variable, default)
        if key == "r":
            return f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
        if key == "s":
            status = resp.status
            return status.split(None, 1)[0] if isinstance(status, str) else status
        if key == "b":
            return getattr(resp, "sent", None) is not None and str(resp.sent) or "-"
        if key == "B":
            return getattr(resp, "sent", None)
        if key == "M":
            return elapsed.seconds * 1000 + int(elapsed.microseconds / 1000)
        if key == "D":
            return elapsed.seconds * 1000000 + elapsed.microseconds
        if key == "T":
            return elapsed.seconds
        if key == "L":
            return f"{elapsed.seconds:d}.{elapsed.microseconds:06d}"
        if key == "t":
            return self._logger.now()
        if key == "u":
            return self._logger._get_user(environ) or "-"
        if key == "p":
            return f"<{os.getpid()}>"
        return "-"


class AccessLogger(Logger):
    """gunicorn's logger, whose access lines make only the atoms ``access_log_format`` names.

    A line's record also carries the response's request id (``app.request_id.RequestIdFilter`` keeps it): the
    request is over when gunicorn logs it, so without it the JSON line's ``request_id`` would be "-".
    """

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        # The line is formatted by the handler, which reports a format that fails as logging does (on stderr).
        if self.access_log_enabled:
            self.access_log.info(
                self.cfg.access_log_format,
                _Atoms(self, resp, req, environ, request_time),
                extra={"request_id": _last(resp.headers, _REQUEST_ID)},
            )
