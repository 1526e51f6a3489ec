"""``GET /posts/<post_id>/similar``: a page of the posts most similar to one post (see :mod:`app.feed.similar`)."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView

from app.api import REQUEST_LINE_TOO_LONG, Blueprint, abort
from app.feed import FeedRequest, FeedService, NoModel, Pin
from app.feed.pin import UNPINNED
from app.feed.similar import ANONYMOUS, UnknownPost
from app.runtime import get_runtime
from app.schemas import MAX_ID_LENGTH, SimilarPostsSchema, SimilarQuerySchema

blp = Blueprint("similar", __name__, url_prefix="/posts", description="Posts similar to a post")

_POST_ID_DOC = {
    "in": "path",
    "name": "post_id",
    "required": True,
    "description": "The post's id (1-128 characters, without '/'): a post of the model or a fresh one",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
}


# What a similar-posts page takes from the feed's page (the feed's own fields, e.g. its user, stay out).
_PAGE_KEYS = ("model_version", "token", "strategy", "source", "version_fallback", "recommendations", "pagination")


@blp.route("/<post_id>/similar", parameters=[_POST_ID_DOC])
class SimilarPosts(MethodView):
    @blp.arguments(SimilarQuerySchema(), location="query")
    @blp.response(200, SimilarPostsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.error_response(414, REQUEST_LINE_TOO_LONG)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self, query, post_id):
        """A page of the posts most similar to this one

        By the cosine of the posts' representations in the model (`strategy: similar`); a post written after
        the model is placed by its tags and community. A post the model cannot place gets the popular posts
        of its community (`strategy: community_popular`). The post itself never appears. With `user_id`, the
        best neighbours are re-ordered for that user and the posts it interacted with are left out. Pass the
        page's `token` back as `token` to keep paging on the same list.
        """
        if len(post_id) > MAX_ID_LENGTH:
            abort(404, f"no post {post_id[:MAX_ID_LENGTH]!r}...", code="post_not_found")
        try:
            page = similar_page(get_runtime().feed, post_id, query)
        except NoModel:
            abort(503, "no model is available yet: train one first", code="model_unavailable")
        except UnknownPost:
            abort(404, f"no post {post_id!r} in the model or among the fresh posts", code="post_not_found")
        return jsonify(page)


def similar_page(feed: FeedService, post_id: str, query: dict) -> dict:
    """The answer of a similar-posts page (also sent by ``app.feed_shortcut``). Raises NoModel, UnknownPost."""
    user_id = query["user_id"]
    pin = Pin.parse(query["token"]) if query["token"] is not None else UNPINNED
    page = feed.similar(FeedRequest(user_id or ANONYMOUS, query["limit"], query["offset"], pin, similar_to=post_id))
    return {"post_id": post_id, "user_id": user_id, **{key: page[key] for key in _PAGE_KEYS}}
