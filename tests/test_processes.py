"""The test support's process helpers (testing.processes): a server that fails to start leaves nothing behind."""

from __future__ import annotations

import pytest

from testing.processes import BARE_GUNICORN_CONFIG, GunicornServer, running


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
