"""A throwaway PostgreSQL cluster that asks for passwords, for the tests of refused connections.

The shared test server trusts every connection from 127.0.0.1 (``pg_hba.conf``), so a wrong password cannot
be refused there. This one is made with the installed ``initdb`` (as the ``postgres`` user when the tests run
as root, which initdb refuses), with ``scram-sha-256`` for every connection, on a free port; it is stopped and
removed at teardown.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from testing.processes import free_port

PASSWORD = "s3cret-for-tests"


def _bin(name: str) -> str | None:
    """A PostgreSQL server program from PATH or Debian's versioned directory (newest version)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    if not (_bin("initdb") and _bin("pg_ctl")):
        return "initdb and pg_ctl (the postgresql server package) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run initdb as"
        if not shutil.which("runuser"):
            return "running as root without runuser to run initdb as postgres"
    return None


class PasswordPostgres:
    """A private cluster on 127.0.0.1 whose superuser ``postgres`` has the password :data:`PASSWORD`."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="recsvc-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, user: str = "postgres", password: str | None = PASSWORD, database: str = "postgres") -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_postgres, *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> PasswordPostgres:
        password_file = self.dir / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
            shutil.chown(password_file, "postgres")
        self._run(
            _bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={password_file}", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "server.log"), "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start",
        )  # fmt: skip
        return self

    def close(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # never started
        shutil.rmtree(self.dir, ignore_errors=True)
