"""The in-memory dataset: the five tables of the dataset format (DESIGN section 3), indexed.

Ids are mapped to dense integer indices once, here, so every later stage (features, training, ranking,
evaluation) works on numpy arrays. Readers of CSV directories and of PostgreSQL both end in
:func:`build_dataset`, which also owns the validation rules, so a bad row is refused the same way
whichever source it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERACTION_TYPES: tuple[str, ...] = ("view", "like", "comment")
MAX_ID_LENGTH = 128


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users, communities, follows, posts and interactions, with ids mapped to indices.

    Attributes
    ----------
    user_ids, user_roles : list of str, length U
    community_ids, community_names : list of str, length C
    follow_user, follow_community : int32 arrays, length F (indices into users and communities)
    item_ids : list of str, length I (posts)
    item_community : int32 array, length I (index into communities)
    item_author : int32 array, length I (index into users, -1 when empty or not a known user)
    item_tags : list of tuple of str, length I
    item_time : int64 array, length I (post creation, Unix seconds UTC)
    inter_user, inter_item : int32 arrays, length N
    inter_type : int8 array, length N (index into INTERACTION_TYPES)
    inter_time : int64 array, length N (Unix seconds UTC); repeats of a (user, post) pair are kept
    """

    user_ids: list[str]
    user_roles: list[str]
    community_ids: list[str]
    community_names: list[str]
    follow_user: np.ndarray
    follow_community: np.ndarray
    item_ids: list[str]
    item_community: np.ndarray
    item_author: np.ndarray
    item_tags: list[tuple[str, ...]]
    item_time: np.ndarray
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_type: np.ndarray
    inter_time: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return int(self.inter_user.shape[0])
