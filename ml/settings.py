"""The settings ``ml`` needs (the database, its five queries, the training hyperparameters) and their parsers.

``ml`` owns these variables: :func:`database_url_from`, :func:`sql_queries_from` and :func:`training_from`
read and validate them, ``ml``'s command lines (``python -m ml.db``, ``python -m ml.evaluate``) call them on
:func:`environment` and read nothing else, and ``common.config`` composes them into the service's
``Settings``. The parsers (:func:`read_var`, :func:`int_in`, ...) are the ones ``common.config`` reads every
other variable with, so each variable has one parser and one rule, and a bad value raises
:class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/recsvc"

# Queries that return the columns of the dataset format (DESIGN section 3) from the shipped schema.
# A deployment with its own (NestJS) schema replaces them with SQL_USERS, SQL_COMMUNITIES, ... .
DEFAULT_QUERIES = {
    "users": "SELECT id, role, created_at FROM users",
    "communities": "SELECT id, name FROM communities",
    "follows": "SELECT user_id, community_id, created_at FROM follows",
    "posts": "SELECT id, community_id, author_id, tags, created_at FROM posts",
    "interactions": "SELECT user_id, post_id, type, created_at FROM interactions",
}


class ConfigError(ValueError):
    """A configuration variable is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True)
class TrainingSettings:
    """Hyperparameters of the LightFM model and of the interaction weighting (see ``ml.training``).

    The defaults were tuned with ``python -m ml.evaluate`` on the CrossValidated data and the demo data
    (docs/QUALITY.md): 32 components and 15 epochs at learning rate 0.15 score as well as 48 and 30 at
    0.05 in half the fit time, and a one-year half-life helps on both data sets.
    """

    components: int = 32
    loss: str = "warp"
    learning_rate: float = 0.15
    epochs: int = 15
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    max_sampled: int = 10
    weight_view: float = 1.0
    weight_like: float = 2.0
    weight_comment: float = 3.0
    half_life_days: float = 365.0  # 0 disables time decay
    num_threads: int = 0  # 0 means one per usable CPU (ml.cpus)
    seed: int = 42


def environment(dotenv: bool = True) -> dict[str, str]:
    """``os.environ``, filled in by a ``.env`` file in the working directory when ``dotenv`` and one exists.

    Variables already set in the environment win over the file; ``os.environ`` itself is left untouched.
    """
    env = dict(os.environ)
    if dotenv and os.path.isfile(".env"):
        from dotenv import dotenv_values

        env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **env}
    return env


# --- parsers: each takes the raw string and returns the value or raises ValueError with a reason ---


def int_in(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """A parser of integers within [lo, hi]."""

    def parse(raw: str) -> int:
        value = int(raw.strip())
        _check_range(value, lo, hi)
        return value

    return parse


def float_in(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """A parser of finite numbers within [lo, hi]."""

    def parse(raw: str) -> float:
        value = float(raw.strip())
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        _check_range(value, lo, hi)
        return value

    return parse


def _check_range(value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"must be >= {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"must be <= {hi}")


def url_with(*schemes: str) -> Callable[[str], str]:
    """A parser of URLs with one of ``schemes`` and, naming one host, a port of 1 to 65535 if any (a URL of several
    hosts, ``h1:p1,h2:p2``, is its scheme's own to check)."""

    def parse(raw: str) -> str:
        raw = raw.strip()
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        if "," not in parts.netloc and parts.port == 0:  # .port raises for a port not a number up to 65535
            raise ValueError("port 0 is no port")
        return raw

    return parse


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser of one of ``choices``, case-insensitive (returned in lower case)."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def nonempty(raw: str) -> str:
    """A parser of any text that is not only blanks."""
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def read_var(env: Mapping[str, str], name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
    """Parse variable ``name`` from ``env``; unset or empty gives ``default``; a bad value raises ConfigError."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        if "TOKEN" in name or "PASSWORD" in name or "AUTH" in name:
            shown = "<hidden>"
        raise ConfigError(f"{name}={shown!r} is invalid: {exc}") from None


# --- ml's variables ---


def database_url_from(env: Mapping[str, str]) -> str:
    """DATABASE_URL, or one assembled from DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD."""
    if (env.get("DATABASE_URL") or "").strip():  # blank is unset, as for every variable (read_var)
        return read_var(env, "DATABASE_URL", url_with("postgresql", "postgres"))
    parts = {name: env.get(name) for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")}
    if not any(parts.values()):
        return DEFAULT_DATABASE_URL
    host = parts["DB_HOST"] or "localhost"
    port = read_var(env, "DB_PORT", int_in(1, 65535)) if parts["DB_PORT"] else 5432
    name = parts["DB_NAME"] or "recsvc"
    auth = ""
    if parts["DB_USER"]:
        auth = quote(parts["DB_USER"], safe="")
        if parts["DB_PASSWORD"]:
            auth += ":" + quote(parts["DB_PASSWORD"], safe="")
        auth += "@"
    return f"postgresql://{auth}{host}:{port}/{quote(name, safe='')}"


def sql_queries_from(env: Mapping[str, str]) -> dict[str, str]:
    """The five queries that read the training data: SQL_USERS, SQL_COMMUNITIES, ... or :data:`DEFAULT_QUERIES`."""
    return {
        table: read_var(env, f"SQL_{table.upper()}", nonempty, default) for table, default in DEFAULT_QUERIES.items()
    }


# The environment variable of each TrainingSettings field the model search tunes (ml.search), with its parser:
# a variable set here pins its field, and the search leaves it alone (pinned_fields).
SEARCHED_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "components": ("LIGHTFM_COMPONENTS", int_in(1, 1024)),
    "loss": ("LIGHTFM_LOSS", one_of("warp", "bpr", "warp-kos", "logistic")),
    "learning_rate": ("LIGHTFM_LEARNING_RATE", float_in(1e-6, 10.0)),
    "epochs": ("LIGHTFM_EPOCHS", int_in(1, 10_000)),
    "item_alpha": ("LIGHTFM_ITEM_ALPHA", float_in(0.0, 1.0)),
    "user_alpha": ("LIGHTFM_USER_ALPHA", float_in(0.0, 1.0)),
    "max_sampled": ("LIGHTFM_MAX_SAMPLED", int_in(1, 10_000)),
    "weight_view": ("WEIGHT_VIEW", float_in(0.0, 1000.0)),
    "weight_like": ("WEIGHT_LIKE", float_in(0.0, 1000.0)),
    "weight_comment": ("WEIGHT_COMMENT", float_in(0.0, 1000.0)),
    "half_life_days": ("WEIGHT_HALF_LIFE_DAYS", float_in(0.0, 100_000.0)),
}


def training_from(env: Mapping[str, str]) -> TrainingSettings:
    """The hyperparameters from LIGHTFM_*, WEIGHT_*, TRAIN_THREADS and TRAIN_SEED; unset ones keep their defaults."""
    d = TrainingSettings()
    return TrainingSettings(
        **{
            name: read_var(env, variable, parse, getattr(d, name))
            for name, (variable, parse) in SEARCHED_VARIABLES.items()
        },
        num_threads=read_var(env, "TRAIN_THREADS", int_in(0, 1024), d.num_threads),
        seed=read_var(env, "TRAIN_SEED", int_in(0, 2**31 - 1), d.seed),
    )


def pinned_fields(env: Mapping[str, str]) -> frozenset[str]:
    """The searched hyperparameters the environment sets (a non-empty variable of :data:`SEARCHED_VARIABLES`)."""
    return frozenset(name for name, (variable, _) in SEARCHED_VARIABLES.items() if (env.get(variable) or "").strip())
