"""``POST /events``: the backend reports views, likes, comments and impressions; feeds reflect them at once.

Requires ``Authorization: Bearer $EVENTS_TOKEN`` (``ADMIN_TOKEN`` when no events token is set); without
either the endpoint is disabled (403 ``events_disabled``). A batch holds 1 to 1,000 events and is recorded
all together in one Redis script (``RecsCache.record_events``), or, if any event is bad, not at all: a 400
naming each bad entry by its path (``events[3].type``). The body is bounded (1 MiB) and the rate per client
address too (``EVENTS_RATE_LIMIT``). Sending a batch again is harmless: a post already recorded keeps its
first arrival. Events are serving signals, bounded per user (``EVENTS_MAX_PER_USER``, ``EVENTS_TTL_SECONDS``);
PostgreSQL stays the source of truth for training.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from flask import current_app, request
from flask.views import MethodView
from werkzeug.exceptions import RequestEntityTooLarge

from app.api import Blueprint, abort
from app.auth import is_preflight, require_bearer
from app.cache_guard import CacheUnavailable
from app.runtime import get_runtime
from app.schemas import EventBatchSchema, EventsRecordedSchema

blp = Blueprint("events", __name__, description="Events that shape the live feed (events token)")

# 1,000 events of two 128-character ids each take about 350 KB of JSON; a body over 1 MiB is not a batch.
MAX_BODY_BYTES = 1024 * 1024


@blp.before_request
def _bound_and_authorise() -> None:
    if is_preflight():
        return
    current_app.extensions["recsvc-events-limit"].check()  # first: wrong tokens count too
    settings = get_runtime().settings
    token = settings.events_token or settings.admin_token
    if token is None:
        abort(403, "POST /events is disabled: set EVENTS_TOKEN (or ADMIN_TOKEN) to enable it", code="events_disabled")
    require_bearer(token, "recsvc events", "missing or wrong events token (Authorization: Bearer <EVENTS_TOKEN>)")
    if not request.is_json:  # else the parser reads no batch and calls every field missing
        abort(415, "send the batch as JSON, with Content-Type: application/json", code="unsupported_media_type")
    _read_bounded_body()


def _read_bounded_body() -> None:
    """Read the body (kept for the view's parser), or refuse it with a 413 past ``MAX_BODY_BYTES``.

    Werkzeug refuses a declared length past the request's bound before reading, but stops a body without one
    (chunked) at the bound without a word, and a batch cut there (trailing spaces) would pass for a whole one.
    So its bound is a byte past ours, and what it read is measured.
    """
    request.max_content_length = MAX_BODY_BYTES + 1
    if len(request.get_data(cache=True)) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()


@blp.route("/events")
class Events(MethodView):
    @blp.doc(security=[{"eventsToken": []}])
    @blp.arguments(EventBatchSchema(), location="json")
    @blp.response(200, EventsRecordedSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.error_response(413, "The body is larger than 1 MiB")
    @blp.error_response(415, "The body is not sent as application/json")
    @blp.error_response(429, "Over EVENTS_RATE_LIMIT")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch):
        """Report what users did with posts

        `view`, `like` and `comment` remove the post from the user's next feeds, `impression` demotes or
        hides it (IMPRESSIONS), within a second. The whole batch is recorded, or none of it.
        """
        runtime = get_runtime()
        settings = runtime.settings
        events = [(event["user_id"], event["post_id"], event["type"]) for event in batch["events"]]
        record = partial(
            runtime.cache.record_events, events, cap=settings.events_max_per_user, ttl=settings.events_ttl_seconds
        )
        try:
            arrival = runtime.guard.call(record)
        except CacheUnavailable:
            abort(503, "Redis is unavailable: nothing was recorded; send the batch again", code="cache_unavailable")
        # The other workers hear of it on the events channel; this one, which the client's next page on the same
        # connection reaches, must not wait for its reloader thread to.
        runtime.feed.mirror.forget_users({user_id for user_id, _, _ in events})
        arrived_at = datetime.fromtimestamp(arrival / 1e6, UTC).isoformat(timespec="microseconds")
        return {"recorded": len(events), "arrived_at": arrived_at}
