"""ml.cpus: the CPUs this process may use, from its affinity and its cgroup's quota (v2 and v1 files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import Settings
from ml.cpus import cgroup_cpu_quota, usable_cpus

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path):
    """A fake /sys/fs/cgroup; the fake /proc/self/cgroup is ``root.parent / "proc-self-cgroup"``."""
    return tmp_path / "cgroup"


def quota(root: Path, proc_self_cgroup: str) -> float | None:
    write(root.parent / "proc-self-cgroup", proc_self_cgroup)
    return cgroup_cpu_quota(root, root.parent / "proc-self-cgroup")


def test_v2_quota_is_quota_over_period(root):
    write(root / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    assert quota(root, "0::/kubepods/pod1\n") == 1.5


def test_v2_max_means_no_limit(root):
    write(root / "app" / "cpu.max", "max 100000\n")
    assert quota(root, "0::/app\n") is None


def test_v2_a_parents_quota_caps_its_children(root):
    write(root / "cpu.max", "max 100000\n")
    write(root / "parent" / "cpu.max", "50000 100000\n")
    write(root / "parent" / "child" / "cpu.max", "400000 100000\n")
    assert quota(root, "0::/parent/child\n") == 0.5


def test_v2_a_container_that_sees_its_cgroup_as_the_root(root):
    """Without a cgroup namespace /proc/self/cgroup names the host's path, which the container's mount lacks."""
    write(root / "cpu.max", "200000 100000\n")
    assert quota(root, "0::/system.slice/docker-0123.scope\n") == 2.0


def test_v1_cfs_quota_over_period_under_either_mount_name(root):
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert quota(root, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n") == 3.0
    write(root / "cpu" / "cpu.cfs_quota_us", "50000\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert quota(root, "2:cpuacct:/\n1:cpu:/\n0::/\n") == 0.5  # a hybrid host like this one


def test_v1_quota_minus_one_means_no_limit(root):
    write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert quota(root, "1:cpu:/\n") is None


@pytest.mark.parametrize("content", ["", "garbage\n", "0::/nowhere\n", "1:cpu:/missing\n"])
def test_missing_or_unreadable_files_mean_no_known_limit(root, content):
    write(root / "cpu" / "cpu.cfs_quota_us", "not a number\n")
    assert quota(root, content) is None
    assert cgroup_cpu_quota(root, root.parent / "no-such-file") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(root):
    affinity = len(os.sched_getaffinity(0))
    write(root.parent / "proc-self-cgroup", "0::/limited\n")
    write(root / "limited" / "cpu.max", "50000 100000\n")
    assert usable_cpus(root, root.parent / "proc-self-cgroup") == 1  # half a CPU is still one to run on
    write(root.parent / "unlimited", "0::/\n")
    assert usable_cpus(root, root.parent / "unlimited") == affinity
    write(root.parent / "generous", "0::/generous\n")
    write(root / "generous" / "cpu.max", f"{(affinity + 8) * 100000} 100000\n")
    assert usable_cpus(root, root.parent / "generous") == affinity


def test_the_services_default_sizes_follow_the_affinity_mask():
    """A process pinned to one CPU (taskset, a cpuset) sizes its web workers and ml threads for one, and its
    Celery worker for two (the floor that keeps a refresh from waiting behind a training run)."""
    probe = (
        "import json, os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from common.config import load_settings; from ml.cpus import usable_cpus; import celeryconfig as c;"
        "settings = load_settings({}, dotenv=False);"
        "print(json.dumps([usable_cpus(), settings.api_workers, c.celery_settings(settings)['worker_concurrency']]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [1, 1, 2]


def test_settings_default_to_the_usable_cpus():
    assert Settings().api_workers == usable_cpus()
