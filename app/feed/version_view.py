"""A model version as pages show it: each item's response entry, and the item index of each post id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml.model import RecModel

# An item as a page shows it: its post id and its ``metadata`` object. Pages share these objects (one per
# item and version), so nothing may modify a page's ``metadata`` objects.
ItemEntry = tuple[str, dict[str, Any]]


def item_entry(post_id: str, tags: Iterable[str], community_id: str) -> ItemEntry:
    """The post id and the response's ``metadata`` object of an item."""
    return post_id, {"tags": list(tags), "communityId": community_id}


@dataclass(frozen=True, eq=False)
class VersionView:
    """Built once per version a worker serves (at its swap, or for a pinned older one on first use)."""

    entries: Sequence[ItemEntry]  # item index -> entry
    item_index: Mapping[str, int]  # post id -> item index

    @classmethod
    def of(cls, model: RecModel) -> VersionView:
        entries = [
            item_entry(post_id, tags, community)
            for post_id, tags, community in zip(model.item_ids, model.item_tags, model.item_community_ids, strict=True)
        ]
        return cls(entries, {post_id: index for index, post_id in enumerate(model.item_ids)})
