"""``make cluster``: a local Redis Cluster of three masters, its REDIS_URL printed, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from common.recs_cache import RecsCache
from common.redis_clients import cluster_nodes, worker_client
from testing.environment import REDIS_PREFIX
from testing.processes import running

REPO = Path(__file__).resolve().parents[2]


def node_pids(port: int) -> list[int]:
    """The pids of redis-server processes on ``port`` (their process title: ``redis-server HOST:PORT [cluster]``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if re.match(rf"\S*redis-server \S+:{port}\b", title):
                found.append(int(proc.name))
    return found


def test_make_cluster_prints_a_working_redis_url_and_stops_on_ctrl_c():
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-o", "venv", "-o", ".venv/.installed", "cluster"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the terminal's whole process group: make and its children
    )
    try:
        url = None
        for line in make.stdout:
            found = re.match(r"REDIS_URL=(redis\+cluster://\S+)$", line.strip())
            if found:
                url = found.group(1)
                break
        assert url, "make cluster printed no REDIS_URL"
        client = worker_client(url)
        try:
            assert len(client.get_primaries()) == 3
            cache = RecsCache(client, REDIS_PREFIX)
            cache.record_training_outcome({"status": "published"})
            assert cache.last_training_outcome() == {"status": "published"}
        finally:
            client.close()
        pids = [pid for _, port in cluster_nodes(url) for pid in node_pids(port)]
        assert len(pids) == 3
        os.killpg(make.pid, signal.SIGINT)
        make.wait(30)
        assert not [pid for pid in pids if running(pid)], "a node outlived make cluster"
        assert "stopped" in make.stdout.read()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
        make.stdout.close()
