"""How many CPUs this process may use: the CPUs it may run on, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's CPUs. In a container limited to 2 CPUs (``docker run --cpus 2``, a
Kubernetes CPU limit) on a 32-core host it says 32, and workers or threads sized by it overrun the quota:
the kernel then throttles the whole group for the rest of each period, which shows up as latency. The
web's worker count, Celery's worker processes and ml's training and top-K threads are sized here instead.

It lives in ``ml`` (the bottom layer, which sizes its own threads by it) and uses only the standard library;
``common.config`` and ``celeryconfig`` size the processes above by it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@functools.cache
def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The CPUs this process may run on (its affinity mask), capped by its cgroup's quota rounded up; at least 1.

    Half a CPU of quota still needs one thread to use it, hence rounding up. Cached for the process: the
    mask and the quota are set when a container starts, and ``ml.model.top_k`` asks on every call.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS)
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs' worth of time the process's cgroup may use (quota / period), or None when nothing limits it.

    Reads cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in the cgroup that
    ``proc_self_cgroup`` names and in each of its ancestors up to the mount (a parent's quota caps its
    children), and returns the smallest. A container without a cgroup namespace is told the host's path,
    which its own mount lacks: the walk then ends at the mount's root, which is the container's cgroup.
    Missing or unreadable files count as no limit: CPU counting never stops a process.
    """
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if hierarchy == "0" and not controllers:  # v2: one unified hierarchy
            quotas += _along(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu,cpuacct or as cpu
            mount = next((m for m in (cgroup_root / controllers, cgroup_root / "cpu") if m.is_dir()), None)
            if mount is not None:
                quotas += _along(mount, path, _v1_quota)
    return min(quotas, default=None)


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas ``read`` finds in ``mount/path`` and in each directory above it up to ``mount``."""
    parts = PurePosixPath(path).parts[1:]
    found = (read(mount.joinpath(*parts[:depth])) for depth in range(len(parts), -1, -1))
    return [quota for quota in found if quota is not None]


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else _ratio(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _ratio(quota: int, period: int) -> float | None:
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota
