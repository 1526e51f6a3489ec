"""Soak under reload: wrk against gunicorn while a Celery worker trains and publishes again and again.

What must hold: no request fails (every answer a 2xx, no socket error), every gunicorn worker follows each
new version, and a worker's memory does not grow from reload to reload (a reload that kept the old model
alive, or leaked its arrays, would show here).

``SOAK_SECONDS`` sets the load's duration: 20 s in ``make test``, 60 s in ``make soak`` (the figures in
docs/RELIABILITY.md come from that). ``SOAK_REPORT`` names a JSON file to write the figures to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from testing.processes import GunicornServer, access_statuses, start_worker
from testing.service import run_train

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", "20"))
# Allowed growth of a worker's resident memory from its WARM_RELOADS-th reload to its last: allocator noise,
# plus a tenth of a model per reload. Until then the worker's per-version caches are still filling (the held
# model and API_MODELS_KEPT=2 older ones, four versions' item views and live pools in app.feed.service), and
# the allocator with them: 3 to 6 MB over the first four reloads here. After that the allocator still steps
# up now and then (over 35 reloads, SOAK_SECONDS=50: one step of 3.7 MB, flat otherwise), hence 6 MB of
# noise. A worker that kept every old model alive would grow by a whole model per reload without end: the
# minute of ``make soak`` (30+ reloads) shows that far better than the 20 s run of ``make test`` (7 to 15
# reloads here), which catches gross growth.
MEMORY_NOISE_BYTES = 6 * 1024 * 1024
WARM_RELOADS = 4
# Load runs of this many seconds added after SOAK_SECONDS while a worker has not reloaded enough, at most this
# many (a worker that never follows the new versions fails on the count below, not on a hung test).
EXTRA_LOAD_SECONDS = 5
EXTRA_LOAD_RUNS = 6

# Users the model knows, a few it does not (the popularity feed), pages 1 to 5.
_LUA = """
users = {%s}
counter = 0
request = function()
  counter = counter + 1
  local offset = (counter %% 5) * 20
  return wrk.format("GET", "/recommendations/" .. users[(counter %% #users) + 1] .. "?limit=20&offset=" .. offset)
end
"""


def rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def parse_wrk(output: str) -> dict:
    """Requests, failures (non-2xx answers and socket errors) and latency percentiles from ``wrk --latency``."""
    units = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def millis(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * units[unit]

    requests_done = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    percentiles = {p: millis(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.MULTILINE)}
    return {
        "requests": requests_done,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, socket.groups())) if socket else 0,
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "latency_ms": percentiles,
    }


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_soak_under_reload_no_failure_and_no_memory_growth(
    loaded_db, cache, service_env, services, celery_client, tmp_path
):
    start_worker(services, service_env)
    first = run_train(celery_client)
    assert first["status"] == "published", first
    model_bytes = Path(service_env["MODEL_DIR"], f"{first['version']}.npz").stat().st_size  # pruned later
    with GunicornServer(service_env, workers=2, log_path=tmp_path / "gunicorn.log").start() as server:
        with loaded_db.cursor() as cur:
            cur.execute("SELECT DISTINCT user_id FROM interactions ORDER BY user_id LIMIT 100")
            users = [row[0] for row in cur.fetchall()] + ["new-user-1", "new-user-2"]
        script = tmp_path / "feed.lua"
        script.write_text(_LUA % ", ".join(json.dumps(u) for u in users))

        published, failed_runs, stop = [first["version"]], [], threading.Event()
        reloads: dict[str, list[tuple[str, int]]] = {}  # worker pid -> [(version, RSS right after loading it)]

        def train_repeatedly():
            while not stop.is_set():
                result = run_train(celery_client, timeout=120)
                (published if result["status"] == "published" else failed_runs).append(result["version"] or result)
                stop.wait(1.0)

        def watch_reloads():
            while not stop.is_set():
                try:
                    held = server.worker_versions()
                except Exception:  # noqa: BLE001 - a busy server may answer /metrics late; look again
                    held = {}
                for pid, version in held.items():
                    seen = reloads.setdefault(pid, [])
                    if not seen or seen[-1][0] != version:
                        seen.append((version, rss_bytes(int(pid))))
                stop.wait(0.2)

        def load(seconds: int) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["wrk", "--latency", "-t2", "-c8", f"-d{seconds}s", "-s", str(script), server.url],
                capture_output=True, text=True, timeout=seconds + 60,
            )  # fmt: skip

        def short_of_reloads() -> bool:
            return len(reloads) < 2 or any(len(seen) < WARM_RELOADS + 2 for seen in list(reloads.values()))

        threads = [threading.Thread(target=train_repeatedly), threading.Thread(target=watch_reloads)]
        for thread in threads:
            thread.start()
        try:
            # The memory check needs WARM_RELOADS + 2 reloads per worker; a slow machine publishes fewer in
            # SOAK_SECONDS, so the load (and training) goes on in short runs until each has them, up to a cap.
            wrks = [load(SOAK_SECONDS)]
            while short_of_reloads() and len(wrks) <= EXTRA_LOAD_RUNS:
                wrks.append(load(EXTRA_LOAD_SECONDS))
        finally:
            stop.set()
            for thread in threads:
                thread.join(150)
        final_rss = {pid: rss_bytes(int(pid)) for pid in reloads}
        assert server.stop() == 0, server.log()[-3000:]

    for wrk in wrks:
        assert wrk.returncode == 0, wrk.stderr
        run = parse_wrk(wrk.stdout)
        assert run["requests"] > 0
        assert run["non_2xx"] == 0 and run["socket_errors"] == 0, wrk.stdout
    figures = parse_wrk(wrks[0].stdout)
    assert not failed_runs, failed_runs
    assert len(published) >= 3, f"only {len(published)} versions published"
    assert not [entry for entry in access_statuses(server.log_path) if entry[1] >= 400]
    assert len(reloads) == 2 and not short_of_reloads(), reloads
    growth, allowed = {}, {}
    for pid, seen in reloads.items():
        after = [rss for _, rss in seen[WARM_RELOADS:] if rss is not None]
        growth[pid] = after[-1] - after[0]
        allowed[pid] = MEMORY_NOISE_BYTES + 0.1 * model_bytes * (len(after) - 1)
        assert growth[pid] <= allowed[pid], f"worker {pid} grew {growth[pid] / 2**20:.1f} MB: {seen}"

    figures.update(
        seconds=SOAK_SECONDS,
        extra_load_seconds=EXTRA_LOAD_SECONDS * (len(wrks) - 1),
        versions_published=len(published),
        reloads_per_worker={pid: len(seen) - 1 for pid, seen in reloads.items()},
        rss_mb_after_each_reload={pid: [round(rss / 2**20, 1) for _, rss in seen] for pid, seen in reloads.items()},
        rss_mb_at_end={pid: round(rss / 2**20, 1) for pid, rss in final_rss.items() if rss},
        rss_growth_mb_second_to_last_reload={pid: round(g / 2**20, 2) for pid, g in growth.items()},
        rss_growth_mb_allowed={pid: round(a / 2**20, 2) for pid, a in allowed.items()},
        model_artifact_kb=round(model_bytes / 1024, 1),
    )
    print(json.dumps(figures, indent=1))
    if os.environ.get("SOAK_REPORT"):
        Path(os.environ["SOAK_REPORT"]).write_text(json.dumps(figures, indent=1))
