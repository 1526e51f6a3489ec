"""The worker memory benchmark runs end to end and reports each worker's USS, PSS and RSS (not their values)."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_worker_memory_benchmark_reports_every_workers_memory():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker_memory", "--users", "3000", "--listed-users", "1000",
         "--workers", "2", "--requests", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # no failed page, every USS under 100 MB
    assert re.search(r"100 pages in [\d.]+ s, 0 failed; load average", done.stdout)
    rows = [line for line in done.stdout.splitlines() if re.fullmatch(r"\| \d \| \d+ \| \d+ \| \d+ \| \d+ \|", line)]
    assert len(rows) == 2, done.stdout
