"""A training run writes its version's similar-post table (ml.similar) before it publishes the version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ml.similar
from testing.service import publish_once, settings_from


def test_each_run_writes_its_versions_table_and_keeps_only_the_served_ones_beside_it(loaded_db, cache, service_env):
    settings = settings_from(service_env)
    first, _, _, _ = publish_once(settings, cache)
    second, model, previous, stages = publish_once(settings, cache)
    assert previous == first.version and stages.durations["similar"] >= 0
    table = ml.similar.load_neighbours(settings.model_dir, second.version, model.num_items)
    assert table is not None
    units = ml.similar.UnitItems.of(model)
    for post in np.flatnonzero(units.usable)[:: max(1, model.num_items // 25)].tolist():
        found, cosines = units.nearest(units.unit[post], ml.similar.NEIGHBOURS, skip=post)
        items, exact = table.row(post)
        assert items.tolist() == found.tolist() and exact.tobytes() == cosines.tobytes()
    assert ml.similar.load_neighbours(settings.model_dir, first.version, model.num_items) is not None  # still served
    third, _, _, _ = publish_once(settings, cache)
    tables = sorted(path.name for path in Path(settings.model_dir).glob(f"*{ml.similar.TABLE_SUFFIX}"))
    assert tables == [f"{second.version}{ml.similar.TABLE_SUFFIX}", f"{third.version}{ml.similar.TABLE_SUFFIX}"]
