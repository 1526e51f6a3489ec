"""The service's configuration: read from the environment once, validated, and passed down.

Every process (gunicorn web workers, Celery worker and beat, the command-line tools) calls
:func:`load_settings` at start. A value that does not parse or is out of range raises :class:`ConfigError`
naming the variable, so a process never runs on a silent default. A ``.env`` file in the working directory
is read first if present; variables already set in the environment win over it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from common.cpus import usable_cpus

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/recsvc"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"

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
    (the tuning log is in the README): 32 components and 15 epochs at learning rate 0.15 score as well
    as 48 and 30 at 0.05 in half the fit time, and a one-year half-life helps on both data sets.
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
    num_threads: int = 0  # 0 means one per usable CPU (common.cpus)
    seed: int = 42


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, validated. Built by :func:`load_settings`."""

    database_url: str = DEFAULT_DATABASE_URL
    sql_queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "recsvc:"
    celery_broker_url: str = DEFAULT_REDIS_URL
    celery_result_backend: str = DEFAULT_REDIS_URL
    model_dir: str = "var/models"
    model_backups: int = 5
    train_interval_seconds: float = 300.0
    train_time_limit_seconds: float = 1200.0
    refresh_interval_seconds: float = 30.0
    refresh_lookback_seconds: float = 60.0
    quality_gate_margin: float = 0.2
    precompute_chunk_users: int = 50_000
    top_k: int = 100
    default_page_limit: int = 20
    max_page_limit: int = 100
    recs_retain_seconds: int = 1800
    admin_token: str | None = None
    cors_origins: tuple[str, ...] = ("*",)
    rate_limit: str | None = None
    api_host: str = "127.0.0.1"  # this host only; every interface is 0.0.0.0 (docker-compose.yml sets it)
    api_port: int = 8000
    api_workers: int = field(default_factory=usable_cpus)  # with two threads each (gunicorn.conf.py)
    api_list_memo_users: int = 10_000
    api_reuse_port: bool = True
    api_models_kept: int = 2  # older model versions a worker keeps loaded for pinned scrolls
    max_feed_posts: int = 1000
    live_max_posts: int = 2000
    live_max_users: int = 100_000
    events_max_per_user: int = 1000
    events_ttl_seconds: int = 7 * 86400
    impressions: str = "demote"  # demote, hide or ignore
    events_token: str | None = None  # None: POST /events takes the admin token
    events_rate_limit: str = "20/second"
    log_level: str = "INFO"
    flower_basic_auth: str | None = None
    # Flower reads FLOWER_* itself; flowerconfig.py binds it here unless FLOWER_ADDRESS or --address say otherwise.
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    training: TrainingSettings = field(default_factory=TrainingSettings)


# --- parsers: each takes the raw string and returns the value or raises ValueError with a reason ---


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        _check_range(value, lo, hi)
        return value

    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
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


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of 1, true, yes, on, 0, false, no, off")


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        raw = raw.strip()
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}")
        return raw

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    if not origins:
        raise ValueError("must list at least one origin, or '*'")
    return origins


def _rate_limit(raw: str) -> str:
    # Validated with the same parser flask-limiter uses, e.g. "100/minute" or "10 per second;1000/hour".
    from limits import parse_many

    parse_many(raw)
    return raw.strip()


def _basic_auth(raw: str) -> str:
    for pair in raw.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise ValueError("must be user:password[,user:password...]")
    return raw.strip()


def _admin_token(raw: str) -> str:
    token = raw.strip()
    if len(token) < 16:
        raise ValueError("must be at least 16 characters (use a long random string)")
    return token


def _database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL, or one assembled from DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD."""
    if env.get("DATABASE_URL"):
        return _read(env, "DATABASE_URL", _url("postgresql", "postgres"))
    parts = {name: env.get(name) for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")}
    if not any(parts.values()):
        return DEFAULT_DATABASE_URL
    host = parts["DB_HOST"] or "localhost"
    port = _read(env, "DB_PORT", _int(1, 65535)) if parts["DB_PORT"] else 5432
    name = parts["DB_NAME"] or "recsvc"
    auth = ""
    if parts["DB_USER"]:
        auth = quote(parts["DB_USER"], safe="")
        if parts["DB_PASSWORD"]:
            auth += ":" + quote(parts["DB_PASSWORD"], safe="")
        auth += "@"
    return f"postgresql://{auth}{host}:{port}/{quote(name, safe='')}"


def _read(env: Mapping[str, str], name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
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


def _training(env: Mapping[str, str]) -> TrainingSettings:
    d = TrainingSettings()
    return TrainingSettings(
        components=_read(env, "LIGHTFM_COMPONENTS", _int(1, 1024), d.components),
        loss=_read(env, "LIGHTFM_LOSS", _choice("warp", "bpr", "warp-kos", "logistic"), d.loss),
        learning_rate=_read(env, "LIGHTFM_LEARNING_RATE", _float(1e-6, 10.0), d.learning_rate),
        epochs=_read(env, "LIGHTFM_EPOCHS", _int(1, 10_000), d.epochs),
        item_alpha=_read(env, "LIGHTFM_ITEM_ALPHA", _float(0.0, 1.0), d.item_alpha),
        user_alpha=_read(env, "LIGHTFM_USER_ALPHA", _float(0.0, 1.0), d.user_alpha),
        max_sampled=_read(env, "LIGHTFM_MAX_SAMPLED", _int(1, 10_000), d.max_sampled),
        weight_view=_read(env, "WEIGHT_VIEW", _float(0.0, 1000.0), d.weight_view),
        weight_like=_read(env, "WEIGHT_LIKE", _float(0.0, 1000.0), d.weight_like),
        weight_comment=_read(env, "WEIGHT_COMMENT", _float(0.0, 1000.0), d.weight_comment),
        half_life_days=_read(env, "WEIGHT_HALF_LIFE_DAYS", _float(0.0, 100_000.0), d.half_life_days),
        num_threads=_read(env, "TRAIN_THREADS", _int(0, 1024), d.num_threads),
        seed=_read(env, "TRAIN_SEED", _int(0, 2**31 - 1), d.seed),
    )


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate every setting.

    ``env`` defaults to ``os.environ`` (plus a ``.env`` file in the working directory when ``dotenv``);
    tests pass a plain dict. Raises :class:`ConfigError` naming the first bad variable.
    """
    if env is None:
        env = dict(os.environ)
        if dotenv and os.path.isfile(".env"):
            from dotenv import dotenv_values

            # The file fills in what the environment leaves unset; os.environ itself is left untouched.
            env = {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **env}
    d = Settings()
    redis_url = _read(env, "REDIS_URL", _url("redis", "rediss", "unix"), d.redis_url)
    queries = {
        table: _read(env, f"SQL_{table.upper()}", _nonempty, default) for table, default in DEFAULT_QUERIES.items()
    }
    settings = Settings(
        database_url=_database_url(env),
        sql_queries=queries,
        redis_url=redis_url,
        redis_prefix=_read(env, "REDIS_PREFIX", _nonempty, d.redis_prefix),
        celery_broker_url=_read(env, "CELERY_BROKER_URL", _url("redis", "rediss", "amqp", "pyamqp"), redis_url),
        celery_result_backend=_read(env, "CELERY_RESULT_BACKEND", _url("redis", "rediss"), redis_url),
        model_dir=_read(env, "MODEL_DIR", _nonempty, d.model_dir),
        model_backups=_read(env, "MODEL_BACKUPS", _int(0, 1000), d.model_backups),
        train_interval_seconds=_read(env, "TRAIN_INTERVAL_SECONDS", _float(1.0, 7 * 86400.0), d.train_interval_seconds),
        train_time_limit_seconds=_read(
            env, "TRAIN_TIME_LIMIT_SECONDS", _float(10.0, 86400.0), d.train_time_limit_seconds
        ),
        refresh_interval_seconds=_read(
            env, "REFRESH_INTERVAL_SECONDS", _float(1.0, 3600.0), d.refresh_interval_seconds
        ),
        refresh_lookback_seconds=_read(
            env, "REFRESH_LOOKBACK_SECONDS", _float(0.0, 86400.0), d.refresh_lookback_seconds
        ),
        quality_gate_margin=_read(env, "QUALITY_GATE_MARGIN", _float(0.0, 1.0), d.quality_gate_margin),
        precompute_chunk_users=_read(env, "PRECOMPUTE_CHUNK_USERS", _int(100, 10_000_000), d.precompute_chunk_users),
        top_k=_read(env, "TOP_K_RECOMMENDATIONS", _int(1, 10_000), d.top_k),
        default_page_limit=_read(env, "DEFAULT_PAGE_LIMIT", _int(1, 10_000), d.default_page_limit),
        max_page_limit=_read(env, "MAX_PAGE_LIMIT", _int(1, 10_000), d.max_page_limit),
        recs_retain_seconds=_read(env, "RECS_RETAIN_SECONDS", _int(1, 30 * 86400), d.recs_retain_seconds),
        admin_token=_read(env, "ADMIN_TOKEN", _admin_token, None),
        cors_origins=_read(env, "CORS_ORIGINS", _origins, d.cors_origins),
        rate_limit=_read(env, "RATE_LIMIT", _rate_limit, None),
        api_host=_read(env, "API_HOST", _nonempty, d.api_host),
        api_port=_read(env, "API_PORT", _int(1, 65535), d.api_port),
        api_workers=_read(env, "API_WORKERS", _int(1, 512), d.api_workers),
        api_list_memo_users=_read(env, "API_LIST_MEMO_USERS", _int(0, 10_000_000), d.api_list_memo_users),
        api_reuse_port=_read(env, "API_REUSE_PORT", _bool, d.api_reuse_port),
        api_models_kept=_read(env, "API_MODELS_KEPT", _int(0, 16), d.api_models_kept),
        max_feed_posts=_read(env, "MAX_FEED_POSTS", _int(1, 100_000), d.max_feed_posts),
        live_max_posts=_read(env, "LIVE_MAX_POSTS", _int(0, 100_000), d.live_max_posts),
        live_max_users=_read(env, "LIVE_MAX_USERS", _int(0, 10_000_000), d.live_max_users),
        events_max_per_user=_read(env, "EVENTS_MAX_PER_USER", _int(1, 100_000), d.events_max_per_user),
        events_ttl_seconds=_read(env, "EVENTS_TTL_SECONDS", _int(60, 90 * 86400), d.events_ttl_seconds),
        impressions=_read(env, "IMPRESSIONS", _choice("demote", "hide", "ignore"), d.impressions),
        events_token=_read(env, "EVENTS_TOKEN", _admin_token, None),
        events_rate_limit=_read(env, "EVENTS_RATE_LIMIT", _rate_limit, d.events_rate_limit),
        log_level=_read(env, "LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info").upper(),
        flower_basic_auth=_read(env, "FLOWER_BASIC_AUTH", _basic_auth, None),
        flower_address=_read(env, "FLOWER_ADDRESS", _nonempty, d.flower_address),
        flower_port=_read(env, "FLOWER_PORT", _int(1, 65535), d.flower_port),
        training=_training(env),
    )
    if settings.default_page_limit > settings.max_page_limit:
        raise ConfigError(
            f"DEFAULT_PAGE_LIMIT={settings.default_page_limit} is invalid: must be <= MAX_PAGE_LIMIT "
            f"({settings.max_page_limit})"
        )
    if settings.max_page_limit > settings.top_k:
        raise ConfigError(
            f"MAX_PAGE_LIMIT={settings.max_page_limit} is invalid: must be <= TOP_K_RECOMMENDATIONS ({settings.top_k})"
        )
    return settings
