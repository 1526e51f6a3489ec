"""The orjson JSON provider answers the same JSON as Flask's default one."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid

import pytest
from flask import Flask, jsonify

from app.json_provider import OrjsonProvider


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Colour(enum.StrEnum):
    RED = "red"


NON_STRING_KEYS = {3: "int key", 2.5: "float key", True: "bool key", None: "null key"}
PAYLOADS = [
    {"user_id": "user-1", "recommendations": [{"post_id": "p", "score": 0.123457, "rank": 1}], "next": None},
    {"text": "K-pop 케이팝 \u00e9", "ok": True, "n": -3, "f": 1e-07, "big": 2**53, "nested": [[], {}]},
    NON_STRING_KEYS,
    {"when": datetime.datetime(2026, 11, 26, 10, 15, tzinfo=datetime.UTC), "day": datetime.date(2026, 11, 26)},
    {"amount": decimal.Decimal("1.50"), "id": uuid.UUID(int=7), "point": Point(1, 2.5)},
    ["a", 1, 2.0],
    {"by_day": {20261130: 4, 20261201: 5}, "colour": {Colour.RED: 1}},  # keys that are not str, nested
]


def _app(provider: bool, sort_keys: bool, debug: bool = False) -> Flask:
    app = Flask(__name__)
    app.debug = debug
    if provider:
        app.json = OrjsonProvider(app)
    app.json.sort_keys = sort_keys
    return app


@pytest.mark.parametrize(
    ("payload", "sort_keys"),
    # Keys of mixed types cannot be sorted by either provider.
    [(payload, sort_keys) for payload in PAYLOADS for sort_keys in (False, True) if payload is not NON_STRING_KEYS]
    + [(NON_STRING_KEYS, False)],
)
def test_same_json_as_flasks_default_provider(payload, sort_keys):
    responses = []
    for provider in (False, True):
        app = _app(provider, sort_keys)
        with app.app_context():
            responses.append(jsonify(payload))
    default, fast = responses
    assert fast.mimetype == default.mimetype == "application/json"
    assert fast.get_data().endswith(b"\n") and not fast.get_data().endswith(b"\n\n")
    # The same values in the same order (key order included), however the text spells them.
    assert json.loads(fast.get_data()) == json.loads(default.get_data())
    assert list(json.loads(fast.get_data())) == list(json.loads(default.get_data()))


def test_dates_stay_http_dates_and_debug_output_is_indented():
    app = _app(provider=True, sort_keys=False, debug=True)
    with app.app_context():
        body = jsonify({"when": datetime.date(2026, 11, 26), "items": [1]}).get_data(as_text=True)
    assert body == '{\n  "when": "Thu, 26 Nov 2026 00:00:00 GMT",\n  "items": [\n    1\n  ]\n}\n'


def test_unserializable_values_still_fail():
    app = _app(provider=True, sort_keys=False)
    with app.app_context(), pytest.raises(TypeError):
        jsonify({"value": object()})


def test_the_app_answers_with_the_orjson_provider(client):
    assert isinstance(client.application.json, OrjsonProvider)
    response = client.get("/")
    assert response.mimetype == "application/json" and response.get_data().endswith(b"\n")
    assert list(response.get_json()) == ["service", "version", "model_version", "links"]
