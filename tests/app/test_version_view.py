"""VersionView: each item's response entry made on first use, the same one after."""

from __future__ import annotations

from app.feed.version_view import VersionView, item_entry
from testing.factories import random_model


def test_entries_are_made_on_first_use_and_kept():
    model = random_model(num_items=9, seed=2)
    view = VersionView.of(model)
    assert len(view.entries) == 9
    assert view.entries.made() == 0  # a version of 200,000 posts would build them all at its swap
    expected = [
        item_entry(p, t, c) for p, t, c in zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True)
    ]
    assert [view.entries[i] for i in (4, 0, 8)] == [expected[4], expected[0], expected[8]]
    assert view.entries.made() == 3
    assert view.entries[4] is view.entries[4]  # pages share one object per item
    assert view.item_index == {post_id: i for i, post_id in enumerate(model.item_ids)}
