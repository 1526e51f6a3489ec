"""ModelHolder.at: the older versions a pinned scroll needs, kept in a small LRU and loaded from disk on demand."""

from __future__ import annotations

import numpy as np

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


def test_mapped_models_swap_whole_and_a_bad_artifact_is_refused(model_dir):
    """One model per host: a reload swaps one mapped model for another; a damaged one leaves the old in place."""
    big = {seed: random_model(num_users=10_000, num_items=50, dim=8, seed=seed) for seed in (0, 1)}
    first = artifact.save(big[0], model_dir, {}, make_current=True)
    holder = ModelHolder(str(model_dir), lambda: None, kept=1)
    held = holder.get()
    assert not held.model.user_embeddings.flags.writeable  # mapped from the artifact, not a private copy
    second = artifact.save(big[1], model_dir, {}, make_current=True)
    assert holder.reload(second).reloaded
    assert holder.current.model.user_index("user-9999") == 9999
    np.testing.assert_array_equal(holder.current.model.user_embeddings, big[1].user_embeddings)
    np.testing.assert_array_equal(holder.at(first).model.user_embeddings, big[0].user_embeddings)
    third = artifact.save(big[0], model_dir, {}, make_current=True)
    npz = model_dir / f"{third}.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    outcome = holder.reload(third)
    assert not outcome.success and "checksum mismatch" in outcome.reason
    assert holder.current.version == second
    np.testing.assert_array_equal(holder.current.model.user_embeddings, big[1].user_embeddings)


def test_a_version_is_prepared_before_it_is_swapped_in(model_dir):
    """Requests keep the old version until the new one's pages are ready (the feed's prepare), not after."""
    first = save(model_dir, 0)
    holder = ModelHolder(str(model_dir), lambda: None)
    assert holder.get().version == first
    seen = []
    holder.prepare = lambda loaded: seen.append((loaded.version, holder.current.version))
    second = save(model_dir, 1)
    assert holder.reload(second).reloaded
    assert seen == [(second, first)] and holder.current.version == second


def test_a_version_whose_preparation_fails_is_refused(model_dir):
    first = save(model_dir, 0)
    holder = ModelHolder(str(model_dir), lambda: None)
    holder.get()

    def fail(loaded):
        raise ValueError("neighbour table unreadable")

    holder.prepare = fail
    outcome = holder.reload(save(model_dir, 1))
    assert not outcome.success and "neighbour table unreadable" in outcome.reason
    assert holder.current.version == first and "neighbour table unreadable" in holder.last_error["error"]
