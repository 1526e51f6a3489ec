"""The demo-data generator: valid, deterministic, realistic in shape, and its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import demo
from ml.csv_files import read_dataset_dir
from ml.dataset import COLUMNS, INTERACTION_TYPES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    demo.generate(out)
    return out


def _bytes(path: Path) -> dict[str, bytes]:
    return {name: (path / f"{name}.csv").read_bytes() for name in COLUMNS}


def test_default_size_round_trips_through_the_reader(default_dir):
    ds = read_dataset_dir(default_dir)
    assert ds.num_users == 500
    assert ds.num_items == 2016
    assert ds.num_interactions == 50_000
    assert 20 <= len(ds.community_ids) <= 40
    assert sorted(p.name for p in default_dir.iterdir()) == sorted(f"{n}.csv" for n in COLUMNS)


def test_same_seed_same_bytes_other_seed_other_data(default_dir, tmp_path):
    demo.generate(tmp_path / "again")
    assert _bytes(tmp_path / "again") == _bytes(default_dir)
    demo.generate(tmp_path / "other", seed=7)
    other = _bytes(tmp_path / "other")
    assert all(other[name] != data for name, data in _bytes(default_dir).items() if name != "communities")


def test_shape_is_realistic(default_dir):
    ds = read_dataset_dir(default_dir)
    # Each user follows 1-5 distinct communities.
    per_user = np.bincount(ds.follow_user, minlength=ds.num_users)
    assert per_user.min() >= 1 and per_user.max() <= 5
    pairs = ds.follow_user.astype(np.int64) * len(ds.community_ids) + ds.follow_community
    assert len(np.unique(pairs)) == len(pairs)
    # Mostly fans, some moderators and artists.
    roles = {r: ds.user_roles.count(r) for r in set(ds.user_roles)}
    assert set(roles) == {"fan", "moderator", "artist"} and roles["fan"] > 0.8 * ds.num_users
    # Posts carry 1-4 tags.
    assert {len(t) for t in ds.item_tags} <= {1, 2, 3, 4}
    # view >> like > comment.
    views, likes, comments = np.bincount(ds.inter_type, minlength=len(INTERACTION_TYPES))
    assert views > 2 * likes and likes > comments > 0
    # Long tail: the top 10% of posts gather a large share of the interactions.
    counts = np.sort(np.bincount(ds.inter_item, minlength=ds.num_items))[::-1]
    assert counts[: ds.num_items // 10].sum() > 0.4 * counts.sum()
    # About 90 days, and never an interaction before its post, a post before its author signed up.
    span_days = (ds.inter_time.max() - ds.item_time.min()) / 86400
    assert 80 <= span_days <= 95
    assert (ds.inter_time >= ds.item_time[ds.inter_item]).all()


def test_users_engage_most_with_communities_they_follow(default_dir):
    ds = read_dataset_dir(default_dir)
    followed = set(zip(ds.follow_user.tolist(), ds.follow_community.tolist(), strict=True))
    communities = ds.item_community[ds.inter_item].tolist()
    in_followed = np.array([(u, c) in followed for u, c in zip(ds.inter_user.tolist(), communities, strict=True)])
    # About 70% of views go through followed communities, far above what chance would give.
    assert in_followed.mean() > 0.6


def test_user_interactions_are_predictable_over_time(default_dir):
    """A user's later interactions share the tags of the earlier ones more than other users' do."""
    ds = read_dataset_dir(default_dir)
    tags = sorted({t for row in ds.item_tags for t in row})
    index = {t: k for k, t in enumerate(tags)}
    item_tags = np.zeros((ds.num_items, len(tags)))
    for i, row in enumerate(ds.item_tags):
        item_tags[i, [index[t] for t in row]] = 1
    cut = np.median(ds.inter_time)
    early, late = np.zeros((ds.num_users, len(tags))), np.zeros((ds.num_users, len(tags)))
    np.add.at(early, ds.inter_user[ds.inter_time < cut], item_tags[ds.inter_item[ds.inter_time < cut]])
    np.add.at(late, ds.inter_user[ds.inter_time >= cut], item_tags[ds.inter_item[ds.inter_time >= cut]])
    active = (early.sum(1) > 20) & (late.sum(1) > 20)
    early = early[active] / np.linalg.norm(early[active], axis=1, keepdims=True)
    late = late[active] / np.linalg.norm(late[active], axis=1, keepdims=True)
    similarity = early @ late.T
    same_user = np.diag(similarity).mean()
    other_users = (similarity.sum() - np.trace(similarity)) / (similarity.size - len(similarity))
    assert same_user > other_users + 0.1


def test_small_and_empty_sizes(tmp_path):
    counts = demo.generate(tmp_path / "small", users=3, posts=2, interactions=0, seed=1)
    assert counts["interactions"] == 0
    ds = read_dataset_dir(tmp_path / "small")
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 2, 0)
    with pytest.raises(ValueError, match="at least 1"):
        demo.generate(tmp_path / "bad", users=0)


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "ml.demo", "--out", str(out), "--users", "50", "--posts", "80"]
    result = subprocess.run([*args, "--interactions", "1000", "--seed", "3"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1000 interactions" in result.stdout
    assert read_dataset_dir(out).num_interactions == 1000
    bad = subprocess.run([*args, "--interactions", "-5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--interactions at least 0" in bad.stderr
