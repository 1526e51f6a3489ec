"""Cheap checks of the dependencies for ``/health``, safe for a load balancer to call every second.

Redis is pinged with the request client's short timeouts (at most once per ``ttl``); PostgreSQL, which only
the training job needs, is reported for information and probed at most every ``ttl`` seconds, because
opening a connection costs far more than the health check itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None
    error: str | None


class CachedProbe:
    """Runs ``check`` (which raises on failure) and remembers its result for ``ttl`` seconds."""

    def __init__(self, check: Callable[[], object], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._check = check
        self._ttl = ttl
        self._clock = clock
        self._result: ProbeResult | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def result(self) -> ProbeResult:
        with self._lock:  # one probe at a time; concurrent callers share its result
            if self._result is None or self._clock() - self._checked_at >= self._ttl:
                self._result = self._run()
                self._checked_at = self._clock()
            return self._result

    def _run(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            self._check()
        except Exception as exc:  # a probe reports any failure instead of raising it
            return ProbeResult(False, None, f"{type(exc).__name__}: {exc}".strip())
        return ProbeResult(True, round((time.perf_counter() - started) * 1000, 2), None)


def postgres_check(database_url: str, timeout_seconds: int = 1) -> Callable[[], None]:
    """A check that connects to PostgreSQL and runs ``SELECT 1``."""

    def check() -> None:
        conn = psycopg2.connect(database_url, connect_timeout=timeout_seconds)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()

    return check
