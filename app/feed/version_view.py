"""A model version as pages show it: each item's response entry, and the item index of each post id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from ml.model import RecModel

# An item as a page shows it: its post id and its ``metadata`` object, encoded once per item and version (an
# ``orjson.Fragment``, which the response's encoder copies as it is). Encoded, it costs a page no encoding, and
# a page's entries hold nothing the garbage collector tracks: a dict that holds a dict stays tracked as long
# as it lives, and a worker keeps the entries of every kept feed's pages, so each collection walked twenty
# of them per kept feed, a collection of tens of milliseconds after every model swap (docs/PERFORMANCE.md,
# "Page entries the collector does not walk").
ItemEntry = tuple[str, orjson.Fragment]


def item_metadata(tags: Iterable[str], community_id: str) -> orjson.Fragment:
    """The response's ``metadata`` object of an item (``{"tags": [...], "communityId": ...}``), encoded."""
    encoded = orjson.dumps({"tags": list(tags), "communityId": community_id})
    # orjson's result keeps the whole buffer it wrote into (kilobytes, for a few dozen bytes of JSON): a copy of
    # exactly the JSON is what a worker keeps per post and version.
    return orjson.Fragment(bytes(memoryview(encoded)))


def item_entry(post_id: str, tags: Iterable[str], community_id: str) -> ItemEntry:
    """The post id and the response's ``metadata`` object of an item."""
    return post_id, item_metadata(tags, community_id)


@dataclass(frozen=True, eq=False)
class VersionView:
    """Built once per version a worker serves (before its swap, or for a pinned older one on first use).

    The post ids and metadata objects are kept in two lists rather than as (post id, metadata) pairs: a
    version's view is built after the worker froze its heap at start (``gc.freeze()``), and the garbage
    collector keeps such pairs tracked for good, so every full collection scanned one per post (about 100 ms
    at 200,000 posts). Encoded metadata objects are never tracked.
    """

    post_ids: Sequence[str]  # item index -> post id
    metadata: Sequence[orjson.Fragment]  # item index -> the response's metadata object, encoded
    item_index: Mapping[str, int]  # post id -> item index

    def entry(self, index: int) -> ItemEntry:
        """Item ``index`` as a page shows it."""
        return self.post_ids[index], self.metadata[index]

    @classmethod
    def of(cls, model: RecModel) -> VersionView:
        metadata = [
            item_metadata(tags, community)
            for tags, community in zip(model.item_tags, model.item_community_ids, strict=True)
        ]
        return cls(model.item_ids, metadata, {post_id: index for index, post_id in enumerate(model.item_ids)})
