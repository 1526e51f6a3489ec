"""The retrain benchmark's quick start runs end to end: a short first fit, then a warm cycle that starts warm."""

from __future__ import annotations

import subprocess
import sys

from testing.processes import REPO


def test_quick_start_measures_a_warm_cycle_after_a_short_first_fit(database_url, pg_conn, redis_url):
    # pg_conn drops the tables the benchmark imports; the benchmark deletes its own Redis keys.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.retrain", "--sizes", "default", "--quick-start", "1",
         "--database-url", database_url, "--redis-url", redis_url],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| default | ")]
    assert len(rows) == 3, done.stdout  # the import and the reader, then the two cycles
    assert "| full, LIGHTFM_EPOCHS=1 (a quick start) (full) |" in rows[1]
    assert "| warm (warm) |" in rows[2] and "| incremental (" in rows[2]  # it started warm, reading what arrived
    assert "On the future" not in done.stdout  # the comparisons a quick start skips are not printed empty
