"""The live pool as one model version sees it: fresh posts with their representations and feed ids.

``tasks.refresh`` publishes, per live generation, the posts written after the model's data were read
(``RecsCache.live_pool``). A web worker turns a generation's posts into a :class:`LivePool` once per
(model version, generation): it drops the posts the model already knows (they are in its ranking), builds
the response entries and, through ``RecModel.item_representations``, the representation of each post
from its tags and community, so that scoring the pool for a user is one small matrix-vector product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np

from app.feed.ranked import EMPTY, Fixed, Ranked, Scored
from app.feed.version_view import ItemEntry, item_entry
from common.recs_cache import PoolPost
from ml.model import RecModel
from ml.similar import unit_rows

PostLabels = tuple[tuple[str, ...], str]  # a post's tags and community: what a filter matches


@dataclass(frozen=True, eq=False)
class LivePool:
    """Fresh posts of one generation unknown to one model, newest first; post ``j`` has feed id ``offset + j``."""

    generation: int
    offset: int  # the model's number of items
    entries: Sequence[ItemEntry]  # what a page shows of post j
    labels: Sequence[PostLabels]  # post j's tags and community
    index: Mapping[str, int]  # post id -> j
    known: np.ndarray  # (m,) bool: the model knows some feature of the post, so it can score it
    scorable: np.ndarray  # the rows (j) of the known posts
    embeddings: np.ndarray  # (len(scorable), d), C-contiguous: one product scores them all for a user
    biases: np.ndarray  # (len(scorable),)
    kept: np.ndarray | None = None  # (m,) bool: the posts a filter lets through (see :meth:`restricted`); None: all

    @property
    def size(self) -> int:
        return len(self.entries)

    def feed_id(self, post_id: str) -> int | None:
        j = self.index.get(post_id)
        return None if j is None else self.offset + j

    def scored(self, embedding: np.ndarray, bias: float) -> Ranked:
        """The posts the model can score, best first for a user of this representation (ties: newest first)."""
        if not len(self.scorable):
            return EMPTY
        scores = self.embeddings @ embedding + self.biases + np.float32(bias)
        return Scored(self.scorable_ids, scores, partial(self._members, known=True))

    @cached_property
    def scorable_ids(self) -> np.ndarray:
        """The feed ids of the posts the model can score, made once per pool."""
        return self.scorable + self.offset

    @cached_property
    def unit_embeddings(self) -> np.ndarray:
        """The scorable posts' representations scaled to length 1 (similar posts' cosines), made once per pool."""
        return unit_rows(self.embeddings)[0]

    def restricted(self, kept: np.ndarray) -> LivePool:
        """This pool with only the posts ``kept`` (bool, one per post) ranked; feed ids and entries unchanged."""
        if self.kept is not None:
            kept = kept & self.kept
        scorable = kept[self.scorable]
        return replace(
            self,
            kept=kept,
            scorable=self.scorable[scorable],
            embeddings=np.ascontiguousarray(self.embeddings[scorable]),
            biases=self.biases[scorable],
        )

    def unscored(self, everything: bool) -> Ranked:
        """The posts left to recency, newest first: those the model cannot score, or all (``everything``).

        The same for every user of the pool: made once per pool and kind.
        """
        return self._everything if everything else self._unscorable

    @cached_property
    def _everything(self) -> Ranked:
        return self._by_recency(np.ones(self.size, dtype=bool), known=None)

    @cached_property
    def _unscorable(self) -> Ranked:
        return self._by_recency(~self.known, known=False)

    def _by_recency(self, rows: np.ndarray, known: bool | None) -> Ranked:
        rows = np.flatnonzero(rows if self.kept is None else rows & self.kept)
        return Fixed(rows + self.offset, np.zeros(len(rows), dtype=np.float32), partial(self._members, known=known))

    def _members(self, feed_ids: np.ndarray, known: bool | None) -> np.ndarray:
        """Which feed ids are posts of this pool (of those the model can score or not, unless None)."""
        rows = feed_ids - self.offset
        inside = (rows >= 0) & (rows < self.size)
        rows = np.where(inside, rows, 0)
        if self.kept is not None:
            inside &= self.kept[rows]
        if known is None:
            return inside
        return inside & (self.known[rows] == known)


def build_pool(model: RecModel, item_index: Mapping[str, int], generation: int, posts: Sequence[PoolPost]) -> LivePool:
    """The :class:`LivePool` of ``posts`` for ``model`` (``item_index``: its post id -> item index)."""
    fresh = [post for post in posts if post[0] not in item_index]
    dim = model.item_embeddings.shape[1]
    if fresh:
        embeddings, biases, known = model.item_representations([p[1] for p in fresh], [p[2] for p in fresh])
    else:
        embeddings, biases, known = np.zeros((0, dim), np.float32), np.zeros(0, np.float32), np.zeros(0, bool)
    known = np.asarray(known, dtype=bool)
    scorable = np.flatnonzero(known).astype(np.int64)
    return LivePool(
        generation=generation,
        offset=model.num_items,
        entries=[item_entry(post_id, tags, community) for post_id, tags, community, _ in fresh],
        labels=[(tuple(tags), community) for _, tags, community, _ in fresh],
        index={post[0]: j for j, post in enumerate(fresh)},
        known=known,
        scorable=scorable,
        embeddings=np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32)[scorable]),
        biases=np.asarray(biases, dtype=np.float32)[scorable],
    )


def empty_pool(model: RecModel, generation: int = 0) -> LivePool:
    """A pool without posts (generation 0, or when the live parts cannot be read)."""
    return build_pool(model, {}, generation, ())
