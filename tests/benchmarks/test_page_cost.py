"""The page-cost benchmark runs end to end: its six runs, and a returning user's page without a Redis read."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_page_cost_benchmark_reports_each_runs_cpu_and_redis_reads():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.page_cost", "--users", "3000", "--requests", "200", "--rounds", "1",
         "--returning", "50"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| ([^|]+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", done.stdout, re.MULTILINE)
    assert [row[0].split(" (")[0].split(",")[0] for row in rows] == [
        "bare Flask endpoint",
        "GET /recommendations",
        "the same through Flask",
        "GET /recommendations",
        "the same without exclusions",
        "GET /recommendations",
    ], done.stdout
    (_, bare_us, bare_x, bare_reads, _), (_, recs_us, _, recs_reads, _), flask, live, unexcluded, returning = rows
    assert int(bare_us) > 0 and bare_x == "1.0" and bare_reads == "0.00"
    assert int(recs_us) > int(bare_us) and float(recs_reads) > 0  # most users are new to the worker
    assert int(flask[1]) > 0 and float(flask[3]) > 0
    assert int(live[1]) > 0 and float(live[3]) > 0
    assert int(unexcluded[1]) > 0 and float(unexcluded[3]) > 0
    assert returning[3] == "0.00", "a returning user's page should need no Redis read"
