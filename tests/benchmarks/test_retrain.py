"""The retrain benchmark's quick start runs end to end: a short first fit, then a warm cycle that starts warm."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from testing.processes import REPO


@pytest.mark.parametrize("arrival_minutes", [None, 600])
def test_quick_start_measures_a_warm_cycle_after_a_short_first_fit(database_url, pg_conn, redis_url, arrival_minutes):
    # pg_conn drops the tables the benchmark imports; the benchmark deletes its own Redis keys.
    arrival = [] if arrival_minutes is None else ["--arrival-minutes", str(arrival_minutes)]
    env = {**os.environ, "MAX_POST_AGE_DAYS": "30"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.retrain", "--sizes", "default", "--quick-start", "1", *arrival,
         "--database-url", database_url, "--redis-url", redis_url],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| default | ")]
    assert len(rows) == 3, done.stdout  # the import and the reader, then the two cycles
    assert "| full, LIGHTFM_EPOCHS=1 (a quick start) (full) |" in rows[1]
    assert "| warm (warm) |" in rows[2] and "| incremental (" in rows[2]  # it started warm, reading what arrived
    assert "On the future" not in done.stdout  # the comparisons a quick start skips are not printed empty
    assert "MAX_POST_AGE_DAYS of the runs 30" in done.stdout  # the service's setting, from the environment
    # Half the held-back tenth of 50,000 interactions is 2,500; ten hours of the demo's 90 days bring a few hundred.
    read = int(re.search(r"\| incremental \(([\d,]+)\)", rows[2]).group(1).replace(",", ""))
    if arrival_minutes is None:
        assert read > 2_000
    else:
        assert 0 < read < 1_000
        assert "the warm run's arrival the 600 minutes after its data" in done.stdout
