"""A model version as pages show it: each item's response entry, and the item index of each post id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ml.model import RecModel

# An item as a page shows it: its post id and its ``metadata`` object. Pages share these objects (one per
# item and version), so nothing may modify a page's ``metadata`` objects.
ItemEntry = tuple[str, dict[str, Any]]


def item_entry(post_id: str, tags: Iterable[str], community_id: str) -> ItemEntry:
    """The post id and the response's ``metadata`` object of an item."""
    return post_id, {"tags": list(tags), "communityId": community_id}


class Entries:
    """Item index -> entry, each made on first use and kept.

    Pages show a few dozen items of a version; making every entry at the swap took half a second at 200,000
    posts, with the worker's requests waiting on the GIL. Two threads may make the same entry at once: both
    are equal, and the one kept serves later pages.
    """

    __slots__ = ("_model", "_made")

    def __init__(self, model: RecModel):
        self._model = model
        self._made: list[ItemEntry | None] = [None] * model.num_items

    def __len__(self) -> int:
        return len(self._made)

    def __getitem__(self, index: int) -> ItemEntry:
        entry = self._made[index]
        if entry is None:
            model = self._model
            entry = item_entry(model.item_ids[index], model.item_tags[index], model.item_community_ids[index])
            self._made[index] = entry
        return entry

    def made(self) -> int:
        """How many entries have been made so far."""
        return sum(entry is not None for entry in self._made)


@dataclass(frozen=True, eq=False)
class VersionView:
    """Built once per version a worker serves (before its swap, or for a pinned older one on first use)."""

    entries: Entries  # item index -> entry
    item_index: Mapping[str, int]  # post id -> item index

    @classmethod
    def of(cls, model: RecModel) -> VersionView:
        return cls(Entries(model), {post_id: index for index, post_id in enumerate(model.item_ids)})
