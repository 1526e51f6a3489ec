"""``GET /recommendations/<user_id>``: a page of a user's feed."""

from __future__ import annotations

from flask.views import MethodView

from app.api import Blueprint, abort
from app.feed import NoModel
from app.runtime import get_runtime
from app.schemas import RecommendationsQuerySchema, RecommendationsSchema, UserPathSchema

blp = Blueprint("recommendations", __name__, url_prefix="/recommendations", description="Personalised feeds")


@blp.route("/<user_id>")
class Recommendations(MethodView):
    @blp.arguments(UserPathSchema, location="path")
    @blp.arguments(RecommendationsQuerySchema, location="query")
    @blp.response(200, RecommendationsSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self, path_args, query, user_id):
        """A page of the user's feed

        Unknown users get the popularity feed (`strategy: popular`). Pass `model_version` back as `version`
        to keep paging on the same ranking while a new model is published.
        """
        try:
            return get_runtime().feed.page(path_args["user_id"], query["limit"], query["offset"], query["version"])
        except NoModel:
            abort(503, "no model is available yet: train one first", code="model_unavailable")
