"""The Redis read benchmark runs end to end and reports its three reads' costs (not their values)."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_redis_read_benchmark_reports_client_and_server_cpu_of_each_read():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.redis_read", "--users", "300", "--calls", "300", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| `[^|]+ \| (\d+) \| (\d+) \| (\d+) \|$", done.stdout, re.MULTILINE)
    assert len(rows) == 3, done.stdout
    assert all(int(wall) > 0 for _, _, wall in rows)
