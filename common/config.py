"""The service's configuration: read from the environment once, validated, and passed down.

Every process (gunicorn web workers, Celery worker and beat, the command-line tools) calls
:func:`load_settings` at start. A value that does not parse or is out of range raises :class:`ConfigError`
naming the variable, so a process never runs on a silent default. A ``.env`` file in the working directory
is read first if present; variables already set in the environment win over it.

The variables of ``ml`` (the database, its queries, the training hyperparameters) and the parsers are
``ml.settings``'s; this module composes them with the service's own into :class:`Settings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from common.experiments import Experiment, parse_experiment
from common.redis_clients import CLUSTER_SCHEMES, cluster_nodes, cluster_tls, is_cluster_url
from ml.cpus import usable_cpus
from ml.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_QUERIES,
    ConfigError,
    TrainingSettings,
    database_url_from,
    environment,
    float_in,
    int_in,
    nonempty,
    one_of,
    pinned_fields,
    read_var,
    sql_queries_from,
    training_from,
    url_with,
)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


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
    # Warm starts (ml.warm): beat's full retrain runs this often (daily: a full fit at 1M users takes ~20 minutes
    # on 2 cores, while warm runs keep the five-minute cycle); the runs between continue the served version's fit
    # and read only the new interactions (ml.incremental); 0 makes every run a full fit of everything read.
    full_retrain_interval_seconds: float = 86400.0
    # Rank only posts created within this many days of the newest post (ml.post_age); 0: every post.
    max_post_age_days: float = 0.0
    precompute_chunk_users: int = 50_000
    # Users' lists written per second by one precompute process (0: unpaced): the writes share Redis with serving.
    publish_write_rate: int = 50_000
    # How far below the worker's own CPU priority the precompute ranks and writes (tasks.priority): on a host
    # that also serves, the web workers then get the cores first while a version is written; 0: the same.
    precompute_niceness: int = 10
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
    api_feed_shortcut: bool = True  # plain feed pages answered before Flask (app.feed_shortcut)
    # A web worker's garbage collector runs when this many more objects were made than freed (Python's: 700).
    api_gc_threshold: int = 50_000
    api_models_kept: int = 2  # older model versions a worker keeps loaded for pinned scrolls
    max_feed_posts: int = 1000
    live_max_posts: int = 2000
    live_max_users: int = 100_000
    events_max_per_user: int = 1000
    events_ttl_seconds: int = 3600
    impressions: str = "demote"  # demote, hide or ignore
    events_token: str | None = None  # None: POST /events takes the admin token
    events_rate_limit: str = "20/second"
    log_level: str = "INFO"
    flower_basic_auth: str | None = None
    # Flower reads FLOWER_* itself; flowerconfig.py binds it here unless FLOWER_ADDRESS or --address say otherwise.
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    training: TrainingSettings = field(default_factory=TrainingSettings)
    experiment: Experiment | None = None  # EXPERIMENT or EXPERIMENT_FILE; none by default
    served_stream_maxlen: int = 100_000  # pages kept for the mover (about 1 KB each); 0 records none
    online_schema: str = "recsvc_online"
    attribution_window_hours: float = 24.0
    ctr_drop_alert_fraction: float = 0.2
    online_report_interval_seconds: float = 300.0
    # The model search (tasks.search, ml.search): how often, its budget (seconds; trials per family, 0 = no
    # cap), its time limit, and the searched hyperparameters the environment pins (left alone by the search).
    search_interval_seconds: float = 86400.0
    search_budget_seconds: float = 600.0
    search_trials: int = 0
    search_time_limit_seconds: float = 3600.0
    pinned_training: frozenset[str] = frozenset()


# --- parsers: each takes the raw string and returns the value or raises ValueError with a reason ---


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of 1, true, yes, on, 0, false, no, off")


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


def _schema_name(raw: str) -> str:
    name = raw.strip()
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError("must be a lowercase SQL identifier (a-z, 0-9, _; not starting with a digit)")
    if name in ("public", "pg_catalog", "information_schema"):
        raise ValueError("must be a schema of recsvc's own, not the backend's")
    return name


class _ReadNames(dict):
    """A mapping that remembers which names were read: the variables a parser knows."""

    def __init__(self, *args):
        super().__init__(*args)
        self.names: set[str] = set()

    def get(self, name, default=None):
        self.names.add(name)
        return super().get(name, default)


def _experiment(env: Mapping[str, str]) -> Experiment | None:
    """EXPERIMENT (JSON) or EXPERIMENT_FILE (a JSON file), validated; a model variant's training overrides too."""

    def check_training(overrides: Mapping[str, str]) -> tuple[TrainingSettings, frozenset[str]]:
        read = _ReadNames({**env, **overrides})
        training = training_from(read)
        unknown = set(overrides) - read.names
        if unknown:
            raise ValueError(f"not training variables: {', '.join(sorted(unknown))}")
        return training, pinned_fields(overrides)  # the variant's settings, and the fields it pins

    def parse(raw: str) -> Experiment:
        return parse_experiment(raw, check_training)

    if env.get("EXPERIMENT", "").strip() and env.get("EXPERIMENT_FILE", "").strip():
        raise ConfigError("EXPERIMENT and EXPERIMENT_FILE are both set: declare the experiment in one of them")

    def read_file(raw: str) -> Experiment:
        try:
            with open(raw.strip(), encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise ValueError(f"cannot read it: {exc.strerror}") from None
        return parse(text)

    return read_var(env, "EXPERIMENT", parse, None) or read_var(env, "EXPERIMENT_FILE", read_file, None)


# How Celery names a Redis server: over TCP, TLS, or a Unix socket.
_CELERY_REDIS_SCHEMES = ("redis", "rediss", "redis+socket")


def _key_prefix(raw: str) -> str:
    """REDIS_PREFIX: not blank, and no brace (it would change the keys' hash tags, common.recs_cache)."""
    if "{" in raw or "}" in raw:
        raise ValueError("must not hold { or }: they would change the keys' hash tags")
    return nonempty(raw)


def _redis_database(url: str) -> str:
    """``url`` (one Redis server) if the database it names, by its path or ``?db=``, is a number: redis-py takes
    database 0 for any other without a word, Celery's transport fails at its first connection."""
    parts = urlsplit(url)
    named = [] if parts.scheme in ("unix", "redis+socket") else [parts.path.strip("/")]  # a socket's path is a file
    for database in named + parse_qs(parts.query).get("db", []):
        if database and not re.fullmatch(r"[0-9]+", database):
            raise ValueError(f"the database {database!r} is not a number")
    return url


def _redis_url(raw: str) -> str:
    """One Redis server (redis, rediss, unix) or a Redis Cluster (redis+cluster://host:port,host:port...)."""
    url = url_with("redis", "rediss", "unix", *CLUSTER_SCHEMES)(raw)
    if is_cluster_url(url):
        cluster_nodes(url)
        cluster_tls(url)
        return url
    return _redis_database(url)


def _celery_url_parser(*schemes: str):
    """A parser of Celery's broker or result backend URL: one of ``schemes``, a Redis one naming a database number."""
    scheme_and_port = url_with(*schemes)

    def parse(raw: str) -> str:
        url = scheme_and_port(raw)
        return _redis_database(url) if urlsplit(url).scheme in _CELERY_REDIS_SCHEMES else url

    return parse


def _celery_default(redis_url: str) -> str:
    """What Celery's broker and result backend default to: ``REDIS_URL``, as Celery reads it.

    A Unix socket is Celery's ``redis+socket:///path?virtual_host=<db>`` (for ``unix:///path?db=<db>``), and a
    ``rediss://`` URL must name ``ssl_cert_reqs`` for Celery: ``required`` when it does not, as redis-py
    checks the server's certificate for the service's own clients.
    """
    parts = urlsplit(redis_url)
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.netloc}{parts.path}?virtual_host={query.get('db', ['0'])[0]}"
    if parts.scheme == "rediss" and "ssl_cert_reqs" not in query:
        return f"{redis_url}{'&' if parts.query else '?'}ssl_cert_reqs=required"
    return redis_url


def _celery_url(name: str, url: str, redis_url: str) -> None:
    """Celery's broker and result backend must be a plain Redis (or AMQP), never the cluster of REDIS_URL."""
    if not is_cluster_url(redis_url):
        return
    nodes = set(cluster_nodes(redis_url))
    parts = urlsplit(url)
    if url == redis_url or (parts.hostname, parts.port or 6379) in nodes:
        raise ConfigError(
            f"{name} is invalid: REDIS_URL names a Redis Cluster and Celery cannot use a cluster as its broker or "
            f"result backend; set {name} to a plain Redis server (redis://host:port/db) outside the cluster"
        )


def _admin_token(raw: str) -> str:
    token = raw.strip()
    if len(token) < 16:
        raise ValueError("must be at least 16 characters (use a long random string)")
    return token


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate every setting.

    ``env`` defaults to ``os.environ`` (plus a ``.env`` file in the working directory when ``dotenv``);
    tests pass a plain dict. Raises :class:`ConfigError` naming the first bad variable.
    """
    if env is None:
        env = environment(dotenv)
    d = Settings()
    redis_url = read_var(env, "REDIS_URL", _redis_url, d.redis_url)
    settings = Settings(
        database_url=database_url_from(env),
        sql_queries=sql_queries_from(env),
        redis_url=redis_url,
        redis_prefix=read_var(env, "REDIS_PREFIX", _key_prefix, d.redis_prefix),
        celery_broker_url=read_var(
            env,
            "CELERY_BROKER_URL",
            _celery_url_parser(*_CELERY_REDIS_SCHEMES, "amqp", "pyamqp"),
            _celery_default(redis_url),
        ),
        celery_result_backend=read_var(
            env, "CELERY_RESULT_BACKEND", _celery_url_parser(*_CELERY_REDIS_SCHEMES), _celery_default(redis_url)
        ),
        model_dir=read_var(env, "MODEL_DIR", nonempty, d.model_dir),
        model_backups=read_var(env, "MODEL_BACKUPS", int_in(0, 1000), d.model_backups),
        train_interval_seconds=read_var(
            env, "TRAIN_INTERVAL_SECONDS", float_in(1.0, 7 * 86400.0), d.train_interval_seconds
        ),
        train_time_limit_seconds=read_var(
            env, "TRAIN_TIME_LIMIT_SECONDS", float_in(10.0, 86400.0), d.train_time_limit_seconds
        ),
        refresh_interval_seconds=read_var(
            env, "REFRESH_INTERVAL_SECONDS", float_in(1.0, 3600.0), d.refresh_interval_seconds
        ),
        refresh_lookback_seconds=read_var(
            env, "REFRESH_LOOKBACK_SECONDS", float_in(0.0, 86400.0), d.refresh_lookback_seconds
        ),
        quality_gate_margin=read_var(env, "QUALITY_GATE_MARGIN", float_in(0.0, 1.0), d.quality_gate_margin),
        full_retrain_interval_seconds=read_var(
            env, "FULL_RETRAIN_INTERVAL_SECONDS", float_in(0.0, 30 * 86400.0), d.full_retrain_interval_seconds
        ),
        max_post_age_days=read_var(env, "MAX_POST_AGE_DAYS", float_in(0.0, 36_500.0), d.max_post_age_days),
        precompute_chunk_users=read_var(
            env, "PRECOMPUTE_CHUNK_USERS", int_in(100, 10_000_000), d.precompute_chunk_users
        ),
        publish_write_rate=read_var(env, "PUBLISH_WRITE_RATE", int_in(0, 100_000_000), d.publish_write_rate),
        precompute_niceness=read_var(env, "PRECOMPUTE_NICENESS", int_in(0, 19), d.precompute_niceness),
        top_k=read_var(env, "TOP_K_RECOMMENDATIONS", int_in(1, 10_000), d.top_k),
        default_page_limit=read_var(env, "DEFAULT_PAGE_LIMIT", int_in(1, 10_000), d.default_page_limit),
        max_page_limit=read_var(env, "MAX_PAGE_LIMIT", int_in(1, 10_000), d.max_page_limit),
        recs_retain_seconds=read_var(env, "RECS_RETAIN_SECONDS", int_in(1, 30 * 86400), d.recs_retain_seconds),
        admin_token=read_var(env, "ADMIN_TOKEN", _admin_token, None),
        cors_origins=read_var(env, "CORS_ORIGINS", _origins, d.cors_origins),
        rate_limit=read_var(env, "RATE_LIMIT", _rate_limit, None),
        api_host=read_var(env, "API_HOST", nonempty, d.api_host),
        api_port=read_var(env, "API_PORT", int_in(1, 65535), d.api_port),
        api_workers=read_var(env, "API_WORKERS", int_in(1, 512), d.api_workers),
        api_list_memo_users=read_var(env, "API_LIST_MEMO_USERS", int_in(0, 10_000_000), d.api_list_memo_users),
        api_reuse_port=read_var(env, "API_REUSE_PORT", _bool, d.api_reuse_port),
        api_feed_shortcut=read_var(env, "API_FEED_SHORTCUT", _bool, d.api_feed_shortcut),
        api_gc_threshold=read_var(env, "API_GC_THRESHOLD", int_in(100, 10_000_000), d.api_gc_threshold),
        api_models_kept=read_var(env, "API_MODELS_KEPT", int_in(0, 16), d.api_models_kept),
        max_feed_posts=read_var(env, "MAX_FEED_POSTS", int_in(1, 100_000), d.max_feed_posts),
        live_max_posts=read_var(env, "LIVE_MAX_POSTS", int_in(0, 100_000), d.live_max_posts),
        live_max_users=read_var(env, "LIVE_MAX_USERS", int_in(0, 10_000_000), d.live_max_users),
        events_max_per_user=read_var(env, "EVENTS_MAX_PER_USER", int_in(1, 100_000), d.events_max_per_user),
        events_ttl_seconds=read_var(env, "EVENTS_TTL_SECONDS", int_in(60, 90 * 86400), d.events_ttl_seconds),
        impressions=read_var(env, "IMPRESSIONS", one_of("demote", "hide", "ignore"), d.impressions),
        events_token=read_var(env, "EVENTS_TOKEN", _admin_token, None),
        events_rate_limit=read_var(env, "EVENTS_RATE_LIMIT", _rate_limit, d.events_rate_limit),
        log_level=read_var(env, "LOG_LEVEL", one_of("debug", "info", "warning", "error"), "info").upper(),
        flower_basic_auth=read_var(env, "FLOWER_BASIC_AUTH", _basic_auth, None),
        flower_address=read_var(env, "FLOWER_ADDRESS", nonempty, d.flower_address),
        flower_port=read_var(env, "FLOWER_PORT", int_in(1, 65535), d.flower_port),
        training=training_from(env),
        experiment=_experiment(env),
        served_stream_maxlen=read_var(env, "SERVED_STREAM_MAXLEN", int_in(0, 100_000_000), d.served_stream_maxlen),
        online_schema=read_var(env, "ONLINE_SCHEMA", _schema_name, d.online_schema),
        attribution_window_hours=read_var(
            env, "ATTRIBUTION_WINDOW_HOURS", float_in(0.01, 24 * 30.0), d.attribution_window_hours
        ),
        ctr_drop_alert_fraction=read_var(env, "CTR_DROP_ALERT_FRACTION", float_in(0.0, 1.0), d.ctr_drop_alert_fraction),
        online_report_interval_seconds=read_var(
            env, "ONLINE_REPORT_INTERVAL_SECONDS", float_in(10.0, 86400.0), d.online_report_interval_seconds
        ),
        search_interval_seconds=read_var(
            env, "SEARCH_INTERVAL_SECONDS", float_in(60.0, 30 * 86400.0), d.search_interval_seconds
        ),
        search_budget_seconds=read_var(env, "SEARCH_BUDGET_SECONDS", float_in(1.0, 86400.0), d.search_budget_seconds),
        search_trials=read_var(env, "SEARCH_TRIALS", int_in(0, 100_000), d.search_trials),
        search_time_limit_seconds=read_var(
            env, "SEARCH_TIME_LIMIT_SECONDS", float_in(10.0, 7 * 86400.0), d.search_time_limit_seconds
        ),
        pinned_training=pinned_fields(env),
    )
    _celery_url("CELERY_BROKER_URL", settings.celery_broker_url, redis_url)
    _celery_url("CELERY_RESULT_BACKEND", settings.celery_result_backend, redis_url)
    if settings.default_page_limit > settings.max_page_limit:
        raise ConfigError(
            f"DEFAULT_PAGE_LIMIT={settings.default_page_limit} is invalid: must be <= MAX_PAGE_LIMIT "
            f"({settings.max_page_limit})"
        )
    if settings.search_time_limit_seconds <= settings.search_budget_seconds:
        raise ConfigError(
            f"SEARCH_TIME_LIMIT_SECONDS={settings.search_time_limit_seconds:g} is invalid: must be more than "
            f"SEARCH_BUDGET_SECONDS ({settings.search_budget_seconds:g}), which the search spends before its final fits"
        )
    if settings.max_page_limit > settings.top_k:
        raise ConfigError(
            f"MAX_PAGE_LIMIT={settings.max_page_limit} is invalid: must be <= TOP_K_RECOMMENDATIONS ({settings.top_k})"
        )
    return settings
