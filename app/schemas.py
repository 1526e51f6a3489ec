"""Marshmallow schemas of every query, path argument and response of the HTTP API (DESIGN section 7).

They validate what comes in (a bad value is a 400 error naming the field) and describe what goes out in
the OpenAPI document served at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, ClassVar

from apispec import BasePlugin
from flask import current_app
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from app.feed.pin import TOKEN_PATTERN
from common.config import Settings
from common.recs_cache import EVENT_TYPES
from ml import artifact
from ml.ids import MAX_ID_LENGTH, USER_ID_PATTERN, is_requestable_user_id
from ml.model_config import FAMILIES

MAX_OFFSET = 2**31 - 1
MAX_EXCLUDE = 200  # post ids in one request's ``exclude``
MAX_FILTER_VALUES = 20  # communities in one ``community=``, tags in one ``tag=``


def _id_list(text: str, most: int, noun: str) -> frozenset[str]:
    """Comma-separated ids: 1 to ``most`` values of 1 to MAX_ID_LENGTH characters each (``id_list_pattern``)."""
    values = text.split(",")
    if len(values) > most:
        raise ValidationError(f"must list at most {most} {noun}s, got {len(values)}")
    for position, value in enumerate(values):
        if not 1 <= len(value) <= MAX_ID_LENGTH:
            raise ValidationError(f"{noun} {position} must be 1 to {MAX_ID_LENGTH} characters long")
    return frozenset(values)


def id_list_pattern(most: int) -> str:
    """The rule of :func:`_id_list` as the regular expression the OpenAPI document publishes."""
    value = f"[^,]{{1,{MAX_ID_LENGTH}}}"
    return f"^{value}(,{value}){{0,{most - 1}}}$"


def parse_exclude(text: str) -> frozenset[str]:
    """The post ids of ``exclude``: comma-separated, 1 to MAX_EXCLUDE of 1 to 128 characters each."""
    return _id_list(text, MAX_EXCLUDE, "post id")


def parse_filter(text: str) -> frozenset[str]:
    """The values of ``community`` or ``tag``: comma-separated, 1 to MAX_FILTER_VALUES of 1 to 128 characters each."""
    return _id_list(text, MAX_FILTER_VALUES, "value")


def _filter_field(what: str) -> fields.String:
    return fields.String(
        load_default=None,
        metadata={
            "description": f"Only posts {what}: comma-separated, any of them (up to {MAX_FILTER_VALUES} values of 1 "
            f"to {MAX_ID_LENGTH} characters). With both `community` and `tag`, a post must pass both. An "
            "unknown value matches nothing (an empty feed)",
            "maxLength": MAX_FILTER_VALUES * (MAX_ID_LENGTH + 1) - 1,
            "pattern": id_list_pattern(MAX_FILTER_VALUES),
        },
    )


def check_user_id(value: str) -> None:
    """User ids are 1 to 128 characters, not ``.`` or ``..``, without ``/``, control characters, separators or bidi
    controls.

    The rule is ``ml.ids.USER_ID_PATTERN``, which the OpenAPI document publishes as the path
    parameter's ``pattern``.
    """
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValidationError(f"must be 1 to {MAX_ID_LENGTH} characters long")
    if not is_requestable_user_id(value):
        raise ValidationError(
            "must not be . or .., nor contain '/', control characters, line separators or bidi controls"
        )


# --- errors ---


class ErrorSchema(Schema):
    code = fields.String(required=True, metadata={"description": "Machine-readable error code", "example": "not_found"})
    message = fields.String(required=True, metadata={"description": "What went wrong, for humans"})
    details = fields.Dict(required=True, metadata={"description": "Structured details, e.g. invalid fields"})


class ErrorResponseSchema(Schema):
    """The one shape of every error response."""

    error = fields.Nested(ErrorSchema, required=True)


class _FullMatch(validate.Regexp):
    """``validate.Regexp`` on the whole value ("$" alone lets a final newline through); documented the same."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class _Bounds(validate.Range):
    """``validate.Range`` worded like the service's other messages, naming only the bound the value crossed."""

    message_min = "must be {{min}} or more"
    message_max = "must be at most {{max}}"

    def __call__(self, value):
        if self.min is not None and value < self.min:
            raise ValidationError(self._format_error(value, self.message_min))
        if self.max is not None and value > self.max:
            raise ValidationError(self._format_error(value, self.message_max))
        return value


WHOLE_NUMBER = {"invalid": "must be a whole number"}

# The rules of the query arguments, each stated once: the schemas' fields validate with them, and so does
# the shortcut of :meth:`QueryArgumentsSchema.plain_load`.
OFFSET_RANGE = _Bounds(min=0, max=MAX_OFFSET)
VERSION_RULE = _FullMatch(artifact.VERSION_PATTERN, error="must be a model version id like 20261126T101500Z-1a2b3c4d")
TOKEN_RULE = _FullMatch(TOKEN_PATTERN, error="must be the token of an earlier page")


def check_limit(value: int, settings: Any) -> int:
    """A page size is 1 to ``MAX_PAGE_LIMIT``."""
    if not 1 <= value <= settings.max_page_limit:
        raise ValidationError(f"must be between 1 and {settings.max_page_limit}")
    return value


def check_one_pin(data: Mapping[str, Any]) -> None:
    """A page pins its scroll with ``token`` or with ``version``; both only if they name the same model version.

    A client that passes back a page's ``model_version`` and ``token`` together asks for one pin; two
    different versions are two pins, which no page can honour.
    """
    token, version = data.get("token"), data.get("version")
    pinned = TOKEN_PATTERN.fullmatch(token) if token is not None else None
    if version is not None and pinned is not None and pinned.group(1) != version:
        raise ValidationError("token and version name different model versions: pass one of them", field_name="token")


def _plain_whole_number(text: str) -> int:
    """A whole number written plainly (at most ten ASCII digits); anything else is left to the full load."""
    if len(text) <= 10 and text.isascii() and text.isdigit():
        return int(text)
    raise ValidationError("not a plain whole number")


def _checked_user_id(text: str) -> str:
    check_user_id(text)
    return text


# The shortcut's reading of each query argument, by the rules above: the value :meth:`Schema.load` gives it,
# or ValidationError where the full load must decide (and word the error).
PLAIN_READERS: dict[str, Callable[[str, Any], Any]] = {
    "limit": lambda text, settings: check_limit(_plain_whole_number(text), settings),
    "offset": lambda text, settings: OFFSET_RANGE(_plain_whole_number(text)),
    "version": lambda text, settings: VERSION_RULE(text),
    "token": lambda text, settings: TOKEN_RULE(text),
    "exclude": lambda text, settings: parse_exclude(text),
    "community": lambda text, settings: parse_filter(text),
    "tag": lambda text, settings: parse_filter(text),
    "user_id": lambda text, settings: _checked_user_id(text),
}


class QueryArgumentsSchema(Schema):
    """Base of the query schemas: an argument the endpoint does not take is a 400 naming it.

    A misspelt argument (``limt=5``) that was ignored would get the client another page than it asked for.
    ``app.api.ArgumentsParser`` leaves unknown arguments to the schema, and this one refuses them.
    """

    #: What each absent argument loads as, but ``limit`` (``DEFAULT_PAGE_LIMIT``, set by the schema's post_load);
    #: None: no :meth:`plain_load` shortcut.
    absent: ClassVar[dict[str, Any] | None] = None

    class Meta:
        unknown = RAISE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The argument names this schema takes (the ``plain_load`` shortcut refuses any other).
        self.argument_names = frozenset(field.data_key or name for name, field in self.load_fields.items())
        taken = ", ".join(sorted(self.argument_names))
        self.error_messages = {**self.error_messages, "unknown": f"unknown argument; this endpoint takes {taken}"}

    def check_together(self, data: Mapping[str, Any]) -> None:
        """Rules over several arguments (raise ValidationError); none by default."""

    def plain_load(self, args: Mapping[str, str], settings: Settings | None = None) -> dict[str, Any] | None:
        """What :meth:`load` returns for the query ``args`` when every argument is plainly valid, else None.

        The hot path's shortcut (``app.api.ArgumentsParser`` asks it first; webargs and marshmallow cost
        several times more). It reads each argument with :data:`PLAIN_READERS`, by the same rules as the
        fields, and only what the schema surely reads the same way: ASCII digits within the ranges, strings.
        Anything else (signs, spaces, other digits, out of range, malformed) returns None, and the full load
        decides and words the error. An argument the schema does not take also returns None (the load
        refuses it); the first of a repeated argument counts, as webargs does for the query string. A test
        checks that both agree. ``settings`` (the page limits) default to the current app's.
        """
        if self.absent is None or not self.argument_names.issuperset(args.keys()):
            return None
        settings = settings or current_app.config["SETTINGS"]
        loaded = {**self.absent, "limit": settings.default_page_limit}
        try:
            for name, text in args.items():
                loaded[name] = PLAIN_READERS[name](text, settings)
            self.check_together(loaded)
        except ValidationError:
            return None
        return loaded


# --- recommendations ---


class RecommendationsQuerySchema(QueryArgumentsSchema):
    limit = fields.Integer(
        load_default=None,
        error_messages=WHOLE_NUMBER,
        metadata={"description": "Page size, 1..MAX_PAGE_LIMIT (default DEFAULT_PAGE_LIMIT: 20, max 100)"},
    )
    offset = fields.Integer(
        load_default=0,
        validate=OFFSET_RANGE,
        error_messages=WHOLE_NUMBER,
        metadata={"description": "Position of the page's first item; past the end gives an empty page"},
    )
    version = fields.String(
        load_default=None,
        validate=VERSION_RULE,
        metadata={
            "description": "Keep paging on this model version (the model_version of the first page); "
            "`token` pins more and is preferred"
        },
    )
    token = fields.String(
        load_default=None,
        validate=TOKEN_RULE,
        metadata={
            "description": "Keep paging on the scroll of an earlier page: pass back its `token` (opaque). The "
            "scroll then never repeats or skips a post, whatever is trained, refreshed or reported meanwhile"
        },
    )
    exclude = fields.String(
        load_default=None,
        metadata={
            "description": f"Posts the client already shows, comma-separated (up to {MAX_EXCLUDE} ids of 1 to "
            f"{MAX_ID_LENGTH} characters): they are skipped, their positions kept, so `next_offset` stays exact",
            "maxLength": MAX_EXCLUDE * (MAX_ID_LENGTH + 1) - 1,
            "pattern": id_list_pattern(MAX_EXCLUDE),
        },
    )
    community = _filter_field("of these communities (ids)")
    tag = _filter_field("carrying one of these tags")

    @validates("exclude")
    def _check_exclude(self, value: str | None, data_key: str) -> None:
        if value is not None:
            parse_exclude(value)

    @validates("community", "tag")
    def _check_filter(self, value: str | None, data_key: str) -> None:
        if value is not None:
            parse_filter(value)

    absent: ClassVar[dict[str, Any]] = {
        "offset": 0,
        "version": None,
        "token": None,
        "exclude": frozenset(),
        "community": frozenset(),
        "tag": frozenset(),
    }

    @validates_schema
    def _one_pin(self, data: dict, **kwargs) -> None:
        check_one_pin(data)

    def check_together(self, data: Mapping[str, Any]) -> None:
        check_one_pin(data)

    @validates("limit")
    def _check_limit(self, value: int | None, data_key: str) -> None:
        if value is not None:
            check_limit(value, current_app.config["SETTINGS"])

    @post_load
    def _default_limit(self, data: dict, **kwargs) -> dict:
        if data.get("limit") is None:
            data["limit"] = current_app.config["SETTINGS"].default_page_limit
        data["exclude"] = parse_exclude(data["exclude"]) if data.get("exclude") is not None else frozenset()
        for name in ("community", "tag"):
            data[name] = parse_filter(data[name]) if data.get(name) is not None else frozenset()
        return data


class PageLimitsPlugin(BasePlugin):
    """Documents ``limit``'s bounds in the OpenAPI document: 1..MAX_PAGE_LIMIT, default DEFAULT_PAGE_LIMIT.

    They are settings of the deployment, so the query schema (one instance for every app) validates them
    at request time and cannot state them; without them the document would call ``limit=0`` valid, and
    clients generated from it (or a fuzzer) would send pages the service refuses.
    """

    def __init__(self, max_page_limit: int, default_page_limit: int):
        self._bounds = {"minimum": 1, "maximum": max_page_limit, "default": default_page_limit}

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                if isinstance(parameter, dict) and (parameter.get("in"), parameter.get("name")) == ("query", "limit"):
                    parameter["schema"].pop("nullable", None)
                    parameter["schema"].update(self._bounds)


class PostMetadataSchema(Schema):
    tags = fields.List(fields.String(), required=True)
    communityId = fields.String(required=True)  # noqa: N815 - the JSON name the NestJS backend reads


# DESIGN section 7 says the same. No single scale was given to both: a LightFM (WARP) score is not a log-odds,
# so a sigmoid would invent a probability, and rescaling within a list only restates `rank`.
SCORE_DESCRIPTION = (
    "Why the post is where it is, on a scale that depends on `strategy`. `personalized` and `features`:"
    " LightFM's raw prediction for this user and post (the dot product of their embeddings plus both biases;"
    " for `features` the user's come from its role and follows): any real number, such as 3.9 or -44.3, on a"
    " scale set by the trained model. A `fresh` post the model scores from its tags and community is put on"
    " that scale; one it cannot score has 0 and comes after the ranked posts, newest first. `popular`: the"
    " number of distinct users who interacted with the post in the training data, such as 114.0 (0 for a"
    " `fresh` post). Order by `rank`, not by score: a post the user was already shown moves down and keeps"
    " its score. Scores are not comparable across users, strategies or model versions; they are not"
    " probabilities and have no bounds, so do not threshold them or show them as a percentage."
)


class RecommendationSchema(Schema):
    post_id = fields.String(required=True)
    score = fields.Float(required=True, metadata={"description": SCORE_DESCRIPTION})
    rank = fields.Integer(required=True, metadata={"description": "1-based position in the whole feed"})
    fresh = fields.Boolean(
        required=True,
        metadata={"description": "true for a post written after the model's data were read (scored from its features)"},
    )
    metadata = fields.Nested(PostMetadataSchema, required=True)


class PaginationSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "Number of items in the whole feed"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    has_more = fields.Boolean(required=True)
    next_offset = fields.Integer(required=True, allow_none=True, metadata={"description": "null on the last page"})


class RecommendationsSchema(Schema):
    user_id = fields.String(required=True)
    model_version = fields.String(required=True, metadata={"description": "The model version the page comes from"})
    model_family = fields.String(
        required=True,
        validate=validate.OneOf(list(FAMILIES)),
        metadata={
            "description": "The model family of that version, chosen by the model search: `lightfm` (the default), "
            "`als` or `blend` (both per-user standardised); with `strategy` `popular` the page is ranked by "
            "popularity whatever the family"
        },
    )
    token = fields.String(
        required=True,
        metadata={
            "description": "Pass back as `token` to keep paging on this scroll (model version, live state, exclusions)"
        },
    )
    strategy = fields.String(
        required=True,
        validate=validate.OneOf(["personalized", "features", "popular"]),
        metadata={
            "description": "`features` for a user the model does not know yet but who has a role or follows; "
            "`popular` for a user with neither"
        },
    )
    source = fields.String(
        required=True,
        validate=validate.OneOf(["cache", "model"]),
        metadata={"description": "`cache`: the precomputed list; `model`: computed by the web worker (no list)"},
    )
    version_fallback = fields.Boolean(
        required=True,
        metadata={"description": "true when the requested `version` is no longer available and the current one served"},
    )
    recommendations = fields.List(fields.Nested(RecommendationSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)
    experiment = fields.String(
        required=True, allow_none=True, metadata={"description": "The running experiment (EXPERIMENT), or null"}
    )
    variant = fields.String(
        required=True, allow_none=True, metadata={"description": "The user's variant in it (sticky), or null"}
    )
    variant_fallback = fields.Boolean(
        required=True,
        metadata={"description": "true when the variant's own model is not served and the production model answered"},
    )


# --- similar posts ---


class SimilarQuerySchema(QueryArgumentsSchema):
    limit = RecommendationsQuerySchema._declared_fields["limit"]
    offset = RecommendationsQuerySchema._declared_fields["offset"]
    token = RecommendationsQuerySchema._declared_fields["token"]
    user_id = fields.String(
        load_default=None,
        metadata={
            "description": "Re-rank the neighbours for this user and leave out the posts it interacted with "
            "(1-128 characters, as the user ids of `/recommendations/<user_id>`)",
            "maxLength": MAX_ID_LENGTH,
            "pattern": USER_ID_PATTERN,
        },
    )

    absent: ClassVar[dict[str, Any]] = {"offset": 0, "token": None, "user_id": None}

    @validates("user_id")
    def _check_user_id(self, value: str | None, data_key: str) -> None:
        if value is not None:
            check_user_id(value)

    @post_load
    def _default_limit(self, data: dict, **kwargs) -> dict:
        if data.get("limit") is None:
            data["limit"] = current_app.config["SETTINGS"].default_page_limit
        return data

    _check_limit = RecommendationsQuerySchema._check_limit


SIMILAR_SCORE_DESCRIPTION = (
    "`similar`: the cosine of the two posts' representations in the model (-1 to 1; 1 is the same direction)."
    " `community_popular`: the number of distinct users who interacted with the post in the training data"
    " (0 for a `fresh` post). Order by `rank`, not by score: with `user_id` the best neighbours are re-ordered"
    " for the user and keep their cosine."
)


class SimilarPostSchema(RecommendationSchema):
    score = fields.Float(required=True, metadata={"description": SIMILAR_SCORE_DESCRIPTION})


class SimilarPostsSchema(Schema):
    post_id = fields.String(required=True, metadata={"description": "The post whose neighbours these are"})
    user_id = fields.String(
        required=True, allow_none=True, metadata={"description": "The user they were re-ranked for, or null"}
    )
    model_version = fields.String(required=True)
    token = fields.String(
        required=True, metadata={"description": "Pass back as `token` to keep paging on this list (opaque)"}
    )
    strategy = fields.String(
        required=True,
        validate=validate.OneOf(["similar", "community_popular"]),
        metadata={
            "description": "`similar`: by cosine with the post; `community_popular`: the model cannot place the "
            "post (a fresh post none of whose tags or community it knows), so the popular posts of its community"
        },
    )
    source = fields.String(required=True, validate=validate.OneOf(["model"]))
    version_fallback = fields.Boolean(
        required=True, metadata={"description": "true when the token's scroll could not be kept and a fresh one began"}
    )
    recommendations = fields.List(fields.Nested(SimilarPostSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


# --- events ---

MAX_EVENTS = 1000  # events in one POST /events batch


class EventSchema(Schema):
    """One event the backend reports: a user viewed, liked, commented on or was shown a post."""

    class Meta:
        unknown = RAISE

    user_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_ID_LENGTH),
        metadata={"description": "The user's id (as in `GET /recommendations/<user_id>`)", "pattern": USER_ID_PATTERN},
    )
    post_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID_LENGTH))
    type = fields.String(
        required=True,
        validate=validate.OneOf(EVENT_TYPES),
        metadata={
            "description": "`view`, `like`, `comment`: the post leaves the user's next feeds; `impression`: the post "
            "was shown, and is demoted or hidden as configured (IMPRESSIONS)"
        },
    )
    created_at = fields.AwareDateTime(
        required=True,
        default_timezone=UTC,
        metadata={"description": "When it happened (ISO 8601). Serving orders exclusions by arrival instead"},
    )

    @validates("user_id")
    def _check_user_id(self, value: str, data_key: str) -> None:
        check_user_id(value)


class EventBatchSchema(Schema):
    class Meta:
        unknown = RAISE

    events = fields.List(
        fields.Nested(EventSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_EVENTS, error=f"must hold 1 to {MAX_EVENTS} events"),
        metadata={"description": f"1 to {MAX_EVENTS} events, recorded all together or (if any is bad) not at all"},
    )

    def handle_error(self, error: ValidationError, data: Any, **kwargs) -> None:
        """Name each bad entry by its path (``events[3].type``), so the 400's message says which it is."""
        raise ValidationError(_paths(error.messages)) from error


def _paths(messages: Any, prefix: str = "") -> dict[str, Any]:
    """Nested marshmallow messages flattened to ``{"events[3].type": [...]}``."""
    if not isinstance(messages, dict):
        return {prefix: messages}
    flat: dict[str, Any] = {}
    for key, value in messages.items():
        path = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else str(key)
        flat.update(_paths(value, path))
    return flat


class EventsRecordedSchema(Schema):
    recorded = fields.Integer(required=True, metadata={"description": "How many events were recorded"})
    arrived_at = fields.String(
        required=True, metadata={"description": "When they arrived (Redis time, ISO 8601 with microseconds)"}
    )


# --- health, root, admin ---


class DependencySchema(Schema):
    ok = fields.Boolean(required=True)
    required = fields.Boolean(required=True, metadata={"description": "Whether serving depends on it"})
    latency_ms = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)


class ModelCheckSchema(Schema):
    ok = fields.Boolean(required=True)
    required = fields.Boolean(required=True)
    version = fields.String(allow_none=True)
    age_seconds = fields.Float(allow_none=True, metadata={"description": "Seconds since the model was trained"})
    error = fields.String(allow_none=True)


class HealthChecksSchema(Schema):
    model = fields.Nested(ModelCheckSchema, required=True)
    redis = fields.Nested(DependencySchema, required=True)
    postgres = fields.Nested(DependencySchema, required=True, metadata={"description": "Information only"})


class HealthSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf(["ok", "degraded", "unavailable"]),
        metadata={"description": "`degraded`: serving from the model without Redis; `unavailable`: no model"},
    )
    checks = fields.Nested(HealthChecksSchema, required=True)


class RootSchema(Schema):
    service = fields.String(required=True)
    version = fields.String(required=True)
    model_version = fields.String(allow_none=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ReloadDetailsSchema(Schema):
    reloaded = fields.Boolean(required=True)
    reason = fields.String(required=True)
    previous_version = fields.String(allow_none=True)
    current_version = fields.String(allow_none=True)
    previous_reload_time = fields.String(allow_none=True, metadata={"description": "ISO 8601"})
    current_reload_time = fields.String(allow_none=True, metadata={"description": "ISO 8601"})
    num_users = fields.Integer(allow_none=True)
    num_items = fields.Integer(allow_none=True)


class ReloadSchema(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    details = fields.Nested(ReloadDetailsSchema, required=True)


class ModelStatusSchema(Schema):
    worker_pid = fields.Integer(required=True, metadata={"description": "The web worker that answered"})
    version = fields.String(allow_none=True)
    created_at = fields.String(allow_none=True)
    loaded_at = fields.String(allow_none=True)
    age_seconds = fields.Float(allow_none=True)
    num_users = fields.Integer(allow_none=True)
    num_items = fields.Integer(allow_none=True)
    metrics = fields.Dict(allow_none=True, metadata={"description": "Offline evaluation of this model"})
    cache_version = fields.String(allow_none=True, metadata={"description": "The current version in Redis"})
    last_load_error = fields.Dict(allow_none=True, metadata={"description": "The last failed load, if any"})
    last_training_outcome = fields.Dict(allow_none=True)
    model_family = fields.String(allow_none=True, metadata={"description": "`lightfm`, `als` or `blend`"})
    search = fields.Dict(
        allow_none=True,
        metadata={
            "description": "The last model search (tasks.search, MODEL_DIR/search.json) without its trials: "
            "`searched_at`, `seconds`, `budget`, `pinned`, `trials` (counts by state), `adopted`, `reason`, "
            "`chosen`, `best_family`, `best_holdout`, `current_holdout`, `families`; null before the first"
        },
    )
    online = fields.Dict(
        allow_none=True,
        metadata={
            "description": "Online click-through of the production model (tasks.online_report): `daily` "
            "[{day, impressions, clicks, ctr}], `ctr_today`, `ctr_trailing_week`, `drop_fraction`, `alert`; "
            "null until the first report"
        },
    )


class VariantSpecSchema(Schema):
    name = fields.String(required=True)
    share = fields.Float(required=True)
    ranking = fields.String(required=True, validate=validate.OneOf(["production", "popular", "model"]))
    training = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ExperimentSpecSchema(Schema):
    name = fields.String(required=True)
    control = fields.String(required=True)
    variants = fields.List(fields.Nested(VariantSpecSchema), required=True)


class ExperimentsSchema(Schema):
    configured = fields.Nested(
        ExperimentSpecSchema, allow_none=True, metadata={"description": "The running experiment, or null"}
    )
    report = fields.Dict(
        allow_none=True,
        metadata={
            "description": "The last report's experiment (tasks.online_report): `name`, `control` and `days` "
            "(newest first) of {day, variants: [{variant, impressions, users, clicks, ctr, vs_control}]}; "
            "`clicks`/`ctr` by type (view, like, comment, any); `vs_control` by type: {relative_difference, "
            "ci_low, ci_high, p_value} (95% interval, two-proportion test) or null"
        },
    )
    computed_at = fields.String(allow_none=True, metadata={"description": "When the report was computed (ISO 8601)"})
    attribution_window_hours = fields.Float(allow_none=True)
    served_backlog = fields.Integer(
        allow_none=True, metadata={"description": "Served pages in Redis not yet moved to PostgreSQL"}
    )
