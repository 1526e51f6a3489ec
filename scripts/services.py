"""Make sure the PostgreSQL and Redis servers the service needs are up (used by ``make run`` and ``make test``).

For each server: if it answers, nothing happens. If it does not answer and it is meant to run on this
machine (localhost), the locally installed server is started; if none is installed, the script stops with
a message naming what is missing and how to get it. A PostgreSQL server that answers but refuses the URL's
role or password stops it with one line naming ``DATABASE_URL``, what went wrong and what to do
(:class:`ml.db.connection.ConnectError`). ``--create-database`` also creates the PostgreSQL database of the URL
if it does not exist yet.

    python scripts/services.py [--database-url URL] [--redis-url URL] [--create-database]

The URLs default to the service's configuration (DATABASE_URL, REDIS_URL, or a ``.env`` file).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ml.db.connection  # noqa: E402
from common.config import ConfigError, load_settings  # noqa: E402

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
WAIT_SECONDS = 30


def postgres_up(url: str) -> bool:
    """Whether the PostgreSQL server of ``url`` answers (on its ``postgres`` database).

    A server that answers but refuses the URL's role or password raises
    :class:`ml.db.connection.ConnectError` (one line saying what to do): starting a server would not help.
    """
    try:
        ml.db.connection.connect(url, database="postgres").close()
    except ml.db.connection.ConnectError as exc:
        if exc.kind == "unreachable":
            return False
        if exc.kind == "database":
            return True  # the server answered; only its postgres database is missing
        raise
    return True


def redis_up(url: str) -> bool:
    """Whether the Redis server of ``url`` answers PING."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def start_postgres() -> str | None:
    """Start the locally installed PostgreSQL cluster; return what was run, or None if none is installed."""
    if shutil.which("pg_ctlcluster") and glob.glob("/etc/postgresql/*/main"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    elif shutil.which("pg_ctl") and os.environ.get("PGDATA"):
        cmd = ["pg_ctl", "start", "-w", "-l", os.path.join(os.environ["PGDATA"], "server.log")]
    else:
        return None
    subprocess.run(cmd, check=False)
    return " ".join(cmd)


def start_redis(url: str) -> str | None:
    """Start a local redis-server on the URL's port; return what was run, or None if it is not installed."""
    if not shutil.which("redis-server"):
        return None
    port = str(urlsplit(url).port or 6379)
    cmd = [
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "--port",
        port,
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    subprocess.run(cmd, check=False)
    return " ".join(cmd)


def ensure(name: str, variable: str, url: str, is_up, start, install_hint: str) -> None:
    """Check one server, start it locally if needed, and exit with a clear message if it cannot be had."""
    if is_up(url):
        return
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        sys.exit(
            f"error: {name} at {host} does not answer; start it or fix {variable}={ml.db.connection.redact_url(url)}"
        )
    started = start()
    if started is None:
        sys.exit(f"error: {name} is not running on {host or 'localhost'} and is not installed here. {install_hint}")
    print(f"started {name}: {started}", flush=True)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if is_up(url):
            return
        time.sleep(0.5)
    sys.exit(
        f"error: started {name} ({started}) but it does not answer at {variable}={ml.db.connection.redact_url(url)} "
        f"after {WAIT_SECONDS} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--create-database", action="store_true")
    args = parser.parse_args(argv)
    if not (args.database_url and args.redis_url):
        settings = load_settings()
        args.database_url = args.database_url or settings.database_url
        args.redis_url = args.redis_url or settings.redis_url
    ensure(
        "PostgreSQL",
        "DATABASE_URL",
        args.database_url,
        postgres_up,
        start_postgres,
        "Install it (Debian/Ubuntu: apt-get install postgresql) or point DATABASE_URL at a running server.",
    )
    ensure(
        "Redis",
        "REDIS_URL",
        args.redis_url,
        redis_up,
        lambda: start_redis(args.redis_url),
        "Install it (Debian/Ubuntu: apt-get install redis-server) or point REDIS_URL at a running server.",
    )
    if args.create_database:
        if ml.db.connection.create_database(args.database_url):
            print(f"created database {urlsplit(args.database_url).path.lstrip('/')}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, ml.db.connection.ConnectError) as exc:
        sys.exit(f"error: {exc}")
