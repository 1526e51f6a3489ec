"""The model load benchmark runs end to end and reports the load's time and the longest wait it caused."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from testing.processes import REPO


@pytest.mark.parametrize("ids", ["numbered", "uuid"])
def test_model_load_benchmark_reports_the_load_and_the_waits_beside_idle(ids):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.model_load", "--users", "20000", "--loads", "2", "--ids", ids],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"model 20000 users ({ids} ids)" in done.stdout
    assert re.search(r"^load of a version: median \d+ ms$", done.stdout, re.MULTILINE)
    waits = re.search(
        r"during a load: ([\d.]+) ms \(median over the loads ([\d.]+) ms\); over as long idle: ([\d.]+) ms", done.stdout
    )
    assert waits and all(float(w) > 0 for w in waits.groups())
