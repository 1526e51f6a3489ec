"""``GET /recommendations/<user_id>``: a page of a user's feed."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView
from marshmallow import ValidationError
from werkzeug.routing import PathConverter

from app.api import REQUEST_LINE_TOO_LONG, Blueprint, abort, invalid_arguments_message
from app.feed import FeedRequest, FeedService, NoModel, Pin
from app.runtime import get_runtime
from app.schemas import RecommendationsQuerySchema, RecommendationsSchema, check_user_id
from ml.ids import MAX_ID_LENGTH, USER_ID_PATTERN

blp = Blueprint("recommendations", __name__, url_prefix="/recommendations", description="Personalised feeds")


_USER_ID_DOC = {
    "in": "path",
    "name": "user_id",
    "required": True,
    "description": "The user's id: 1-128 characters, without '/', control characters, separators or bidi controls",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": USER_ID_PATTERN},
}


class RestOfPathConverter(PathConverter):
    """Werkzeug's ``path`` converter, newlines included: the rest of the path, whatever it holds.

    WSGI servers decode %2F, so ``user%2F0001`` arrives as ``user/0001``; taking the whole rest lets the view
    answer it (and an id with a control character) with the 400 naming ``user_id`` that DESIGN section 7
    promises, rather than routing answering 404. Registered as ``rest`` by ``create_app``.
    """

    regex = "[^/](?s:.*?)"


@blp.route("/<rest:user_id>", parameters=[_USER_ID_DOC])
class Recommendations(MethodView):
    # A schema instance, not the class: webargs would otherwise build a schema object on every request.
    @blp.arguments(RecommendationsQuerySchema(), location="query")
    @blp.response(200, RecommendationsSchema)
    @blp.error_response(414, REQUEST_LINE_TOO_LONG)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self, query, user_id):
        """A page of the user's feed

        Users the model does not know yet get a feed from their role and follows (`strategy: features`),
        or the popularity feed (`strategy: popular`). Pass the page's `token` back as `token` to keep paging
        on the same scroll, whatever is trained, refreshed or reported meanwhile.

        `community` and `tag` restrict the feed to those communities and tags, ranked the same way over
        every matching post (fresh ones included); the token pins a filtered scroll too.
        """
        # The path is checked here rather than by a second webargs pass: this is the hot path.
        try:
            check_user_id(user_id)
        except ValidationError as exc:
            details = _path_error(exc)
            abort(400, invalid_arguments_message(details["fields"]), code="invalid_arguments", details=details)
        try:
            page = feed_page(get_runtime().feed, user_id, query)
        except NoModel:
            abort(503, "no model is available yet: train one first", code="model_unavailable")
        # The page is built in exactly the documented shape (a test loads every answer with the schema), so
        # it is sent as is: dumping it through marshmallow again would double the cost of this hot path. Most
        # pages do not even reach this view: app.feed_shortcut answers the plain ones before Flask does.
        return jsonify(page)


def feed_page(feed: FeedService, user_id: str, query: dict) -> dict:
    """The answer of a feed page (also sent by ``app.feed_shortcut``). Raises NoModel.

    ``token`` pins the whole scroll, ``version`` (earlier clients) only the model.
    """
    token, version = query["token"], query["version"]
    pin = Pin.parse(token) if token is not None else Pin(version=version)
    return feed.page(
        FeedRequest(user_id, query["limit"], query["offset"], pin, query["exclude"], query["community"], query["tag"])
    )


def _path_error(exc: ValidationError) -> dict:
    """Details of an invalid user id, shaped like webargs' errors for query arguments."""
    return {"fields": {"path": {"user_id": exc.messages}}}
