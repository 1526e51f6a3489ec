"""A tiny, hand-written dataset in the dataset-directory format, and a writer for variants of it.

Shared by the ML tests: ``tiny_tables()`` gives the rows (edit a copy to make a bad variant),
``write_dataset_dir(path, tables)`` writes them as the five CSV files.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ml.dataset import COLUMNS


def tiny_tables() -> dict[str, list[list[str]]]:
    """Rows of a small valid dataset: 4 users, 2 communities, 5 posts, 12 interactions (one repeat)."""
    return {
        "users": [
            ["u1", "fan", "2026-01-01T00:00:00Z"],
            ["u2", "fan", "2026-01-02T08:30:00+09:00"],
            ["u3", "artist", "2026-01-03"],
            ["u4", "moderator", "2026-01-04 12:00:00"],
        ],
        "communities": [["bts", "BTS ARMY"], ["blackpink", 'BLINK, "Pink" and all']],
        "follows": [
            ["u1", "bts", "2026-01-05T00:00:00Z"],
            ["u2", "bts", "2026-01-05T00:00:00Z"],
            ["u2", "blackpink", "2026-01-06T00:00:00.250Z"],
            ["u4", "blackpink", "2026-01-06T00:00:00Z"],
        ],
        "posts": [
            ["p1", "bts", "u3", "music|concert", "2026-02-01T10:00:00Z"],
            ["p2", "bts", "", "fanart", "2026-02-02T10:00:00Z"],
            ["p3", "blackpink", "u3", "", "2026-02-03T10:00:00Z"],
            ["p4", "blackpink", "deleted-user", "dance|mv|dance", "2026-02-04T10:00:00Z"],
            ["p5", "bts", "u1", "comeback", "2026-02-05T10:00:00Z"],
        ],
        "interactions": [
            ["u1", "p1", "view", "2026-02-01T11:00:00Z"],
            ["u1", "p1", "like", "2026-02-01T11:01:00Z"],
            ["u1", "p2", "view", "2026-02-02T11:00:00Z"],
            ["u1", "p5", "view", "2026-02-05T11:00:00Z"],
            ["u2", "p1", "view", "2026-02-01T12:00:00Z"],
            ["u2", "p3", "view", "2026-02-03T12:00:00Z"],
            ["u2", "p3", "comment", "2026-02-03T12:05:00Z"],
            ["u2", "p4", "view", "2026-02-04T12:00:00Z"],
            ["u4", "p3", "view", "2026-02-03T13:00:00Z"],
            ["u4", "p4", "like", "2026-02-04T13:00:00Z"],
            ["u4", "p4", "like", "2026-02-04T13:00:00Z"],
            ["u3", "p2", "view", "2026-02-02T14:00:00Z"],
        ],
    }


def write_dataset_dir(path: Path, tables: dict[str, list[list[str]]] | None = None) -> Path:
    """Write ``tables`` (default: :func:`tiny_tables`) as a dataset directory at ``path``; return ``path``."""
    tables = tiny_tables() if tables is None else tables
    path.mkdir(parents=True, exist_ok=True)
    for name, columns in COLUMNS.items():
        with (path / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(tables[name])
    return path


def dataset_records(dataset) -> dict[str, list[tuple]]:
    """A dataset as sorted tuples of ids and values, so two datasets compare whatever their index order."""
    users, communities, items = dataset.user_ids, dataset.community_ids, dataset.item_ids
    return {
        "users": sorted(zip(users, dataset.user_roles, strict=True)),
        "communities": sorted(zip(communities, dataset.community_names, strict=True)),
        "follows": sorted(
            (users[u], communities[c]) for u, c in zip(dataset.follow_user, dataset.follow_community, strict=True)
        ),
        "posts": sorted(
            (
                items[i],
                communities[dataset.item_community[i]],
                users[dataset.item_author[i]] if dataset.item_author[i] >= 0 else "",
                dataset.item_tags[i],
                int(dataset.item_time[i]),
            )
            for i in range(dataset.num_items)
        ),
        "interactions": sorted(
            (users[u], items[i], int(t), int(s))
            for u, i, t, s in zip(
                dataset.inter_user, dataset.inter_item, dataset.inter_type, dataset.inter_time, strict=True
            )
        ),
    }
