"""ModelHolder.at: the older versions a pinned scroll needs, kept in a small LRU and loaded from disk on demand."""

from __future__ import annotations

from app.model_holder import ModelHolder
from ml import artifact
from testing.factories import random_model


def save(model_dir, seed):
    return artifact.save(random_model(seed=seed), model_dir, {}, make_current=True)


def test_older_versions_are_loaded_on_demand_and_kept_least_recently_used_first(model_dir):
    versions = [save(model_dir, seed) for seed in range(4)]
    holder = ModelHolder(str(model_dir), lambda: None, kept=2)
    assert holder.get().version == versions[-1]
    assert holder.at(versions[-1]) is holder.current
    first = holder.at(versions[0])
    assert first.version == versions[0] and first.model.item_ids == random_model(seed=0).item_ids
    assert holder.at(versions[0]) is first  # kept
    holder.at(versions[1])
    holder.at(versions[2])  # pushes out versions[0], the least recently used
    assert holder.at(versions[0]) is not first


def test_the_replaced_model_is_kept_for_scrolls_pinned_to_it(model_dir):
    old = save(model_dir, 0)
    holder = ModelHolder(str(model_dir), lambda: None, kept=1)
    previous = holder.get()
    new = save(model_dir, 1)
    holder.reload(new)
    assert holder.current.version == new
    assert holder.at(old) is previous


def test_missing_versions_and_keeping_none_answer_none(model_dir):
    current = save(model_dir, 0)
    older = save(model_dir, 1)
    holder = ModelHolder(str(model_dir), lambda: current, kept=2)
    holder.get()
    assert holder.at("20200101T000000Z-00000000") is None
    assert holder.at("../../etc/passwd") is None
    assert ModelHolder(str(model_dir), lambda: current, kept=0).at(older) is None
