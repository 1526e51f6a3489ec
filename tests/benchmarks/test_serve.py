"""The serving benchmark runs end to end and reports every figure docs/PERFORMANCE.md quotes (not their values)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from benchmarks import serve
from testing.processes import REPO

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make test-tools)")


def test_serve_benchmark_reports_throughput_latency_reloads_memory_and_memo_hits():
    # The publishes honour PUBLISH_WRITE_RATE as a Celery worker would: 500 users at 250 a second take 2 s each.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve", "--rounds", "1", "--duration", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PUBLISH_WRITE_RATE": "250"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    runs = (
        "bare Flask endpoint",
        "GET /recommendations (random known users",
        "live: 1000 fresh posts",
        "through Flask (API_FEED_SHORTCUT=0)",
        "while 3 versions are published (PRECOMPUTE_NICENESS=10)",
        "precompute at the publisher's own priority (PRECOMPUTE_NICENESS=0)",
    )
    for run in runs:
        row = next(line for line in out.splitlines() if run in line)
        assert row.rstrip().endswith("| 0 |"), row  # no failed request
        assert int(row.split("|")[-3]) > 0, row  # the workers' CPU per request
    assert re.search(r"/recommendations throughput: \d+% of the bare endpoint \(\d+% through Flask", out)
    assert re.search(r"live feed throughput: \d+% of the bare endpoint, \d+% of /recommendations without", out)
    assert re.search(r"p99 while 3 versions are published: [\d.]+x .*\([\d.]+x with PRECOMPUTE_NICENESS=0\)", out)
    # three versions published with the precompute lowered, then three at the web's priority
    assert re.search(r"new version held by every worker after: (\d+ ms, ){5}\d+ ms$", out, re.MULTILINE)
    # the load while publishing lasts from before the first version's save to after the third is held, with a
    # fifth of --duration's load before, between and after the versions (less the moment wrk takes to start)
    took, loads = re.search(
        r"each version from its save to held by every worker: (.*); the load around each three: (.*)", out
    ).groups()
    took, loads = [float(s.rstrip(" s")) for s in took.split(", ")], [float(s.rstrip(" s")) for s in loads.split(", ")]
    assert len(took) == 6 and len(loads) == 2 and min(took) >= 500 / 250
    assert loads[0] > sum(took[:3]) + 4 * 0.2 - 0.1 and loads[1] > sum(took[3:]) + 4 * 0.2 - 0.1
    assert re.search(r"impressions recorded: /recommendations at \d+% of the throughput without them", out)
    assert re.search(r"garbage collector: /recommendations at \d+% of the throughput with Python's threshold", out)
    assert re.search(r"memory of one web worker: \d+ MB RSS", out)
    hit_rate = re.search(r"list memo hit rate during the /recommendations runs: ([\d.]+) %", out)
    assert hit_rate and float(hit_rate.group(1)) > 50  # 500 users: after the warm-up nearly every page is a hit


@pytest.mark.parametrize(
    "options", [["--worker-class", "sync"], ["--threads", "1"], ["--worker-class", "gthread", "--threads", "4"]]
)
def test_gunicorn_overrides_reach_every_server_the_benchmark_compares(tmp_path, options):
    args = serve.build_parser().parse_args(options)
    env, live_env = serve.server_envs("redis://127.0.0.1:1/0", tmp_path, "live:", args)
    assert env["GUNICORN_CMD_ARGS"] == " ".join(f"{k} {v}" for k, v in zip(options[::2], options[1::2], strict=True))
    assert live_env["GUNICORN_CMD_ARGS"] == env["GUNICORN_CMD_ARGS"]
    assert (live_env["REDIS_PREFIX"], live_env["MODEL_DIR"]) == ("live:", str(tmp_path / "models-live"))


def test_without_overrides_the_servers_run_gunicorn_conf_as_it_is(tmp_path):
    env, live_env = serve.server_envs("redis://127.0.0.1:1/0", tmp_path, "live:", serve.build_parser().parse_args([]))
    assert "GUNICORN_CMD_ARGS" not in env and "GUNICORN_CMD_ARGS" not in live_env
