"""The access log benchmark runs end to end and reports both loggers (not their values)."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.processes import REPO


def test_access_log_benchmark_reports_both_loggers():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.access_log", "--lines", "300", "--rounds", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| (.+) \| ([\d.]+) \|$", done.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == ["gunicorn's `Logger`", "`app.access_log.AccessLogger`"]
    assert all(float(micros) > 0 for _, micros in rows)
    assert "request_id=" not in done.stdout + done.stderr  # the lines went to their file, not the report
