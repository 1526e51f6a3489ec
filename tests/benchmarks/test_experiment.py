"""The experiment simulation (benchmarks/experiment.py) end to end, smaller: the report finds the model better
than the popularity feed with the true difference inside its interval, and no difference between equals."""

from __future__ import annotations

import json
import subprocess
import sys

from testing.environment import TEST_DATABASE_URL
from testing.processes import REPO


def test_the_report_finds_the_planted_difference_and_none_between_equals(tmp_path):
    out = tmp_path / "experiment.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.experiment", "--users", "800", "--interactions", "30000", "--seeds", "3",
         "--database-url", TEST_DATABASE_URL, "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    ab = result["a_b"]
    assert ab["p_value"] < 0.05 and ab["relative_difference"] > 0
    assert ab["ci"][0] <= ab["true_relative_difference"] <= ab["ci"][1]
    assert result["a_a"]["differences_found"] <= 1  # 3 seeds of equal variants: at most one false positive
    assert "A/A: a difference (p < 0.05) in" in done.stdout
