"""Schemathesis hooks of the fuzz test (loaded through ``SCHEMATHESIS_HOOKS``).

OpenAPI 3.0 cannot say that two query parameters must agree, so the fuzzer would draw a ``token`` and a
``version`` naming different model versions, which the API rightly refuses (DESIGN section 7). Such
queries are skipped; a ``token`` and a ``version`` that agree are still drawn and must be accepted.
"""

import schemathesis

from app.feed.pin import TOKEN_PATTERN


@schemathesis.hook
def filter_query(ctx, query):
    if not query or query.get("token") is None or query.get("version") is None:
        return True
    pinned = TOKEN_PATTERN.fullmatch(str(query["token"]))
    return pinned is None or pinned.group(1) == query["version"]
