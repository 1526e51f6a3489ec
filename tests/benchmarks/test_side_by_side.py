"""The side-by-side benchmark serves two checkouts at once and reports each one's share of the bare endpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from testing.processes import REPO

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make test-tools)")


def side_by_side(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.side_by_side", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_side_by_side_serves_both_checkouts_and_reports_their_shares_of_bare(tmp_path):
    # Every run's requests are answered (no failed one), the floor's Redis read of a published list included.
    # --other-publishes: the other checkout (this one again) publishes its own model under keys of its own;
    # --other-redis unix: its server reads that redis-server over its Unix socket.
    done = side_by_side(
        "--other", str(REPO), "--other-publishes", "--other-redis", "unix",
        "--users", "300", "--rounds", "2", "--duration", "1", "--live",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(
        r"^\| (.+?) \| (\d+) \| (\d+) % \((\d+), (\d+)\) \| [\d.]+ \| (\d+) \| (\d+) \| (\d+) \|$",
        done.stdout,
        re.MULTILINE,
    )
    assert [row[0].split(",")[0] for row in rows] == [
        "bare Flask endpoint (constant JSON)",
        "the same after the page's one Redis read (`/bare/<user>`: the floor)",
        *["`/recommendations`"] * 2,
    ]
    assert rows[2][0].endswith("its own model and keys, Redis over a Unix socket"), done.stdout
    on_socket = re.search(r"The other server over redis-server's Unix socket: (\d+) clients on it", done.stdout)
    assert on_socket and int(on_socket.group(1)) > 0, done.stdout
    assert all(int(row[1]) > 0 and int(row[5]) > 0 for row in rows), done.stdout
    assert all(int(row[5]) >= int(row[6]) for row in rows), done.stdout  # the kernel's part of the workers' CPU
    bare, floor = rows[0], rows[1]
    assert int(floor[7]) > int(bare[7]), done.stdout  # the floor's read is redis-server's work, the bare one none
    assert "live feed (1000 fresh posts, exclusions)" in done.stdout and "failed requests: 0" in done.stdout


def test_side_by_side_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    done = side_by_side("--other", str(tmp_path))
    assert done.returncode == 2 and "is not a checkout of this project" in done.stderr
