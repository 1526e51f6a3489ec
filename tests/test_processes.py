"""The test support's process helpers (testing.processes): a server that fails to start leaves nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from testing.processes import BARE_GUNICORN_CONFIG, GunicornServer, free_port, running


class FailingCheck(GunicornServer):
    """A server whose readiness check raises, as a scrape of /metrics answered with a 500 once did."""

    def _ready(self) -> bool:
        self.started_pid = self.master_pid
        raise ValueError("unreadable /metrics")


def test_a_readiness_check_that_raises_stops_the_gunicorn_it_started(tmp_path):
    server = FailingCheck({}, workers=1, log_path=tmp_path / "gunicorn.log", app="benchmarks.bare_app:app",
                          config=BARE_GUNICORN_CONFIG)  # fmt: skip
    with pytest.raises(ValueError, match="unreadable /metrics"):
        server.start()
    assert not running(server.started_pid)


def test_a_port_taken_after_it_was_chosen_is_chosen_again(tmp_path):
    """free_port only finds a port free at that moment; CI once saw another process take it before gunicorn
    bound it, and the server refused to start."""
    server = GunicornServer({}, workers=1, log_path=tmp_path / "gunicorn.log", app="benchmarks.bare_app:app",
                            config=BARE_GUNICORN_CONFIG)  # fmt: skip
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start()
        try:
            assert server.port != taken and server.url.endswith(f":{server.port}")
            assert requests.get(f"{server.url}/bare", timeout=5).status_code == 200
        finally:
            assert server.stop() == 0


def test_a_free_port_is_below_the_range_outgoing_connections_take_theirs_from():
    """A port from that range can be taken by any client's connection before the server binds it."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(10_000 <= port < lowest_ephemeral for port in ports)
    assert len(set(ports)) > 40  # chosen at random, not one port over and over
