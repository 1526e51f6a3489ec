"""The model artifact: round trip, atomic files, refusal of anything corrupt, partial or foreign, pruning."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import mmap
import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ml import artifact
from ml.errors import ArtifactError
from ml.model import PackedStrings
from testing.factories import random_model

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def _version(minutes: int) -> str:
    return artifact.new_version(T0 + timedelta(minutes=minutes))


def test_round_trip_keeps_every_array_string_and_metadata(tmp_path):
    model = random_model(num_users=7, num_items=11, exclude={0: [1, 2], 5: [10]})
    model = _with_strings(model, user_ids=["유저-1", "ü-2", "u3", "u4", "u5", "u6", "🎤"], tag="블랙핑크|concert")
    metadata = {"params": {"components": 4}, "metrics": {"model": {"ndcg": 0.25}}, "data_window": ["a", "b"]}
    version = artifact.save(model, tmp_path, metadata)
    assert artifact.current_version(tmp_path) == version
    loaded, document = artifact.load(tmp_path)
    assert loaded.user_ids == model.user_ids
    assert loaded.item_ids == model.item_ids
    assert loaded.item_tags == model.item_tags
    assert loaded.item_community_ids == model.item_community_ids
    for name in ("user_embeddings", "user_biases", "item_embeddings", "item_biases", "exclude_indptr",
                 "exclude_indices", "popular_items", "popular_scores"):  # fmt: skip
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
        assert getattr(loaded, name).dtype == getattr(model, name).dtype
    assert document["params"] == {"components": 4}
    assert document["metrics"] == {"model": {"ndcg": 0.25}}
    assert document["version"] == version
    assert (document["num_users"], document["num_items"], document["components"]) == (7, 11, 4)
    np.testing.assert_array_equal(loaded.top_k(np.arange(7), 5)[0], model.top_k(np.arange(7), 5)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["CURRENT", f"{version}.npz", f"{version}.json"])


def test_npz_holds_no_pickled_objects(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    with np.load(tmp_path / f"{version}.npz", allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)


def test_checksum_covers_the_npz_bytes(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    document = json.loads((tmp_path / f"{version}.json").read_text())
    assert document["sha256"] == hashlib.sha256((tmp_path / f"{version}.npz").read_bytes()).hexdigest()
    assert document["format_version"] == artifact.FORMAT_VERSION


def test_corrupt_npz_is_refused_with_file_and_reason(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    path = tmp_path / f"{version}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{version}\.npz: checksum mismatch"):
        artifact.load(tmp_path)


def test_truncated_npz_is_refused(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    path = tmp_path / f"{version}.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        artifact.load(tmp_path, version)


def _rewrite_arrays(directory, version, **changes):
    """Replace arrays in a version's npz and update its metadata to match, as a forger would."""
    npz_path, json_path = directory / f"{version}.npz", directory / f"{version}.json"
    with np.load(npz_path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz_path.write_bytes(buffer.getvalue())
    document = json.loads(json_path.read_text())
    document["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    document["arrays"] = {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()}
    json_path.write_text(json.dumps(document))


def test_pickled_array_is_refused_even_with_a_matching_checksum(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    _rewrite_arrays(tmp_path, version, user_ids=np.array(["user-0", {"evil": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="not a readable model archive"):
        artifact.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"item_tag_indices": np.array([0, 0, 1, 0, 0, 1, 0, 99, 1], dtype=np.int32)}, "item_tag_indices holds"),
        ({"item_tag_indices": np.array([0, 0, 1], dtype=np.int32)}, "item_tag_indptr does not match"),
        ({"item_community": np.full(9, -1, dtype=np.int32)}, "item_community holds"),
        ({"exclude_indices": np.array([42], dtype=np.int32)}, "exclude_indptr is not a valid CSR"),
        ({"user_ids": np.frombuffer(b"only-one-id", dtype=np.uint8)}, "user_ids: 1 entries, expected 6"),
    ],
    ids=["tag-index", "tag-count", "community-index", "exclusion-count", "id-count"],
)
def test_inconsistent_arrays_are_refused_even_with_a_matching_checksum(tmp_path, change, reason):
    version = artifact.save(random_model(num_items=9), tmp_path, {})
    _rewrite_arrays(tmp_path, version, **change)
    with pytest.raises(ArtifactError, match=rf"{version}\.npz: inconsistent model: {reason}"):
        artifact.load(tmp_path)


def test_array_shape_not_matching_metadata_is_refused(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    json_path = tmp_path / f"{version}.json"
    document = json.loads(json_path.read_text())
    document["arrays"]["item_biases"]["shape"] = [3]
    json_path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="array item_biases is"):
        artifact.load(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: {**d, "format_version": 99}, "format version 99 is not supported"),
        (lambda d: {**d, "format": "something-else"}, "not a recsvc-model metadata file"),
        (lambda d: {**d, "sha256": "abc"}, "malformed sha256"),
        (lambda d: {**d, "num_users": 1}, "user/item counts do not match"),
    ],
)
def test_foreign_or_inconsistent_metadata_is_refused(tmp_path, edit, message):
    version = artifact.save(random_model(), tmp_path, {})
    json_path = tmp_path / f"{version}.json"
    json_path.write_text(json.dumps(edit(json.loads(json_path.read_text()))))
    with pytest.raises(ArtifactError, match=message):
        artifact.load(tmp_path)


def test_partial_metadata_is_refused(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    json_path = tmp_path / f"{version}.json"
    json_path.write_text(json_path.read_text()[:40])
    with pytest.raises(ArtifactError, match=rf"{version}\.json: unreadable metadata"):
        artifact.load(tmp_path)


def test_missing_files_and_pointer(tmp_path):
    with pytest.raises(ArtifactError, match="no current model version"):
        artifact.load(tmp_path)
    version = artifact.save(random_model(), tmp_path, {})
    (tmp_path / f"{version}.npz").unlink()
    with pytest.raises(ArtifactError, match=rf"{version}\.npz: cannot read"):
        artifact.load(tmp_path)
    (tmp_path / "CURRENT").write_text("../../etc/passwd\n")
    with pytest.raises(ArtifactError, match="does not hold a version id"):
        artifact.load(tmp_path)
    with pytest.raises(ArtifactError, match="not a version id"):
        artifact.load(tmp_path, "../x")


def test_saving_without_making_current_then_publishing(tmp_path):
    first = artifact.save(random_model(seed=1), tmp_path, {}, version=_version(0))
    second = artifact.save(random_model(seed=2), tmp_path, {}, version=_version(1), make_current=False)
    assert artifact.current_version(tmp_path) == first
    assert artifact.list_versions(tmp_path) == [first, second]
    artifact.set_current(tmp_path, second)
    assert artifact.current_version(tmp_path) == second
    artifact.set_current(tmp_path, first)  # rollback
    assert artifact.load(tmp_path)[1]["version"] == first
    with pytest.raises(ArtifactError, match="missing"):
        artifact.set_current(tmp_path, _version(5))
    with pytest.raises(ArtifactError, match="already exists"):
        artifact.save(random_model(), tmp_path, {}, version=first)


def test_old_versions_are_pruned_to_keep(tmp_path):
    versions = [artifact.save(random_model(seed=i), tmp_path, {}, version=_version(i)) for i in range(8)]
    assert artifact.list_versions(tmp_path) == versions[-6:]  # the current one and 5 earlier ones
    assert artifact.current_version(tmp_path) == versions[-1]
    artifact.set_current(tmp_path, versions[3])  # rolled back: the current one is kept whatever its age
    pending = artifact.save(random_model(), tmp_path, {}, keep=2, make_current=False)
    # The current one, the pending (newest) one, and the newest earlier one: 2 besides the current.
    assert artifact.list_versions(tmp_path) == [versions[3], versions[7], pending]


def test_keep_zero_keeps_a_version_awaiting_publication(tmp_path):
    first = artifact.save(random_model(), tmp_path, {}, version=_version(0), keep=0)
    pending = artifact.save(random_model(), tmp_path, {}, version=_version(1), keep=0, make_current=False)
    assert artifact.list_versions(tmp_path) == [first, pending]
    artifact.set_current(tmp_path, pending)
    third = artifact.save(random_model(), tmp_path, {}, version=_version(2), keep=0)
    assert artifact.list_versions(tmp_path) == [third]


def test_stale_temporary_files_are_removed(tmp_path):
    stale, fresh = tmp_path / ".tmp-x.npz-1", tmp_path / ".tmp-y.npz-2"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    old = time.time() - artifact.STALE_TEMP_SECONDS - 10
    os.utime(stale, (old, old))
    artifact.save(random_model(), tmp_path, {})
    assert not stale.exists() and fresh.exists()


def test_bad_metadata_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="may not set"):
        artifact.save(random_model(), tmp_path, {"sha256": "x"})
    with pytest.raises(ValueError, match="not strict JSON"):
        artifact.save(random_model(), tmp_path, {"metrics": {"ndcg": float("nan")}})
    assert list(tmp_path.iterdir()) == []


def test_new_version_sorts_by_time():
    early, late = artifact.new_version(T0), artifact.new_version(T0 + timedelta(seconds=1))
    assert artifact.VERSION_PATTERN.match(early)
    assert early.startswith("20261126T100000Z-")
    assert early < late


def test_versions_made_within_one_second_sort_in_the_order_they_were_made():
    made = [artifact.new_version(T0 + timedelta(microseconds=step)) for step in (0, 1, 2, 500_000, 999_999)]
    assert all(artifact.VERSION_PATTERN.match(version) for version in made)
    assert made == sorted(made)


def _with_strings(model, user_ids, tag):
    tags = [tuple(tag.split("|")) if i % 2 else () for i in range(model.num_items)]
    return dataclasses.replace(model, user_ids=user_ids, item_tags=tags)


def test_read_metadata_checks_the_json_without_the_arrays(tmp_path):
    version = artifact.save(random_model(num_users=7), tmp_path, {"metrics": {"model": {"precision@10": 0.5}}})
    (tmp_path / f"{version}.npz").write_bytes(b"not read")
    document = artifact.read_metadata(tmp_path, version)
    assert document["metrics"] == {"model": {"precision@10": 0.5}}
    assert document["num_users"] == 7
    json_path = tmp_path / f"{version}.json"
    json_path.write_text(json_path.read_text()[:40])
    with pytest.raises(ArtifactError, match="unreadable metadata"):
        artifact.read_metadata(tmp_path, version)
    with pytest.raises(ArtifactError):
        artifact.read_metadata(tmp_path, "../etc/passwd")


def test_a_version_id_with_a_final_newline_is_refused(tmp_path):
    version = artifact.save(random_model(), tmp_path, {})
    with pytest.raises(ArtifactError, match="version id"):
        artifact.read_metadata(tmp_path, version + "\n")
    with pytest.raises(ArtifactError, match="version id"):
        artifact.load(tmp_path, version + "\n")


def _as_old_artifact(directory, version, drop=("user_id_offsets", "user_id_order")):
    """Rewrite a version as an artifact of before the mapping: ``np.savez``'s layout, no user id offsets/order."""
    npz_path, json_path = directory / f"{version}.npz", directory / f"{version}.json"
    with np.load(npz_path) as archive:
        arrays = {name: archive[name] for name in archive.files if name not in drop}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz_path.write_bytes(buffer.getvalue())
    document = json.loads(json_path.read_text())
    document["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    document["arrays"] = {name: spec for name, spec in document["arrays"].items() if name not in drop}
    json_path.write_text(json.dumps(document))


def _mapped(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


def test_large_arrays_are_memory_mapped_read_only_and_aligned(tmp_path):
    """One model per host (issue 14): the workers map the artifact's arrays, they hold no private copy."""
    model = random_model(num_users=10_000, num_items=700, dim=8)
    artifact.save(model, tmp_path, {})
    loaded, _ = artifact.load(tmp_path)
    for name in ("user_embeddings", "item_biases", "exclude_indptr", "user_biases"):
        array = getattr(loaded, name)
        assert array.nbytes < 1 << 16 or _mapped(array), name
    assert _mapped(loaded.user_embeddings) and _mapped(loaded.user_ids.offsets)
    assert not loaded.user_embeddings.flags.writeable
    assert loaded.user_embeddings.ctypes.data % 64 == 0
    with pytest.raises(ValueError, match="read-only"):
        loaded.user_embeddings[0, 0] = 1.0
    assert isinstance(loaded.user_ids, PackedStrings)
    assert [loaded.user_index(u) for u in ("user-0", "user-9999", "user-123", "user-10000")] == [0, 9999, 123, None]
    np.testing.assert_array_equal(loaded.top_k(np.arange(50), 10)[0], model.top_k(np.arange(50), 10)[0])


def test_a_mapped_model_survives_its_files_being_pruned(tmp_path):
    model = random_model(num_users=5000, num_items=50, dim=8)
    first = artifact.save(model, tmp_path, {})
    loaded, _ = artifact.load(tmp_path, first)
    artifact.save(model, tmp_path, {}, keep=0)
    artifact.save(model, tmp_path, {}, keep=0)
    assert first not in artifact.list_versions(tmp_path)
    np.testing.assert_array_equal(loaded.user_embeddings, model.user_embeddings)


def test_an_artifact_written_before_the_mapping_still_loads(tmp_path):
    model = random_model(num_users=3000, num_items=40, dim=8)
    model = _with_strings(model, user_ids=[f"유저-{u}" for u in range(2999)] + ["🎤"], tag="x")
    version = artifact.save(model, tmp_path, {})
    _as_old_artifact(tmp_path, version)
    loaded, _ = artifact.load(tmp_path)
    assert loaded.user_ids == model.user_ids
    assert [loaded.user_index(u) for u in ("유저-0", "🎤", "유저-2998", "nobody")] == [0, 2999, 2998, None]
    np.testing.assert_array_equal(loaded.user_embeddings, model.user_embeddings)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda order: order[::-1].copy(), "user_id_order holds duplicates or is not sorted"),
        (lambda order: np.zeros_like(order), "user_id_order holds duplicates or is not sorted"),
        (lambda order: order[:-1].copy(), "user_id_order the sorted order does not list every string"),
    ],
    ids=["reversed", "repeated", "short"],
)
def test_a_forged_user_id_order_is_refused(tmp_path, change, reason):
    version = artifact.save(random_model(num_users=50), tmp_path, {})
    with np.load(tmp_path / f"{version}.npz") as archive:
        order = archive["user_id_order"]
    _rewrite_arrays(tmp_path, version, user_id_order=change(order))
    with pytest.raises(ArtifactError, match=rf"inconsistent model: {reason}"):
        artifact.load(tmp_path)


@pytest.mark.parametrize("chunk", [artifact.UTF8_CHECK_BYTES, 3])
def test_user_ids_that_are_not_utf8_are_refused_wherever_a_check_chunk_ends(tmp_path, monkeypatch, chunk):
    """The user ids are checked as UTF-8 a chunk at a time: a character split by a chunk's end is still one."""
    monkeypatch.setattr(artifact, "UTF8_CHECK_BYTES", chunk)
    model = _with_strings(random_model(num_users=300), user_ids=[f"유저-{u}" for u in range(300)], tag="x")
    version = artifact.save(model, tmp_path, {})
    assert artifact.load(tmp_path)[0].user_ids == model.user_ids
    with np.load(tmp_path / f"{version}.npz") as archive:
        blob, offsets, order = archive["user_ids"].copy(), archive["user_id_offsets"], archive["user_id_order"]
    blob[offsets[order[-1] + 1] - 2] = 0xFF  # the greatest id's last byte: it stays the greatest
    _rewrite_arrays(tmp_path, version, user_ids=blob)
    with pytest.raises(ArtifactError, match="inconsistent model: 'utf-8' codec can't decode byte 0xff"):
        artifact.load(tmp_path)


def test_a_file_saved_beside_a_version_replaces_the_other_versions_of_its_kind_only(tmp_path):
    artifact.save_beside(tmp_path, "v1", ".a.npz", {"x": np.arange(3)})
    artifact.save_beside(tmp_path, "v1", ".b.npz", {"x": np.arange(3)})
    artifact.save_beside(tmp_path, "v0", ".a.npz", {"x": np.arange(2)})
    artifact.save_beside(tmp_path, "v2", ".a.npz", {"x": np.arange(4)}, keep=("v0",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v0.a.npz", "v1.b.npz", "v2.a.npz"]
    with np.load(tmp_path / "v2.a.npz", allow_pickle=False) as saved:
        assert saved["x"].tolist() == [0, 1, 2, 3]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "v1.a.npz"
    artifact.write_atomically(path, b"before")

    def fail(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        artifact.write_atomically(path, fail)
    assert [p.name for p in tmp_path.iterdir()] == ["v1.a.npz"] and path.read_bytes() == b"before"


def test_a_mappable_file_beside_a_version_is_mapped_read_only_and_a_damaged_one_refused(tmp_path):
    large = np.arange(100_000, dtype=np.int32)  # past the size from which members are mapped
    artifact.save_beside(tmp_path, "v1", ".t.npz", {"large": large, "small": np.arange(3)}, mappable=True)
    arrays = artifact.map_beside(tmp_path, "v1", ".t.npz")
    assert arrays["large"].tolist() == large.tolist() and arrays["small"].tolist() == [0, 1, 2]
    assert not arrays["large"].flags.writeable and not arrays["large"].flags.owndata  # a view of the mapping
    with np.load(tmp_path / "v1.t.npz", allow_pickle=False) as saved:  # still an ordinary .npz
        assert saved["large"].tolist() == large.tolist()
    path = tmp_path / "v1.t.npz"
    data = bytearray(path.read_bytes())
    data[data.index(large[50_000].tobytes(), 1000)] ^= 0xFF  # one byte of the large member's data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC mismatch"):
        artifact.map_beside(tmp_path, "v1", ".t.npz")
    with pytest.raises(FileNotFoundError):
        artifact.map_beside(tmp_path, "v2", ".t.npz")
