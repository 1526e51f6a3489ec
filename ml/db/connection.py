"""Connections to PostgreSQL, and the one-line messages that say why one was refused.

A failure to connect raises :class:`ConnectError`, naming ``DATABASE_URL`` (password hidden), what went
wrong and what to do; :func:`create_database` creates the database a URL names (``make run``, benchmarks).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import extensions, sql


class ConnectError(psycopg2.OperationalError):
    """PostgreSQL could not be reached or refused the connection, said in one line for the operator.

    The message names ``DATABASE_URL`` (password hidden), what went wrong and what to do; ``kind`` is one of
    ``role``, ``password``, ``database``, ``unreachable``, ``refused`` (pg_hba.conf) or ``other``. It stays an
    ``OperationalError``, so the training task still retries it like any outage.
    """

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):
        # Celery and multiprocessing rebuild exceptions from their arguments.
        return type(self), (str(self), self.kind)


def connect(database_url: str, database: str | None = None) -> extensions.connection:
    """Open a connection that talks UTF-8 and names itself in ``pg_stat_activity``.

    ``database`` replaces the URL's database (``postgres`` to check the server or create databases). A
    connection that fails raises :class:`ConnectError` with a one-line message.
    """
    options = {"dbname": database} if database else {}
    try:
        conn = psycopg2.connect(database_url, connect_timeout=10, application_name="recsvc", **options)
    except psycopg2.OperationalError as exc:
        # The one line says all libpq said (and what to do); its multi-line original would only repeat it.
        raise connect_error(database_url, exc) from None
    conn.set_client_encoding("UTF8")
    return conn


def redact_url(database_url: str) -> str:
    """The URL (or ``key=value`` string) with its password replaced by ``***``, for messages and logs."""
    if "://" not in database_url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", database_url)
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"))


# libpq's wording (it is not localised for connection failures before the server answers).
_UNREACHABLE = re.compile(
    r"connection refused|could not translate host name|timeout expired|no route to host|network is unreachable|"
    r"could not connect to server|no such file or directory|connection timed out|server closed the connection",
    re.IGNORECASE,
)


def connect_error(database_url: str, exc: psycopg2.OperationalError) -> ConnectError:
    """Turn psycopg2's failure to connect into a :class:`ConnectError`: what went wrong, and what to do."""
    # libpq reports each address it tried ("connection to server at ... failed: ..."): match over all of them
    # (one may be refused while another answers "role does not exist"), show the last.
    text = str(exc).strip() or type(exc).__name__
    attempts = re.findall(r"failed: (?:FATAL:\s+)?(.*)", text) or [text.splitlines()[0]]
    detail = attempts[-1].strip()
    shown = redact_url(database_url)
    parts = urlsplit(database_url) if "://" in database_url else None
    hostinfo = parts.netloc.rpartition("@")[2] if parts else ""
    host = f"{parts.hostname}:{parts.port or 5432}" if parts and parts.hostname else "the default host"
    no_user = (
        " (DATABASE_URL names no user, so your login name or PGUSER was used)" if parts and not parts.username else ""
    )
    role_missing = re.search(r'role "([^"]*)" does not exist', text)
    password_refused = re.search(r'password authentication failed for user "([^"]*)"', text)
    missing = re.search(r'database "([^"]*)" does not exist', text)
    if role_missing:
        kind, role = "role", role_missing
        example = (
            urlunsplit(parts._replace(netloc=f"postgres@{hostinfo}")) if parts else "postgresql://postgres@HOST/DB"
        )
        what = (
            f'role "{role[1]}" does not exist{no_user}; create it (sudo -u postgres createuser --createdb {role[1]}) '
            f"or set DATABASE_URL to a role that exists, e.g. DATABASE_URL={example}"
        )
    elif password_refused:
        kind, role = "password", password_refused
        what = (
            f'the password of role "{role[1]}" was refused; put the right one in DATABASE_URL '
            "(postgresql://USER:PASSWORD@HOST:PORT/DB, special characters percent-encoded) or set it: "
            f"sudo -u postgres psql -c \"ALTER ROLE {role[1]} PASSWORD '...'\""
        )
    elif "no password supplied" in text:
        kind = "password"
        what = (
            f"the server asks for a password and DATABASE_URL has none{no_user}; add it "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB) or connect as a role the server trusts"
        )
    elif missing:
        kind = "database"
        what = (
            f'database "{missing[1]}" does not exist; create it with python scripts/services.py --create-database '
            f"(or createdb {missing[1]})"
        )
    elif "pg_hba.conf" in text:
        kind = "refused"
        what = f"the server does not admit this role from this host ({detail}); allow it in pg_hba.conf"
    elif _UNREACHABLE.search(detail):
        kind = "unreachable"
        what = f"no PostgreSQL server answers at {host} ({detail}); start it (make services) or fix DATABASE_URL"
    else:
        kind = "other"
        what = f"{detail}; check DATABASE_URL"
    return ConnectError(f"cannot connect to PostgreSQL with DATABASE_URL={shown}: {what}", kind)


def create_database(database_url: str) -> bool:
    """Create the database ``database_url`` names unless it exists (through the server's ``postgres`` database).

    Returns True when it was created. Used by ``make run`` (scripts/services.py) and the benchmarks.
    """
    name = unquote(urlsplit(database_url).path.lstrip("/"))
    conn = connect(database_url, database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()
