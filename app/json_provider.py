"""JSON responses encoded with orjson instead of the standard library.

Every JSON response of the service (``jsonify``, a dict returned by a view, every error) is made by the
app's JSON provider. Flask's default one spends most of a recommendations page's encoding time in the
standard library's pure-Python encoder loop, which orjson replaces with C (figures in docs/PERFORMANCE.md).

The JSON is equivalent for everything the service sends: keys keep their insertion order (``sort_keys`` is
honoured), non-string keys become strings as with the standard library, and the types the standard
library cannot encode (dates, decimals, dataclasses, ``__html__`` objects) go through Flask's own
``default`` hook, so they come out as before (a date as an HTTP date). Differences are of form only:
non-ASCII characters are sent as UTF-8 rather than ``\\u`` escapes, exponents are spelled ``1e-7`` rather
than ``1e-07``, and a NaN or infinite float is ``null`` rather than the invalid ``NaN``. A feed entry's
``metadata`` object is encoded once per post and version (an ``orjson.Fragment``: ``app.feed.version_view``)
and sent as it is: indented output (debug mode) leaves it on one line, and ``sort_keys`` does not reach it.
Decoding (``request.get_json``) and ``flask.json.dumps`` (e.g. ``/openapi.json``) are left to the standard
library.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

# Dates and dataclasses go to Flask's ``default`` (orjson would write dates in ISO 8601 instead).
_BASE_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    """Flask's default JSON provider, with responses encoded by orjson (see the module's docstring)."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A JSON response of the arguments, as :meth:`DefaultJSONProvider.response` (a trailing newline,
        indented when ``compact`` is False or, by default, in debug mode)."""
        return self._app.response_class(
            self.response_body(self._prepare_response_obj(args, kwargs)), mimetype=self.mimetype
        )

    def response_body(self, obj: Any) -> bytes:
        """The body :meth:`response` sends for ``obj`` (and the feed's shortcut, ``app.feed_shortcut``, sends)."""
        options = _BASE_OPTIONS | orjson.OPT_APPEND_NEWLINE
        if self.sort_keys:
            options |= orjson.OPT_SORT_KEYS
        if (self.compact is None and self._app.debug) or self.compact is False:
            options |= orjson.OPT_INDENT_2
        try:
            return orjson.dumps(obj, default=self.default, option=options)
        except orjson.JSONEncodeError:
            # A dict key that is not a str (an int, a str subclass) needs OPT_NON_STR_KEYS, which makes orjson
            # check every key and doubles the cost of a feed page's encoding: it is asked for only then (a value
            # nothing can encode fails again).
            return orjson.dumps(obj, default=self.default, option=options | orjson.OPT_NON_STR_KEYS)
