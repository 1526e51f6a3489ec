"""The rules for ids, shared by the dataset checks (``ml.validate``), the training run and the HTTP API.

Ids are opaque strings of at most :data:`MAX_ID_LENGTH` characters (DESIGN section 3). A user id must also
fit the path of ``GET /recommendations/<user_id>``: :data:`USER_ID_PATTERN` refuses ``/`` (it separates
path segments, even sent as ``%2F``), ``.`` and ``..`` (dot segments, which clients resolve away), C0 and C1
control characters, line and paragraph separators and
bidirectional controls, so that an id can be logged and stored safely and reads as what it is. It is one
regular expression, valid both in Python and in the OpenAPI document (ECMA-262), so that the document
states exactly the rule the service applies.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128

_USER_ID_REFUSED = r"/\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
# Nor "." or "..": URL parsers resolve such a path segment away (WHATWG's resolve %2E too), so no client could ask.
USER_ID_PATTERN = rf"^(?!\.\.?$)[^{_USER_ID_REFUSED}]{{1,{MAX_ID_LENGTH}}}$"
_USER_ID = re.compile(USER_ID_PATTERN)


def is_requestable_user_id(value: str) -> bool:
    """Whether ``value`` can be asked for in ``GET /recommendations/<user_id>``."""
    return _USER_ID.fullmatch(value) is not None  # fullmatch: "$" alone would let a trailing newline through
