"""The model artifact on disk (DESIGN section 5): versioned, atomic, checksummed, without pickle.

A model directory holds, per version ``YYYYMMDDTHHMMSSZ-xxxxxxxx``:

- ``<version>.npz``: every array of the :class:`~ml.model.RecModel`, an uncompressed zip of ``.npy`` members
  (what ``np.savez`` writes) whose data start on 64-byte boundaries. Strings (ids, tags, communities) are
  stored as one UTF-8 blob of NUL-separated values, so the file loads with ``allow_pickle=False``; the user
  ids also with their offsets and sorted order (:class:`~ml.model.PackedStrings`). The non-identity feature
  embeddings (for posts and users the model has not seen) are optional arrays: an artifact written before
  they existed loads with none, one written before the user ids' offsets and order gets them computed.
- ``<version>.json``: the format version, the sha256 of the ``.npz`` bytes, the array shapes, the counts,
  and the caller's metadata (params, metrics, data window...).

and a ``CURRENT`` file naming the current version. Each file is written under a temporary name in the
same directory, fsynced and moved into place with ``os.replace``; the ``.json`` is written after the
``.npz``, so a version whose ``.json`` exists is complete. Loading verifies the checksum, the format and
every shape, and raises :class:`~ml.errors.ArtifactError` naming the file and the reason.

One model per host: :func:`load` memory-maps the large arrays read-only from the ``.npz`` (a stored member is
a ``.npy`` at a known offset of the zip) instead of reading them, so the web workers of a host share one copy
of the embeddings and user ids in the page cache. The checksum is verified by streaming the file through
sha256 once per load, from the descriptor that is then mapped: the mapped bytes are the verified ones (a
version's files are never rewritten in place, only replaced or unlinked, which leaves a mapping intact).
Every load verifies, not only the trainer's write: a worker must refuse a file damaged after it was
written. An artifact written before the alignment (members at any offset) still loads: its unaligned
arrays are read into memory as before.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import mmap
import os
import re
import secrets
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ml.errors import ArtifactError
from ml.model import PackedStrings, RecModel, check_sorted, sorted_order, string_offsets

logger = logging.getLogger(__name__)

FORMAT_NAME = "recsvc-model"
FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
# Match with fullmatch: "$" alone would let a final newline through.
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
# Temporary files older than this are left-overs of a writer that died; pruning removes them.
STALE_TEMP_SECONDS = 3600
_TEMP_PREFIX = ".tmp-"
_SEPARATOR = "\x00"
UTF8_CHECK_BYTES = 1 << 20  # the user ids are checked as UTF-8 a mebibyte at a time (about a millisecond each)
# Members' data start on this boundary (the .npy header pads the array itself to 64 bytes from there), so a
# mapped float32 array is aligned as BLAS wants; arrays smaller than _MAP_BYTES are read, not mapped.
_ALIGN = 64
_MAP_BYTES = 1 << 16
_PADDING_FIELD = 0xD935  # the zip extra-field id Android's zipalign uses for padding
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header (30 bytes)

# The numeric arrays of a RecModel, stored under their own names.
_MODEL_ARRAYS = (
    "user_embeddings",
    "user_biases",
    "item_embeddings",
    "item_biases",
    "exclude_indptr",
    "exclude_indices",
    "popular_items",
    "popular_scores",
)
# The feature arrays of a RecModel (for posts and users the model has not seen). An artifact written before
# they were kept lacks them and loads with none: such a model represents no new post or user.
_FEATURE_ARRAYS = (
    "item_feature_embeddings",
    "item_feature_biases",
    "user_feature_embeddings",
    "user_feature_biases",
    "fresh_calibration",
)
# Keys of the .json that the artifact itself writes; caller metadata may not use them.
_RESERVED_KEYS = frozenset(
    {"format", "format_version", "version", "created_at", "sha256", "arrays", "num_users", "num_items", "components"}
)


def new_version(now: datetime | None = None) -> str:
    """A new version id ``YYYYMMDDTHHMMSSZ-xxxxxxxx``: UTC time, then the microsecond (5 hex digits) and 3 random
    hex digits, so ids sort by time even within a second (versions only go up; pruning keeps the newest)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{now.microsecond:05x}{secrets.token_hex(2)[:3]}"


def created_timestamp(version: str, metadata: Mapping[str, Any]) -> float | None:
    """Unix time a version was trained: its metadata's ``created_at``, else the time in its id; None if neither
    parses."""
    for raw, fmt in ((metadata.get("created_at"), None), (version.split("-")[0], "%Y%m%dT%H%M%SZ")):
        if not isinstance(raw, str):
            continue
        try:
            parsed = datetime.strptime(raw, fmt) if fmt else datetime.fromisoformat(raw)
        except ValueError:
            continue
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def save(
    model: RecModel,
    model_dir: str | os.PathLike,
    metadata: Mapping[str, Any],
    version: str | None = None,
    keep: int = 5,
    make_current: bool = True,
) -> str:
    """Write ``model`` as a new version in ``model_dir`` and return the version id.

    Parameters
    ----------
    model : RecModel
    model_dir : path
        Created if missing.
    metadata : mapping
        JSON-serialisable extras stored in the ``.json`` (e.g. ``params``, ``metrics``, ``data_window``).
        Keys the artifact writes itself (``version``, ``sha256``...) are refused.
    version : str, optional
        Defaults to :func:`new_version`.
    keep : int
        How many versions to keep besides the current one; older ones are deleted.
    make_current : bool
        Point ``CURRENT`` at the new version. The training task passes False and calls
        :func:`set_current` only once the version is published in Redis.

    ``created_at`` and a new version id come from one clock reading, so they name the same second.
    """
    now = datetime.now(UTC)
    version = version or new_version(now)
    _check_version(version)
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    clash = _RESERVED_KEYS & set(metadata)
    if clash:
        raise ValueError(f"metadata may not set {sorted(clash)}: the artifact writes them")
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    npz_path, json_path = _paths(directory, version)
    if json_path.exists() or npz_path.exists():
        raise ArtifactError(f"{json_path}: version {version} already exists")

    arrays = _to_arrays(model)
    payload = _aligned_archive(arrays)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "num_users": model.num_users,
        "num_items": model.num_items,
        "components": model.num_components,
        "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
        **metadata,
    }
    try:
        text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not strict JSON: {exc}") from exc
    write_atomically(npz_path, payload)
    try:
        write_atomically(json_path, text.encode())
    except BaseException:
        # Without its .json the .npz is no version at all, and pruning (which finds versions by their .json)
        # would never delete it: a disk that filled up here would stay full.
        npz_path.unlink(missing_ok=True)
        raise
    logger.info(
        "saved model %s (%d users, %d items, %.1f MB)", version, model.num_users, model.num_items, len(payload) / 1e6
    )
    if make_current:
        set_current(directory, version)
    prune(directory, keep)
    return version


def load(model_dir: str | os.PathLike, version: str | None = None) -> tuple[RecModel, dict[str, Any]]:
    """Read a version (the current one by default), verified; return the model and its metadata.

    Raises
    ------
    ArtifactError
        When there is no current version, a file is missing, unreadable, partial or corrupt, the checksum
        or the format version does not match, or an array has the wrong name, type or shape. The message
        names the file and the reason.
    """
    directory = Path(model_dir)
    if version is None:
        version = current_version(directory)
        if version is None:
            raise ArtifactError(f"{directory / CURRENT_FILE}: no current model version")
    _check_version(version)
    npz_path, json_path = _paths(directory, version)
    document = _read_metadata(json_path)
    try:
        handle = npz_path.open("rb")
    except OSError as exc:
        raise ArtifactError(f"{npz_path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        try:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise ArtifactError(f"{npz_path}: cannot read: {exc.strerror or exc}") from exc
        if digest != document["sha256"]:
            raise ArtifactError(f"{npz_path}: checksum mismatch (sha256 {digest}, metadata says {document['sha256']})")
        try:
            arrays = _map_archive(handle)
        except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as exc:
            raise ArtifactError(f"{npz_path}: not a readable model archive: {exc}") from exc
    expected = document["arrays"]
    if set(arrays) != set(expected):
        raise ArtifactError(f"{npz_path}: arrays {sorted(arrays)} do not match the metadata {sorted(expected)}")
    for name, array in arrays.items():
        if list(array.shape) != expected[name].get("shape") or array.dtype.str != expected[name].get("dtype"):
            raise ArtifactError(
                f"{npz_path}: array {name} is {array.dtype.str}{list(array.shape)}, metadata says "
                f"{expected[name].get('dtype')}{expected[name].get('shape')}"
            )
    try:
        model = _from_arrays(arrays)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{npz_path}: inconsistent model: {exc}") from exc
    if (model.num_users, model.num_items) != (document["num_users"], document["num_items"]):
        raise ArtifactError(f"{npz_path}: user/item counts do not match {json_path.name}")
    return model, document


def read_metadata(model_dir: str | os.PathLike, version: str) -> dict[str, Any]:
    """The checked ``.json`` of ``version`` without reading its arrays (cheap: for listings and the gate).

    Raises :class:`ArtifactError` as :func:`load` does for the metadata file; the arrays are not verified.
    """
    _check_version(version)
    return _read_metadata(_paths(Path(model_dir), version)[1])


def current_version(model_dir: str | os.PathLike) -> str | None:
    """The version ``CURRENT`` names, or None when there is none yet."""
    path = Path(model_dir) / CURRENT_FILE
    try:
        version = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not VERSION_PATTERN.fullmatch(version):
        raise ArtifactError(f"{path}: does not hold a version id: {version[:80]!r}")
    return version


def list_versions(model_dir: str | os.PathLike) -> list[str]:
    """Every complete version in ``model_dir`` (those with a ``.json``), oldest first."""
    directory = Path(model_dir)
    if not directory.is_dir():
        return []
    versions = (p.name[: -len(".json")] for p in directory.glob("*.json"))
    return sorted(v for v in versions if VERSION_PATTERN.fullmatch(v) and (directory / f"{v}.npz").is_file())


def set_current(model_dir: str | os.PathLike, version: str) -> None:
    """Point ``CURRENT`` at ``version`` (publish, or roll back); the version's metadata must be readable."""
    directory = Path(model_dir)
    _check_version(version)
    npz_path, json_path = _paths(directory, version)
    _read_metadata(json_path)
    if not npz_path.is_file():
        raise ArtifactError(f"{npz_path}: missing")
    write_atomically(directory / CURRENT_FILE, f"{version}\n".encode())
    logger.info("current model is now %s", version)


def prune(model_dir: str | os.PathLike, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions besides the current one, and stale temporary files.

    Returns the deleted versions. The newest version is always kept too, so that with ``keep=0`` a
    version saved but not yet made current survives until it is published.
    """
    directory = Path(model_dir)
    current = current_version(directory)
    versions = list_versions(directory)
    newest = versions[-1] if versions else None
    candidates = [v for v in versions if v not in (current, newest)]
    # The newest version, when it is not the current one, takes one of the ``keep`` places.
    places = max(0, keep - 1) if newest != current else keep
    doomed = candidates[: max(0, len(candidates) - places)]
    for version in doomed:
        for path in _paths(directory, version)[::-1]:  # the .json first: without it the version is gone
            path.unlink(missing_ok=True)
        logger.info("deleted model version %s", version)
    cutoff = time.time() - STALE_TEMP_SECONDS
    for path in directory.glob(f"{_TEMP_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass
    return doomed


# --- internals ---


def _paths(directory: Path, version: str) -> tuple[Path, Path]:
    return directory / f"{version}.npz", directory / f"{version}.json"


def _check_version(version: str) -> None:
    # Versions become file names: anything else (a path, "..") is refused before it touches the disk.
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ArtifactError(f"not a version id (YYYYMMDDTHHMMSSZ-xxxxxxxx): {str(version)[:80]!r}")


def write_atomically(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never a part.

    ``data`` is the bytes, or a function that writes them to the open file (a large ``np.savez`` need not be
    held in memory twice). The temporary file (``.tmp-*`` beside ``path``) is removed on failure; one left by
    a killed process is removed by :func:`prune` once stale. Every file of the model directory is written
    through here.
    """
    fd, temp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # Persist the rename itself.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_beside(
    model_dir: str | os.PathLike,
    version: str,
    suffix: str,
    arrays: Mapping[str, np.ndarray],
    keep: Sequence[str] = (),
    *,
    mappable: bool = False,
) -> Path:
    """Write ``<version><suffix>``, an ``.npz`` of ``arrays``, atomically beside the version's artifact.

    The files of that suffix of versions other than ``version`` and ``keep`` are removed: what a run keeps
    next to the version it published for the next run (the warm-start state of :mod:`ml.warm`, the data
    snapshot of :mod:`ml.incremental`), or for the web workers (the similar-post table of :mod:`ml.similar`).
    Read them back with ``np.load(..., allow_pickle=False)``; ``mappable`` aligns the members as the artifact's
    own (the archive is then built in memory, not streamed), so that :func:`map_beside` maps them.
    """
    directory = Path(model_dir)
    path = directory / f"{version}{suffix}"
    write_atomically(path, _aligned_archive(arrays) if mappable else lambda handle: np.savez(handle, **arrays))
    kept = {f"{v}{suffix}" for v in (version, *keep)}
    for old in directory.glob(f"*{suffix}"):
        if old.name not in kept:
            old.unlink(missing_ok=True)
    return path


def map_beside(model_dir: str | os.PathLike, version: str, suffix: str) -> dict[str, np.ndarray]:
    """The arrays of ``<version><suffix>`` written by :func:`save_beside` with ``mappable``: the large ones mapped
    read-only (the processes of a host share one copy), each member's CRC checked first, so a damaged file is
    refused rather than served. Raises OSError (FileNotFoundError when missing), ValueError or BadZipFile."""
    with (Path(model_dir) / f"{version}{suffix}").open("rb") as handle:
        return _map_archive(handle, check_crc=True)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable metadata: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: not a {FORMAT_NAME} metadata file")
    if document.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {document.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    sha = document.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ArtifactError(f"{path}: missing or malformed sha256")
    if not isinstance(document.get("arrays"), dict) or not all(
        isinstance(spec, dict) for spec in document["arrays"].values()
    ):
        raise ArtifactError(f"{path}: missing or malformed array list")
    for key in ("num_users", "num_items"):
        if not isinstance(document.get(key), int):
            raise ArtifactError(f"{path}: missing or malformed {key}")
    return document


def _aligned_archive(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed zip of one ``.npy`` per array, as ``np.savez`` writes, with every member's data aligned.

    A padding extra field in each local header moves the member's data to a multiple of :data:`_ALIGN`;
    ``np.load`` and every zip reader skip it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            data = member.getvalue()
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            start = buffer.tell() + _LOCAL_HEADER.size + len(info.filename.encode())
            if len(data) >= zipfile.ZIP64_LIMIT:
                start += 20  # the zip64 sizes field zipfile adds to the local header
            pad = -start % _ALIGN
            pad += _ALIGN if pad < 4 else 0  # a field is at least its 4-byte header
            info.extra = struct.pack("<HH", _PADDING_FIELD, pad - 4) + bytes(pad - 4)
            archive.writestr(info, data)
    return buffer.getvalue()


def _map_archive(handle: io.BufferedReader, check_crc: bool = False) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of an open ``.npz``: large aligned stored ones mapped read-only, the rest read.

    ``check_crc`` checks a mapped member's CRC too (a read one is checked by the zip reader); the artifact's
    own archive is checked whole by its sha256 instead."""
    arrays: dict[str, np.ndarray] = {}
    mapped = None
    with zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not a .npy")
            name = info.filename[: -len(".npy")]
            array = None
            if info.compress_type == zipfile.ZIP_STORED and info.file_size >= _MAP_BYTES:
                handle.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
                if fields[0] != b"PK\x03\x04":
                    raise ValueError(f"member {info.filename!r}: bad local header")
                start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
                handle.seek(start)
                shape, fortran, dtype = _npy_header(handle)
                offset = handle.tell()
                if dtype.hasobject or offset + dtype.itemsize * int(np.prod(shape)) > start + info.file_size:
                    raise ValueError(f"member {info.filename!r}: header does not match its size")
                if offset % _ALIGN == 0:
                    if mapped is None:
                        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                    if check_crc:
                        with memoryview(mapped) as view:
                            if zlib.crc32(view[start : start + info.file_size]) != info.CRC:
                                raise ValueError(f"member {info.filename!r}: CRC mismatch (damaged)")
                    count = int(np.prod(shape))
                    flat = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
                    array = flat.reshape(shape, order="F" if fortran else "C")
            if array is None:
                with archive.open(info) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
            arrays[name] = array
    return arrays


def _npy_header(handle: io.BufferedReader) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"unsupported .npy format version {version}")


def _pack_strings(values: list[str], what: str) -> np.ndarray:
    """One UTF-8 blob of the values separated by NUL (a byte no id, tag or name may contain)."""
    if any(_SEPARATOR in v for v in values):
        raise ValueError(f"{what} contains a NUL character, which the artifact cannot store")
    return np.frombuffer(_SEPARATOR.join(values).encode("utf-8"), dtype=np.uint8)


def _unpack_strings(blob: np.ndarray, count: int, what: str) -> list[str]:
    if count == 0:
        if len(blob):
            raise ValueError(f"{what}: data present for zero entries")
        return []
    values = blob.tobytes().decode("utf-8").split(_SEPARATOR)
    if len(values) != count:
        raise ValueError(f"{what}: {len(values)} entries, expected {count}")
    return values


def _to_arrays(model: RecModel) -> dict[str, np.ndarray]:
    """Every array to store: the model's numeric arrays, plus strings packed without pickle."""
    # Tags and communities repeat across posts: store each distinct one once, and indices.
    tag_vocabulary = sorted({tag for tags in model.item_tags for tag in tags})
    tag_index = {tag: i for i, tag in enumerate(tag_vocabulary)}
    tag_indptr = np.zeros(model.num_items + 1, dtype=np.int64)
    tag_indptr[1:] = np.cumsum([len(tags) for tags in model.item_tags])
    tag_indices = np.array([tag_index[t] for tags in model.item_tags for t in tags], dtype=np.int32)
    communities = sorted(set(model.item_community_ids))
    community_index = {c: i for i, c in enumerate(communities)}
    return {
        **_user_id_arrays(model),
        "item_ids": _pack_strings(model.item_ids, "a post id"),
        "tag_vocabulary": _pack_strings(tag_vocabulary, "a tag"),
        "tag_counts": np.array([len(tag_vocabulary)], dtype=np.int64),
        "item_tag_indptr": tag_indptr,
        "item_tag_indices": tag_indices,
        "community_vocabulary": _pack_strings(communities, "a community id"),
        "community_counts": np.array([len(communities)], dtype=np.int64),
        "item_community": np.array([community_index[c] for c in model.item_community_ids], dtype=np.int32),
        **{name: getattr(model, name) for name in _MODEL_ARRAYS},
        **{name: getattr(model, name) for name in _FEATURE_ARRAYS},
        "item_feature_names": _pack_strings(model.item_feature_names, "an item feature name"),
        "user_feature_names": _pack_strings(model.user_feature_names, "a user feature name"),
    }


def _user_id_arrays(model: RecModel) -> dict[str, np.ndarray]:
    """The user ids' blob with their offsets and sorted order (what :class:`PackedStrings` looks up by)."""
    if isinstance(model.user_ids, PackedStrings):
        packed = model.user_ids
        return {"user_ids": packed.blob, "user_id_offsets": packed.offsets, "user_id_order": packed.order}
    blob = _pack_strings(list(model.user_ids), "a user id")
    if not model.num_users:
        return {"user_ids": blob}  # no offsets: an empty model has no strings to find
    offsets = string_offsets(blob)
    return {"user_ids": blob, "user_id_offsets": offsets, "user_id_order": sorted_order(blob, offsets)}


def _user_ids(arrays: Mapping[str, np.ndarray], count: int) -> list[str] | PackedStrings:
    """The user ids, packed and checked: offsets from the NULs, order by strictly ascending bytes.

    An artifact written before the offsets and order were stored gets them computed (private to the process).
    """
    blob = arrays["user_ids"]
    if count == 0:
        return _unpack_strings(blob, 0, "user_ids")
    offsets = string_offsets(blob)
    if len(offsets) != count + 1:
        raise ValueError(f"user_ids: {len(offsets) - 1} entries, expected {count}")
    if "user_id_order" not in arrays:
        return PackedStrings(blob, offsets, sorted_order(blob, offsets))
    stored, order = arrays["user_id_offsets"], arrays["user_id_order"]
    if stored.dtype != np.int64 or not np.array_equal(stored, offsets):
        raise ValueError("user_id_offsets do not match user_ids")
    if order.dtype != np.int32 or order.ndim != 1:
        raise ValueError("user_id_order must be an int32 array")
    try:
        check_sorted(blob, offsets, order)
    except ValueError as exc:
        raise ValueError(f"user_id_order {exc}") from exc
    _check_utf8(blob)
    return PackedStrings(blob, stored, order)


def _check_utf8(blob: np.ndarray) -> None:
    """Raise ``UnicodeDecodeError`` unless ``blob`` is UTF-8.

    Decoded :data:`UTF8_CHECK_BYTES` at a time: a web worker checks a new version's ids while it serves, and
    one decode of a million ids (tens of MB) held the GIL for tens of milliseconds, its requests waiting.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(blob), UTF8_CHECK_BYTES):
        decoder.decode(blob[start : start + UTF8_CHECK_BYTES].tobytes())
    decoder.decode(b"", final=True)


def _from_arrays(arrays: Mapping[str, np.ndarray]) -> RecModel:
    num_users = len(arrays["user_biases"])
    num_items = len(arrays["item_biases"])
    tags = _unpack_strings(arrays["tag_vocabulary"], int(arrays["tag_counts"][0]), "tag_vocabulary")
    communities = _unpack_strings(
        arrays["community_vocabulary"], int(arrays["community_counts"][0]), "community_vocabulary"
    )
    tag_indptr, tag_indices = arrays["item_tag_indptr"], arrays["item_tag_indices"]
    if (
        len(tag_indptr) != num_items + 1
        or tag_indptr[0] != 0
        or tag_indptr[-1] != len(tag_indices)
        or np.any(np.diff(tag_indptr) < 0)
    ):
        raise ValueError("item_tag_indptr does not match the items and item_tag_indices")
    item_community = arrays["item_community"].tolist()
    for name, indices, count in (
        ("item_tag_indices", tag_indices, len(tags)),
        ("item_community", arrays["item_community"], len(communities)),
    ):
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise ValueError(f"{name} holds an index out of range")
    features: dict[str, Any] = {}
    if "item_feature_names" in arrays:
        features = {name: arrays[name] for name in _FEATURE_ARRAYS}
        for side in ("item", "user"):
            count = len(arrays[f"{side}_feature_biases"])
            features[f"{side}_feature_names"] = _unpack_strings(
                arrays[f"{side}_feature_names"], count, f"{side}_feature_names"
            )
    flat_tags = [tags[j] for j in tag_indices.tolist()]
    bounds = tag_indptr.tolist()
    return RecModel(
        user_ids=_user_ids(arrays, num_users),
        item_ids=_unpack_strings(arrays["item_ids"], num_items, "item_ids"),
        item_tags=[tuple(flat_tags[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)],
        item_community_ids=[communities[c] for c in item_community],
        **{name: arrays[name] for name in _MODEL_ARRAYS},
        **features,
    )
