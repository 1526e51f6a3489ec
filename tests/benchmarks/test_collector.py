"""The collector benchmark runs end to end and reports the collections around a model swap."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_collector_benchmark_reports_the_collections_it_asked_for_around_the_swap():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.collector", "--users", "3000", "--requests", "400"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"published at ([\d.]+) s and swapped in at ([\d.]+) s", done.stdout)
    asked = re.findall(r"^\| [\d.]+ \| 0 \| (\d+) \| ([\d.]+) \| this benchmark \|$", done.stdout, re.MULTILINE)
    assert len(asked) == 2 and all(int(walked) > 0 for walked, _ in asked)
    assert re.search(r"^collections after the publish: [1-9]\d*, the longest [\d.]+ ms$", done.stdout, re.MULTILINE)
