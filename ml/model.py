"""The trained model as plain arrays, and its vectorised top-K ranking.

:class:`RecModel` holds what LightFM computed for every user and post from their features (the
feature-combined embeddings and biases of ``get_user_representations`` / ``get_item_representations``),
so the web workers and the precompute can score without lightfm:

    score(u, i) = user_embeddings[u] · item_embeddings[i] + item_biases[i] + user_biases[u]

which is exactly what ``LightFM.predict`` returns for the same features. The user bias is constant per
user, so it does not change the ranking; it is kept so that reported scores match LightFM's.

It also keeps the embeddings and biases of the model's non-identity features (tags and communities of
posts, roles and followed communities of users), so that a post or user created after the model's data
were read gets a representation from its features alone (:meth:`RecModel.item_representations`,
:meth:`RecModel.user_representation`): the live feed scores them without a training run.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import overload

import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from ml.cpus import usable_cpus

# Scores of one block of users against all items are held at once: this many float32 values (8 MiB).
# Small enough to stay in cache between the product and the selection, large enough for a fast BLAS call.
BLOCK_ELEMENTS = 1 << 21
# One controller for the process: building one scans the loaded libraries (~0.15 ms), which
# ``threadpool_limits(...)`` did on every call, i.e. on every page a web worker ranked.
_THREADPOOLS = ThreadpoolController()
# Lookups of ids by value each PackedStrings keeps (PackedStrings.index_of): about 100 bytes each.
LOOKUPS_KEPT = 4096
# Every FENCE_STRIDE-th string in sorted order is held as a bytes object (PackedStrings): a lookup bisects that
# list in C, then probes at most log2(FENCE_STRIDE) strings in the arrays. 3 to 5 MB per million strings of 10 to 36
# characters.
FENCE_STRIDE = 16


_blas_pinned = False  # see pin_blas_to_one_thread


def _one_blas_thread():
    """A context in which BLAS runs single-threaded (see :meth:`RecModel.top_k`'s notes)."""
    return contextlib.nullcontext() if _blas_pinned else _THREADPOOLS.limit(limits=1, user_api="blas")


def pin_blas_to_one_thread() -> None:
    """Run BLAS single-threaded for the rest of this process, as every ranking here asks (a web worker).

    The per-call limit then costs nothing: entering and leaving it set every loaded BLAS's threads twice on
    every page that ranked past its precomputed list.
    """
    global _blas_pinned
    _THREADPOOLS.limit(limits=1, user_api="blas")  # kept: never restored
    _blas_pinned = True


class PackedStrings(Sequence[str]):
    """A read-only sequence of strings kept as arrays, with lookup by value: no Python object per string.

    ``blob`` holds the UTF-8 strings separated by NUL; string ``i`` is ``blob[offsets[i] : offsets[i + 1] - 1]``
    (so ``offsets`` has ``n + 1`` entries and ends at ``len(blob) + 1``); ``order`` lists the indices by
    ascending UTF-8 bytes, and :meth:`index_of` is a binary search over it: over a list of every
    :data:`FENCE_STRIDE`-th string first, then over at most that many strings of the arrays (the last
    :data:`LOOKUPS_KEPT` answers are kept).
    The arrays may be memory-mapped from the model artifact (:mod:`ml.artifact`): a web worker then holds no
    private copy of a million user ids and no dict over them (together about 130 MB per worker at 1M users).
    Build one with :func:`pack_strings`, which also checks that the strings are distinct.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, order: np.ndarray):
        self.blob, self.offsets, self.order = blob, offsets, order
        # Plain memoryviews: indexing one costs a tenth of indexing a numpy array (a lookup makes ~60).
        self._view = memoryview(np.ascontiguousarray(blob)).cast("B")
        self._starts = memoryview(np.ascontiguousarray(offsets, dtype=np.int64)).cast("B").cast("q")
        self._order = memoryview(np.ascontiguousarray(order, dtype=np.int32)).cast("B").cast("i")
        fence = _fence(blob, offsets, order)
        # A page looks its user up several times (resolving it, ranking it, filtering for it): the last lookups
        # are kept (functools' C LRU, thread-safe), so only the first costs a binary search. The search holds
        # the views, not this object, so a dropped model is freed at once (no reference cycle).
        self.index_of = lru_cache(maxsize=LOOKUPS_KEPT)(partial(_search, self._view, self._starts, self._order, fence))

    def __len__(self) -> int:
        return len(self._order)

    def _bytes(self, index: int) -> bytes:
        return _string_at(self._view, self._starts, index)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("PackedStrings index out of range")
        return self._bytes(index).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        if not len(self):
            return iter(())
        return iter(self._view.tobytes().decode("utf-8").split("\x00"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics: equal to a list, so unhashable


def _string_at(view: memoryview, starts: memoryview, index: int) -> bytes:
    return view[starts[index] : starts[index + 1] - 1].tobytes()


def _search(view: memoryview, starts: memoryview, order: memoryview, fence: list[bytes], value: str) -> int | None:
    """:meth:`PackedStrings.index_of` without its memory: the index of ``value``, or None when it is not held.

    ``fence`` holds the strings at every :data:`FENCE_STRIDE`-th position of ``order``.
    """
    target = value.encode("utf-8", "surrogatepass")
    low = max(0, bisect_right(fence, target) - 1) * FENCE_STRIDE  # the last fence string at most target, or 0
    high = min(low + FENCE_STRIDE, len(order))
    position = bisect_left(order, target, low, high, key=partial(_string_at, view, starts))
    if position < len(order):
        found = order[position]
        if _string_at(view, starts, found) == target:
            return found
    return None


def string_offsets(blob: np.ndarray) -> np.ndarray:
    """The ``offsets`` of :class:`PackedStrings` for a NUL-separated blob of at least one string."""
    ends = np.flatnonzero(blob == 0) + 1
    return np.concatenate(([0], ends, [len(blob) + 1])).astype(np.int64)


def sorted_order(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The indices of the strings by ascending UTF-8 bytes, computed without a Python object per string.

    Raises ``ValueError`` when two strings are equal.
    """
    table = _word_table(blob, offsets)
    order = np.argsort(_as_bytes(table), kind="stable").astype(np.int32)
    check_sorted(blob, offsets, order, table)
    return order


def check_sorted(blob: np.ndarray, offsets: np.ndarray, order: np.ndarray, table: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` unless ``order`` lists every string once, by strictly ascending bytes.

    Each neighbouring pair is compared a big-endian word of 8 bytes at a time, the next word only deciding the
    pairs still tied: whole-array numpy steps that let the worker's other threads run (a web worker checks a
    new version's million user ids while it serves).
    """
    count = len(offsets) - 1
    if len(order) != count or (count and (order.min() < 0 or order.max() >= count)):
        raise ValueError("the sorted order does not list every string")
    tied = np.ones(max(count - 1, 0), dtype=bool)  # neighbours equal in every word so far
    for words in table if table is not None else _word_table(blob, offsets):
        in_order = words[order]
        earlier, later = in_order[:-1], in_order[1:]
        if (tied & (later < earlier)).any():
            raise ValueError("holds duplicates or is not sorted")
        tied &= later == earlier
    if tied.any():
        raise ValueError("holds duplicates or is not sorted")


def pack_strings(values: Sequence[str]) -> PackedStrings:
    """``values`` as a :class:`PackedStrings` (raises ``ValueError`` on a NUL in a value or duplicates)."""
    if any("\x00" in v for v in values):
        raise ValueError("a string contains a NUL character")
    blob = np.frombuffer("\x00".join(values).encode("utf-8"), dtype=np.uint8)
    if not values:
        return PackedStrings(blob, np.zeros(1, np.int64), np.zeros(0, np.int32))
    offsets = string_offsets(blob)
    return PackedStrings(blob, offsets, sorted_order(blob, offsets))


def _word_table(blob: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The strings (only those of ``rows``, if given) as ``uint64`` words, 8 of a string's bytes read big-endian
    in each, zero-padded to whole words: ``table[w, i]`` is string ``i``'s word ``w``.

    Zeros sort first and no string holds one, so strings compare word by word as their bytes do. Built a
    word of every string at a time: a few numpy steps per 8 bytes of the longest string, none of which holds
    the GIL for long (a step of a value per byte of the blob held it for hundreds of milliseconds at a million
    users, and a serving worker's requests waited), and an eighth of the steps of a byte at a time.
    """
    starts = offsets[:-1] if rows is None else offsets[rows]
    lengths = (offsets[1:] if rows is None else offsets[rows + 1]) - starts - 1
    words = -(-max(1, int(lengths.max()) if len(starts) else 1) // 8)
    table = np.zeros((words, len(starts)), dtype=np.uint64)
    if not len(blob):  # only empty strings
        return table
    padded = np.concatenate((blob, np.zeros(8 * words, np.uint8)))  # every word of the last string lies within
    # The 8 bytes from every position, read big-endian: an unaligned view, no copy.
    at = np.ndarray((len(padded) - 7,), dtype=">u8", buffer=padded, strides=(1,))
    for word in range(words):
        kept = _KEPT_BYTES[np.clip(lengths - 8 * word, 0, 8)]  # the string's own bytes of the word, not what follows
        np.bitwise_and(at[starts + 8 * word], kept, out=table[word])
    return table


# _KEPT_BYTES[n]: the mask of a big-endian word's first n bytes.
_KEPT_BYTES = np.array([(1 << 64) - (1 << (64 - 8 * n)) for n in range(9)], dtype=np.uint64)


def _as_bytes(table: np.ndarray) -> np.ndarray:
    """The strings of a :func:`_word_table` as fixed-width bytes (``S``), their padding dropped when made ``bytes``."""
    return np.ascontiguousarray(table.T, dtype=">u8").view(f"S{8 * table.shape[0]}").reshape(-1)


def _fence(blob: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> list[bytes]:
    """The strings at every :data:`FENCE_STRIDE`-th position of ``order``, as bytes objects.

    Made from a word table of those strings, whose fixed-width bytes drop their padding's trailing zeros as they
    become ``bytes``: a few numpy steps rather than a Python step per string (62,500 at a million users).
    """
    return _as_bytes(_word_table(blob, offsets, np.asarray(order[::FENCE_STRIDE], dtype=np.int64))).tolist()


@dataclass(frozen=True, eq=False)
class RecModel:
    """A trained recommendation model: ids, item metadata, representations, exclusions, popularity.

    Attributes
    ----------
    user_ids : list of str or PackedStrings, length U
        Every user known at training time, including users with features but no interactions. A loaded
        artifact gives a :class:`PackedStrings` (memory-mapped, looked up without a dict).
    item_ids : list of str, length I
        Every post known at training time.
    item_tags : list of tuple of str, length I
    item_community_ids : list of str, length I
    user_embeddings : float32 array, shape (U, d)
    user_biases : float32 array, shape (U,)
    item_embeddings : float32 array, shape (I, d)
    item_biases : float32 array, shape (I,)
    exclude_indptr : int64 array, shape (U + 1,)
    exclude_indices : int32 array
        CSR rows: for each user the items never to recommend to it (the posts it interacted with and
        the posts it authored), sorted within each row.
    popular_items : int32 array
        Item indices by descending popularity (best first); every item appears once.
    popular_scores : float32 array, same length
        The popularity of each entry of ``popular_items`` (the number of users who interacted with it).
    item_feature_names : list of str, length Fi
        The model's non-identity post features, ``"tag:<tag>"`` and ``"community:<community id>"``; only
        features that some trained post had (the others kept LightFM's random initialisation).
    item_feature_embeddings : float32 array, shape (Fi, d)
    item_feature_biases : float32 array, shape (Fi,)
    user_feature_names : list of str, length Fu
        Likewise for users: ``"role:<role>"`` and ``"follows:<community id>"``.
    user_feature_embeddings : float32 array, shape (Fu, d)
    user_feature_biases : float32 array, shape (Fu,)
    fresh_calibration : float32 array, shape (2,)
        ``(scale, shift)`` mapping the score of a feature-built post onto the scale of trained posts'
        scores (see :meth:`item_representations`); ``(1, 0)`` when unknown.

    The feature arrays default to empty (a model trained before they were kept): then no new post or
    user can be represented, and :meth:`item_representations` reports every post as unknown.

    Construction checks that every array has the shape and type the others imply and raises
    ``ValueError`` otherwise, so an inconsistent model never reaches a ranking.
    """

    user_ids: Sequence[str]
    item_ids: list[str]
    item_tags: list[tuple[str, ...]]
    item_community_ids: list[str]
    user_embeddings: np.ndarray
    user_biases: np.ndarray
    item_embeddings: np.ndarray
    item_biases: np.ndarray
    exclude_indptr: np.ndarray
    exclude_indices: np.ndarray
    popular_items: np.ndarray
    popular_scores: np.ndarray
    item_feature_names: list[str] = field(default_factory=list)
    item_feature_embeddings: np.ndarray | None = None
    item_feature_biases: np.ndarray | None = None
    user_feature_names: list[str] = field(default_factory=list)
    user_feature_embeddings: np.ndarray | None = None
    user_feature_biases: np.ndarray | None = None
    fresh_calibration: np.ndarray | None = None
    _user_lookup: Callable[[str], int | None] = field(init=False, repr=False)
    _item_feature_index: dict[str, int] = field(init=False, repr=False)
    _user_feature_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        num_users, num_items = len(self.user_ids), len(self.item_ids)
        if len(self.item_tags) != num_items or len(self.item_community_ids) != num_items:
            raise ValueError(f"item_tags and item_community_ids must have one entry per item ({num_items})")
        _check_array("user_embeddings", self.user_embeddings, np.float32, 2, num_users)
        _check_array("item_embeddings", self.item_embeddings, np.float32, 2, num_items)
        if self.user_embeddings.shape[1] != self.item_embeddings.shape[1]:
            raise ValueError(
                f"user and item embeddings differ in dimension: {self.user_embeddings.shape[1]} "
                f"!= {self.item_embeddings.shape[1]}"
            )
        _check_array("user_biases", self.user_biases, np.float32, 1, num_users)
        _check_array("item_biases", self.item_biases, np.float32, 1, num_items)
        for name in ("user_embeddings", "user_biases", "item_embeddings", "item_biases"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} holds NaN or infinite values")
        _check_array("exclude_indptr", self.exclude_indptr, np.int64, 1, num_users + 1)
        _check_array("exclude_indices", self.exclude_indices, np.int32, 1)
        indptr = self.exclude_indptr
        if indptr[0] != 0 or indptr[-1] != len(self.exclude_indices) or np.any(np.diff(indptr) < 0):
            raise ValueError("exclude_indptr is not a valid CSR index pointer for exclude_indices")
        if len(self.exclude_indices) and (self.exclude_indices.min() < 0 or self.exclude_indices.max() >= num_items):
            raise ValueError("exclude_indices holds an item index out of range")
        _check_array("popular_items", self.popular_items, np.int32, 1, num_items)
        _check_array("popular_scores", self.popular_scores, np.float32, 1, num_items)
        if num_items and not np.array_equal(np.sort(self.popular_items), np.arange(num_items, dtype=np.int32)):
            raise ValueError("popular_items must list every item index exactly once")
        if isinstance(self.user_ids, PackedStrings):  # checked distinct when it was packed
            lookup = self.user_ids.index_of
        else:
            index = {user_id: i for i, user_id in enumerate(self.user_ids)}
            if len(index) != num_users:
                raise ValueError("user_ids holds duplicates")
            lookup = index.get
        object.__setattr__(self, "_user_lookup", lookup)
        for side in ("item", "user"):
            object.__setattr__(self, f"_{side}_feature_index", self._check_features(side))
        if self.fresh_calibration is None:
            object.__setattr__(self, "fresh_calibration", np.array([1.0, 0.0], dtype=np.float32))
        _check_array("fresh_calibration", self.fresh_calibration, np.float32, 1, 2)
        if not np.isfinite(self.fresh_calibration).all() or self.fresh_calibration[0] <= 0:
            raise ValueError("fresh_calibration must be finite with a positive scale")

    def _check_features(self, side: str) -> dict[str, int]:
        """Check one side's feature arrays (defaulting absent ones to empty); return the name index."""
        names = getattr(self, f"{side}_feature_names")
        dim = self.item_embeddings.shape[1]
        for suffix, empty in (("embeddings", np.zeros((0, dim), np.float32)), ("biases", np.zeros(0, np.float32))):
            if getattr(self, f"{side}_feature_{suffix}") is None:
                object.__setattr__(self, f"{side}_feature_{suffix}", empty)
        embeddings, biases = getattr(self, f"{side}_feature_embeddings"), getattr(self, f"{side}_feature_biases")
        _check_array(f"{side}_feature_embeddings", embeddings, np.float32, 2, len(names))
        _check_array(f"{side}_feature_biases", biases, np.float32, 1, len(names))
        if embeddings.shape[1] != dim:
            raise ValueError(f"{side}_feature_embeddings have dimension {embeddings.shape[1]}, the model {dim}")
        if not (np.isfinite(embeddings).all() and np.isfinite(biases).all()):
            raise ValueError(f"{side}_feature_embeddings or biases hold NaN or infinite values")
        index = {name: i for i, name in enumerate(names)}
        if len(index) != len(names):
            raise ValueError(f"{side}_feature_names holds duplicates")
        return index

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_components(self) -> int:
        return int(self.item_embeddings.shape[1])

    def user_index(self, user_id: str) -> int | None:
        """The index of ``user_id``, or None when the model does not know the user."""
        return self._user_lookup(user_id)

    def excluded_items(self, user: int) -> np.ndarray:
        """The item indices never recommended to user index ``user`` (sorted int32)."""
        return self.exclude_indices[self.exclude_indptr[user] : self.exclude_indptr[user + 1]]

    def top_k(
        self, user_indices: Iterable[int] | np.ndarray, k: int, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items of each user, best first, excluding the user's excluded items.

        Parameters
        ----------
        user_indices : array-like of int, length n
            User indices (see :meth:`user_index`).
        k : int
            How many items per user (>= 1).
        num_threads : int, optional
            Threads ranking blocks of users in parallel; default one per usable CPU
            (:func:`ml.cpus.usable_cpus`: affinity and cgroup quota). A request of a single
            block (a web page) runs in the calling thread.

        Returns
        -------
        items : int32 array, shape (n, k)
            Item indices, best first; ``-1`` pads a row when the user has fewer than ``k`` candidates.
        scores : float32 array, shape (n, k)
            Their scores (as LightFM's ``predict``); ``nan`` where ``items`` is ``-1``.

        Notes
        -----
        Users are scored in blocks of at most :data:`BLOCK_ELEMENTS` scores, one float32 BLAS product
        per block into a buffer reused by each thread, so memory stays bounded whatever the number of
        users. The item bias rides in the product as an extra factor (the user side's is 1). Excluded
        items get ``-inf`` through the exclusion CSR, and the k best of each row are found without
        sorting the row. BLAS itself runs single-threaded: the blocks are the parallelism, and OpenBLAS's
        spinning threads slow small products down many times over on a busy machine.
        """
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(users) and (users.min() < 0 or users.max() >= self.num_users):
            raise ValueError(f"user index out of range [0, {self.num_users})")
        items = np.full((len(users), k), -1, dtype=np.int32)
        scores = np.full((len(users), k), np.nan, dtype=np.float32)
        kept = min(k, self.num_items)
        if kept == 0 or len(users) == 0:
            return items, scores
        if len(users) == 1:  # a web page: one product, no item copy, no block machinery
            items[0, :kept], scores[0, :kept] = self._rank_one(int(users[0]), kept)
            return items, scores
        ranker = _BlockRanker(self, kept)
        blocks = [
            (start, users[start : start + ranker.block_users]) for start in range(0, len(users), ranker.block_users)
        ]
        threads = min(num_threads or usable_cpus(), len(blocks))
        shares = [blocks[i::threads] for i in range(threads)]

        def rank_share(share: list[tuple[int, np.ndarray]]) -> None:
            buffers = ranker.buffers(max(len(block) for _, block in share))
            for start, block in share:
                items[start : start + len(block), :kept], scores[start : start + len(block), :kept] = ranker.rank(
                    block, *buffers
                )

        with _one_blas_thread():
            if threads == 1:
                rank_share(blocks)
            else:
                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="top-k") as pool:
                    for done in [pool.submit(rank_share, share) for share in shares]:
                        done.result()
        return items, scores

    def _rank_one(self, user: int, kept: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``kept`` best items of one user (padded with -1 / nan), as :meth:`top_k` ranks them; ties in index
        order (:func:`best_first`), so the first ``k`` are the same whatever ``kept``."""
        with _one_blas_thread():
            row = self.item_embeddings @ self.user_embeddings[user]
        row += self.item_biases
        row[self.excluded_items(user)] = -np.inf
        best = best_first(row, kept)
        best_scores = row[best] + self.user_biases[user]
        missing = np.isneginf(best_scores)
        return np.where(missing, -1, best).astype(np.int32), np.where(missing, np.nan, best_scores).astype(np.float32)

    def popular(self, k: int, exclude: Iterable[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most popular items, best first, skipping the item indices in ``exclude``.

        Returns ``(items int32, scores float32)`` of length at most ``k`` (shorter only when fewer items
        remain). This is the feed of a user the model does not know, and the offline baseline.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ranked, ranked_scores = self.popular_items, self.popular_scores
        if exclude is not None:
            excluded = np.fromiter(exclude, dtype=np.int64) if not isinstance(exclude, np.ndarray) else exclude
            if len(excluded):
                # At most len(excluded) of the first k + len(excluded) items are skipped: only they are looked
                # at (the offline evaluation asks once per user; scanning every item cost minutes at 100k posts).
                head = k + len(excluded)
                keep = ~np.isin(ranked[:head], excluded)
                ranked, ranked_scores = ranked[:head][keep], ranked_scores[:head][keep]
        return ranked[:k].copy(), ranked_scores[:k].copy()

    def item_representations(
        self, tags: Sequence[Sequence[str]], community_ids: Sequence[str], calibrated: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Representations of posts the model has never seen, built from their tags and community.

        Parameters
        ----------
        tags : sequence of sequences of str, length n
            Each post's tags (repeats count once).
        community_ids : sequence of str, length n
        calibrated : bool
            Map the representation onto the scale of trained posts' scores (the default; what the live
            feed merges by). False gives LightFM's own representation of the feature row.

        Returns
        -------
        embeddings : float32 array, shape (n, d)
        biases : float32 array, shape (n,)
        known : bool array, shape (n,)
            False for a post none of whose features the model knows: its embedding and bias are 0, and
            it cannot be scored (leave it to recency or popularity).

        Notes
        -----
        The feature row of a post holds its known features (unknown tags are dropped) with weights
        summing to 1, as training normalises its rows; without an identity feature (the post has none
        yet), so uncalibrated, ``user_embeddings[u] @ embeddings[i] + biases[i] + user_biases[u]`` is
        exactly ``LightFM.predict`` for that row. A trained post's score also carries its identity
        embedding, which holds most of what its interactions taught: calibrated, the representation is
        scaled by ``fresh_calibration`` so that the score becomes the least-squares estimate of the
        score the post's features predict for a trained post (see :func:`ml.training.fresh_calibration`),
        comparable with the scores of a user's precomputed list.
        """
        if len(tags) != len(community_ids):
            raise ValueError(f"tags ({len(tags)}) and community_ids ({len(community_ids)}) differ in length")
        index = self._item_feature_index
        rows, cols = [], []
        for row, (post_tags, community) in enumerate(zip(tags, community_ids, strict=True)):
            names = dict.fromkeys([*(f"tag:{t}" for t in post_tags), f"community:{community}"])
            found = [column for column in map(index.get, names) if column is not None]
            rows.extend([row] * len(found))
            cols.extend(found)
        embeddings, biases, known = _combine(
            rows, cols, len(tags), self.item_feature_embeddings, self.item_feature_biases
        )
        if calibrated:
            scale, shift = (float(v) for v in self.fresh_calibration)
            embeddings *= scale
            biases[known] = biases[known] * scale + shift
        return embeddings, biases, known

    def user_representation(self, role: str | None, follows: Sequence[str]) -> tuple[np.ndarray, float] | None:
        """The representation of a user the model has never seen, from its role and followed communities.

        Returns ``(embedding float32 (d,), bias)``, the feature row's LightFM representation (weights
        summing to 1 over the known features, no identity feature), or None when the model knows none of
        the user's features: an empty role is no feature, so a user with neither a role nor a known
        follow keeps the popularity feed.
        """
        names = dict.fromkeys([*([f"role:{role}"] if role else []), *(f"follows:{c}" for c in follows)])
        cols = [c for c in map(self._user_feature_index.get, names) if c is not None]
        if not cols:
            return None
        embeddings, biases, _ = _combine(
            [0] * len(cols), cols, 1, self.user_feature_embeddings, self.user_feature_biases
        )
        return embeddings[0], float(biases[0])

    def rank_representation(
        self, embedding: np.ndarray, k: int, exclude: np.ndarray | None = None, bias: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of the model's items for a represented user, best first.

        Parameters
        ----------
        embedding : float32 array, shape (d,)
            From :meth:`user_representation`.
        k : int
            How many items (>= 1).
        exclude : int array, optional
            Item indices to leave out.
        bias : float
            The user's bias, added to every score (so scores match ``LightFM.predict``).

        Returns
        -------
        items : int32 array, length at most k
        scores : float32 array, same length
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.num_components:
            raise ValueError(f"embedding has dimension {vector.shape[0]}, the model {self.num_components}")
        with _one_blas_thread():
            scores = self.item_embeddings @ vector + self.item_biases
        if exclude is not None and len(exclude):
            scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        kept = min(k, self.num_items)
        if kept == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        best = best_first(scores, kept)
        best = best[np.isfinite(scores[best])]
        return best.astype(np.int32), (scores[best] + np.float32(bias)).astype(np.float32)


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` highest ``scores`` (1-D), best first, ties in index order.

    The first ``k`` of one total order, whatever ``k``: a ranking made deeper later extends the one made
    before, so a feed's continuation can be ranked only as deep as its pages have gone so far.
    """
    n = len(scores)
    if k < n:  # the k best and every score tied with the k-th (a partition alone would cut ties arbitrarily)
        candidates = np.flatnonzero(scores >= np.partition(scores, n - k)[n - k])
    else:
        candidates = np.arange(n)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def _combine(
    rows: list[int], cols: list[int], n: int, embeddings: np.ndarray, biases: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, biases, known) of ``n`` feature rows given as (row, col) pairs, each row weighted to sum 1."""
    rows_arr = np.asarray(rows, dtype=np.int64)
    counts = np.bincount(rows_arr, minlength=n)
    weights = (1.0 / counts[rows_arr]).astype(np.float32)
    matrix = sp.csr_matrix((weights, (rows_arr, np.asarray(cols, dtype=np.int64))), shape=(n, len(biases)))
    return (
        np.asarray(matrix @ embeddings, dtype=np.float32).reshape(n, embeddings.shape[1]),
        np.asarray(matrix @ biases, dtype=np.float32).reshape(n),
        counts > 0,
    )


class _BlockRanker:
    """Ranks blocks of users of one model: the scores of a block, its exclusions, its k best."""

    def __init__(self, model: RecModel, k: int):
        self.model = model
        self.selector = _TopSelector(model.num_items, k)
        width, num_items = self.selector.width, model.num_items
        # Item factors with the bias as one more column, padded with zero rows to the selector's width,
        # so one product fills the whole block. (The padding columns are set to -inf after the product:
        # an infinite factor would meet BLAS's own zero padding and raise invalid-value flags.)
        self.item_factors = np.zeros((width, model.num_components + 1), dtype=np.float32)
        self.item_factors[:num_items, :-1] = model.item_embeddings
        self.item_factors[:num_items, -1] = model.item_biases
        self.block_users = max(1, BLOCK_ELEMENTS // width)

    def buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """A scores buffer and a user-factors buffer (last column 1) for blocks of up to ``rows`` users."""
        user_factors = np.ones((rows, self.model.num_components + 1), dtype=np.float32)
        return np.empty((rows, self.selector.width), dtype=np.float32), user_factors

    def rank(
        self, block: np.ndarray, score_buffer: np.ndarray, factor_buffer: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores), each len(block) × k, best first, padded with -1 / nan."""
        model = self.model
        block_scores, user_factors = score_buffer[: len(block)], factor_buffer[: len(block)]
        user_factors[:, :-1] = model.user_embeddings[block]
        np.matmul(user_factors, self.item_factors.T, out=block_scores)
        block_scores[:, model.num_items :] = -np.inf
        rows, cols = self.exclusions(block)
        block_scores[rows, cols] = -np.inf
        top_items, top_scores = self.selector.select(block_scores)
        top_scores += model.user_biases[block][:, None]
        missing = np.isneginf(top_scores)
        top_items[missing] = -1
        top_scores[missing] = np.nan
        return top_items, top_scores

    def exclusions(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row within block, item) of every excluded pair of the users in ``block``, without a loop."""
        indptr = self.model.exclude_indptr
        starts = indptr[block]
        lengths = indptr[block + 1] - starts
        total = int(lengths.sum())
        rows = np.repeat(np.arange(len(block)), lengths)
        # Position of each excluded entry in exclude_indices: its row's start plus its rank in the row.
        row_offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return rows, self.model.exclude_indices[row_offsets + np.arange(total)]


class _TopSelector:
    """Finds the ``k`` largest scores of each row of a block, best first, in far less than a full sort.

    The columns are dealt into ``groups`` interleaved groups (column ``j`` is in group ``j % groups``).
    The k best scores of a row all lie in the k groups whose maxima are largest: any other group's
    maximum is beaten by k group maxima, so everything in it is too. So a row only needs the group
    maxima (one vectorised reduction), a partition of those, and a partition of the k × group-size
    candidates: about 2·sqrt(k·I) elements partitioned per row instead of I. Rows are :attr:`width`
    wide, a whole number of groups; the caller fills the columns past the items with ``-inf``. For few
    items the plain partition of the whole row is used.
    """

    def __init__(self, num_items: int, k: int):
        self.num_items, self.k = num_items, k
        group_size = max(1, int(round(np.sqrt(num_items / k))))
        self.groups = -(-num_items // group_size)
        if self.groups < 2 * k:  # too few groups to prune anything
            group_size, self.groups = 1, num_items
        self.group_size = group_size
        self.width = self.groups * group_size

    def select(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items int32, scores float32), each rows × k, best first, of a C-contiguous rows × width block."""
        rows, k = block.shape[0], self.k
        if self.group_size == 1:
            candidates = block[:, : self.num_items]
            groups = None
        else:
            by_group = block.reshape(rows, self.group_size, self.groups)
            maxima = by_group.max(axis=1)
            groups = np.argpartition(maxima, self.groups - k, axis=1)[:, self.groups - k :]
            # candidates[r, m * k + j] is block[r, groups[r, j] + m * self.groups]; one flat take is several
            # times faster than take_along_axis here.
            flat = (
                np.arange(rows)[:, None, None] * self.width
                + (np.arange(self.group_size) * self.groups)[None, :, None]
                + groups[:, None, :]
            )
            candidates = block.ravel().take(flat).reshape(rows, -1)
        width = candidates.shape[1]
        best = np.argpartition(candidates, width - k, axis=1)[:, width - k :]
        best_scores = np.take_along_axis(candidates, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        if groups is None:
            return best.astype(np.int32), best_scores
        items = np.take_along_axis(groups, best % k, axis=1) + (best // k) * self.groups
        return items.astype(np.int32), best_scores


def _check_array(name: str, array: np.ndarray, dtype: type, ndim: int, length: int | None = None) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
        got = f"{array.dtype} with {array.ndim} dimensions" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{name} must be a {np.dtype(dtype)} array with {ndim} dimension(s), got {got}")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {length}")
