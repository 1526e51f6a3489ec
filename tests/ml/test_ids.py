"""The user id rule (``ml.ids``): what ``GET /recommendations/<user_id>`` can carry, as DESIGN section 7 says."""

from __future__ import annotations

import pytest

from ml.ids import MAX_ID_LENGTH, is_requestable_user_id

# Unicode's Bidi_Control property (PropList.txt): every character that reorders the text around it.
BIDI_CONTROLS = ["\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
C0_C1_CONTROLS = [*map(chr, range(0x00, 0x20)), *map(chr, range(0x7F, 0xA0))]
SEPARATORS = ["\u2028", "\u2029"]


@pytest.mark.parametrize("character", ["/", *BIDI_CONTROLS, *C0_C1_CONTROLS, *SEPARATORS], ids=repr)
def test_a_user_id_with_a_refused_character_is_not_requestable(character):
    assert not is_requestable_user_id(f"user{character}1")


@pytest.mark.parametrize(
    "user_id",
    [
        "user-1",
        "a",
        "x" * MAX_ID_LENGTH,
        "ユーザー",
        "사용자-42",
        "مستخدم",
        "user@example.com",
        "a b",
        "...",
        ".a",
        "a.",
    ],
)
def test_plain_ids_in_any_script_are_requestable(user_id):
    assert is_requestable_user_id(user_id)


@pytest.mark.parametrize("user_id", ["", "x" * (MAX_ID_LENGTH + 1), "user-1\n", ".", ".."])
def test_empty_too_long_dot_segment_and_trailing_newline_ids_are_not(user_id):
    assert not is_requestable_user_id(user_id)
