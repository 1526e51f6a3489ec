"""The page cut out of a feed (``app.feed.stages.Page``): its entries' scores and positions."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import orjson

from app.feed.ranked import Fixed
from app.feed.stages import Feed, FeedRequest, Page, Rendered
from app.feed.version_view import VersionView, item_metadata


def feed_of(scores: np.ndarray, offset: int = 0, limit: int = 100) -> Feed:
    n = len(scores)
    post_ids = [f"p{i}" for i in range(n)]
    metadata = [item_metadata((f"t{i % 3}",), "c") for i in range(n)]
    view = VersionView(post_ids, metadata, {p: i for i, p in enumerate(post_ids)})
    scope = SimpleNamespace(
        view=view,
        pool=SimpleNamespace(offset=n),
        loaded=SimpleNamespace(version="v1", family="lightfm"),
        pin=SimpleNamespace(token="v1.0.0"),
        version_fallback=False,
    )
    return Feed(FeedRequest("alice", limit, offset), scope, Fixed(np.arange(n), scores))  # type: ignore[arg-type]


def test_scores_are_rounded_to_six_decimals_as_python_rounds_them():
    """The scores are rounded in one vectorised call; each must be what ``round(score, 6)`` gives."""
    rng = np.random.default_rng(3)
    scores = np.concatenate(
        [(rng.standard_normal(400) * scale).astype(np.float32) for scale in (0.001, 1.0, 30.0, 1000.0)]
    )
    scores = -np.sort(-scores)  # a ranking is best first
    feed = feed_of(scores, limit=len(scores))
    page = Page(len(scores))(feed, Rendered())
    got = [entry["score"] for entry in page["recommendations"]]
    assert got == [round(float(s), 6) for s in scores]
    assert all(type(score) is float for score in got)


def test_a_later_page_keeps_its_positions_and_scores():
    scores = np.linspace(2.0, 1.0, 50, dtype=np.float32)
    page = Page(50)(feed_of(scores, offset=20, limit=10), Rendered())
    entries = page["recommendations"]
    assert [e["rank"] for e in entries] == list(range(21, 31))
    assert [e["post_id"] for e in entries] == [f"p{i}" for i in range(20, 30)]
    assert [e["score"] for e in entries] == [round(float(s), 6) for s in scores[20:30]]
    assert page["pagination"]["next_offset"] == 30


def test_a_pages_entries_are_left_to_reference_counting():
    """A worker keeps the entries of every kept feed's pages (a thousand feeds, twenty entries and more each):
    an entry the collector tracked would be walked by every collection, the one soon after each model swap
    included. Holding only strings, numbers and the item's encoded metadata, an entry is never tracked."""
    rendered = Rendered()
    page = Page(50)(feed_of(np.linspace(2.0, 1.0, 50, dtype=np.float32), limit=20), rendered)
    assert len(rendered.entries) == 20
    assert not any(gc.is_tracked(entry) for entry in rendered.entries)
    first = orjson.loads(orjson.dumps(page))["recommendations"][0]
    assert first == {"post_id": "p0", "score": 2.0, "rank": 1, "fresh": False,
                     "metadata": {"tags": ["t0"], "communityId": "c"}}  # fmt: skip
