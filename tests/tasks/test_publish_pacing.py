"""The precompute's writes are paced (PUBLISH_WRITE_RATE): a version's lists leave Redis to serving meanwhile."""

from __future__ import annotations

import time

import numpy as np

from common.config import Settings
from common.recs_cache import unpack_list
from tasks import pipeline
from testing.factories import random_model


def _write_all(cache, rate: int, model) -> float:
    settings = Settings(top_k=10, publish_write_rate=rate)
    started = time.monotonic()
    assert pipeline.precompute_users(settings, cache, "20261129T000000Z-0000000a", model, 0, model.num_users) == 6000
    return time.monotonic() - started


def test_writes_keep_to_the_rate_and_write_every_list(cache):
    model = random_model(num_users=6000, num_items=50, dim=4)
    assert _write_all(cache, 4000, model) >= 6000 / 4000 - 0.05  # three blocks of 2000: the last ends at 1.5 s
    for user in (0, 2999, 5999):
        blob = cache.user_reads(f"user-{user}", list_version="20261129T000000Z-0000000a").list_blob
        items, _ = unpack_list(blob)
        np.testing.assert_array_equal(items, model.top_k([user], 10)[0][0])


def test_zero_leaves_the_writes_unpaced(cache):
    assert _write_all(cache, 0, random_model(num_users=6000, num_items=50, dim=4)) < 1.5
