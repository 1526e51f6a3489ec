"""Bearer tokens of the state-changing endpoints, compared in constant time."""

from __future__ import annotations

import hmac

from flask import request

from app.api import abort


def require_bearer(token: str, realm: str, message: str) -> None:
    """Answer 401 (with a ``WWW-Authenticate`` challenge for ``realm``) unless the request carries ``token``."""
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes as long for a wrong token as for a right one, so timing reveals nothing.
    if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), token.encode()):
        abort(401, message, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})


def is_preflight() -> bool:
    """Whether the request is a browser's CORS preflight (``OPTIONS``): it never carries credentials and changes
    nothing, so a token endpoint answers it like any other (flask-cors adds its headers), or no browser could call
    it at all."""
    return request.method == "OPTIONS"
