"""The bulk ISO 8601 parser and formatter against Python's own datetime."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ml.timestamps import format_timestamps, parse_timestamps

VALID = [
    "2026-11-26T10:15:00Z",
    "2026-11-26 10:15:00+02:00",
    "2026-11-26T10:15",
    "2026-11-26T10:15:00",
    "2026-11-26",
    "2026-11-26T10:15:00.1Z",
    "2026-11-26T10:15:00.123456789+05:30",
    "2026-11-26T10:15:00+0530",
    "2026-11-26T10:15:00-03",
    "2026-11-26T10:15:00-15:59",
    "2024-02-29T23:59:59Z",
    "2000-02-29",
    "1969-12-31T23:59:59.5Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
INVALID = [
    "",
    "yesterday",
    "2026-11-26Z",
    "2026-11-26t10:15:00z",
    "20261126T101500Z",
    "2026-11-26T10:15:00.Z",
    "2026-11-26T10:15:00.1234567890Z",
    "2023-02-29",
    "1900-02-29",
    "2026-04-31",
    "2026-13-01",
    "2026-00-10",
    "2026-11-26T24:00:00",
    "2026-11-26T10:60",
    "2026-11-26T10:15:60Z",
    "2026-11-26T10:15:00+16:00",
    "2026-11-26T10:15:00+05:3",
    "2026-11-26T10:15:00+05:60",
    "2026-11-26T10:15:00 UTC",
    "0000-01-01",
    "２026-11-26",
    "2026-11-26T10:15:00Z" + " " * 30,
    "2026/11/26",
]


def _reference(text: str) -> int:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(np.floor(value.timestamp()))


def test_valid_timestamps_match_datetime():
    seconds, valid = parse_timestamps(VALID)
    assert valid.all(), [v for v, ok in zip(VALID, valid, strict=True) if not ok]
    assert seconds.tolist() == [_reference(v) for v in VALID]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_timestamps_are_flagged(text):
    _, valid = parse_timestamps(["2026-01-01T00:00:00Z", text])
    assert valid.tolist() == [True, False]


def test_format_round_trips_and_matches_isoformat():
    rng = np.random.default_rng(7)
    seconds = np.concatenate([rng.integers(-62135596800, 253402300799, 5000), [0, -1, 951782400]])
    texts = format_timestamps(seconds)
    assert texts.dtype == np.dtype("S20")
    decoded = [t.decode() for t in texts]
    assert decoded[:50] == [
        datetime.fromtimestamp(int(s), UTC).isoformat().replace("+00:00", "Z") for s in seconds[:50]
    ]
    parsed, valid = parse_timestamps(decoded)
    assert valid.all() and (parsed == seconds).all()


def test_empty_input():
    seconds, valid = parse_timestamps([])
    assert seconds.shape == valid.shape == (0,)
