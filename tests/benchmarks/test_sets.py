"""The distinct-keys benchmark runs end to end and reports each case side by side (not their values)."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_sets_benchmark_reports_numpy_and_ml_sets_side_by_side():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sets", "--keys", "20000", "--users", "500", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| ([^|]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$", done.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == ["distinct pair keys", "distinct user ids", "1,000 pair keys looked up"]
