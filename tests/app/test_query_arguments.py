"""The query shortcut of ``GET /recommendations`` agrees with the full webargs and marshmallow parse."""

from __future__ import annotations

import pytest
from flask import request
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from app.api import ArgumentsParser
from app.schemas import RecommendationsQuerySchema

SCHEMA = RecommendationsQuerySchema()
VERSION = "20261126T101500Z-1a2b3c4d"

# Queries the shortcut answers itself (MAX_PAGE_LIMIT is 25 and DEFAULT_PAGE_LIMIT 10 in the test settings).
PLAIN = [
    "",
    "limit=1",
    "limit=25",
    "limit=007",
    "offset=0",
    "offset=2147483647",
    "limit=20&offset=40",
    f"limit=5&offset=10&version={VERSION}",
    "limit=5&limit=abc",  # the first of a repeated argument counts
]
# Queries it leaves to the full parse: errors, and valid spellings it does not take on itself.
LEFT_TO_THE_SCHEMA = [
    "limit=0",
    "limit=26",
    "limit=",
    "limit=abc",
    "limit=1.5",
    "limit=-3",
    "limit=+5",
    "limit=%205",
    "limit=%D9%A5",  # an Arabic-Indic five
    "limit=1_0",
    "limit=99999999999",
    "limit=abc&limit=5",
    "offset=-1",
    "offset=2147483648",
    "offset=ten",
    "version=",
    "version=latest",
    "version=20261126T101500Z-1A2B3C4D",
    f"version={VERSION}%0A",  # a final newline: "$" alone would let it through
    "limit=3&unknown=1&other=",  # arguments the schema does not take are refused
    "limt=5",
    "Limit=5",
]


def parse(parser_class) -> tuple[str, object]:
    """The current request's query parsed by ``parser_class.parse``: ("ok", arguments) or ("error", messages)."""
    try:
        return "ok", parser_class.parse(ArgumentsParser(), SCHEMA, location="query")
    except HTTPException as error:
        return "error", error.data["messages"]


@pytest.mark.parametrize("query", PLAIN)
def test_the_shortcut_answers_plain_queries_as_the_schema_does(app, query):
    with app.test_request_context(f"/recommendations/user-1?{query}"):
        plain = SCHEMA.plain_load(request.args)
        assert plain is not None
        assert parse(FlaskParser) == ("ok", plain)  # webargs and marshmallow, without the shortcut
        assert parse(ArgumentsParser) == ("ok", plain)


@pytest.mark.parametrize("query", LEFT_TO_THE_SCHEMA)
def test_other_queries_are_left_to_the_schema(app, query):
    with app.test_request_context(f"/recommendations/user-1?{query}"):
        assert SCHEMA.plain_load(request.args) is None
        assert parse(ArgumentsParser) == parse(FlaskParser)


def test_errors_keep_the_design_shape_and_name_the_field(client):
    response = client.get("/recommendations/user-1?limit=26&offset=ten")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_arguments"
    assert error["details"] == {
        "fields": {"query": {"limit": ["must be between 1 and 25"], "offset": ["must be a whole number"]}}
    }


def test_a_version_with_a_final_newline_is_refused(client):
    response = client.get(f"/recommendations/user-1?version={VERSION}%0A")
    assert response.status_code == 400
    assert "version" in response.get_json()["error"]["details"]["fields"]["query"]


def test_token_and_version_pass_together_only_naming_one_model_version(client):
    """A client may pass back a page's model_version and token together; two different versions are a 400."""
    same = client.get(f"/recommendations/user-1?version={VERSION}&token={VERSION}.0.1")
    assert same.status_code != 400, same.get_json()
    other = client.get(f"/recommendations/user-1?version={VERSION}&token=20261126T101501Z-1a2b3c4d.0.1")
    assert other.status_code == 400
    assert "token" in other.get_json()["error"]["details"]["fields"]["query"]
