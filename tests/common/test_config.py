"""Configuration: defaults per DESIGN section 8, and every bad value refused by name."""

import pytest

from common.config import DEFAULT_QUERIES, ConfigError, Settings, load_settings


def test_defaults_match_the_design():
    s = load_settings({})
    assert s.database_url == "postgresql://localhost:5432/recsvc"
    assert s.redis_url == s.celery_broker_url == s.celery_result_backend == "redis://localhost:6379/0"
    assert (s.model_dir, s.model_backups) == ("var/models", 5)
    assert s.train_interval_seconds == 300
    assert (s.top_k, s.default_page_limit, s.max_page_limit) == (100, 20, 100)
    assert s.recs_retain_seconds == 1800
    assert s.admin_token is None and s.rate_limit is None and s.cors_origins == ("*",)
    assert (s.api_host, s.api_port, s.api_reuse_port) == ("127.0.0.1", 8000, True)  # this host only
    assert s.api_gc_threshold == 50_000
    assert (s.flower_address, s.flower_port, s.flower_basic_auth) == ("127.0.0.1", 5555, None)
    assert s.redis_prefix == "recsvc:"
    assert (s.full_retrain_interval_seconds, s.max_post_age_days) == (86400, 0)  # daily full retrain; every post
    assert dict(s.sql_queries) == DEFAULT_QUERIES
    assert s == Settings()


def test_values_are_parsed():
    s = load_settings(
        {
            "REDIS_URL": "redis://cache:6380/2",
            "TOP_K_RECOMMENDATIONS": "200",
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "RATE_LIMIT": "100/second",
            "ADMIN_TOKEN": "x" * 32,
            "LIGHTFM_EPOCHS": "5",
            "LOG_LEVEL": "debug",
            "SQL_POSTS": "SELECT 1",
            "API_REUSE_PORT": " Off ",
            "API_FEED_SHORTCUT": "0",
            "API_GC_THRESHOLD": "700",
        }
    )
    assert s.api_gc_threshold == 700
    assert s.api_reuse_port is False
    assert s.api_feed_shortcut is False
    assert s.redis_url == s.celery_broker_url == "redis://cache:6380/2"  # broker follows REDIS_URL
    assert s.top_k == 200
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.training.epochs == 5
    assert s.log_level == "DEBUG"
    assert s.sql_queries["posts"] == "SELECT 1"


def test_redis_and_database_urls_with_ports_databases_and_options_are_taken():
    s = load_settings(
        {
            "REDIS_URL": "rediss://:secret@cache:6380/3?ssl_cert_reqs=required",
            "CELERY_BROKER_URL": "amqp://guest:guest@mq:5672/some-vhost",
            "CELERY_RESULT_BACKEND": "redis+socket:///run/redis.sock?virtual_host=2",
            "DATABASE_URL": "postgresql://u@db1:5432,db2:5433/app?target_session_attrs=read-write",
        }
    )
    assert s.redis_url.startswith("rediss://") and s.celery_broker_url.startswith("amqp://")
    assert load_settings({"REDIS_URL": "unix:///tmp/redis.sock?db=4"}).redis_url.endswith("db=4")
    assert load_settings({"REDIS_URL": "redis://cache"}).redis_url == "redis://cache"


def test_a_blank_database_url_is_unset_like_any_blank_value():
    assert load_settings({"DATABASE_URL": "   "}).database_url == "postgresql://localhost:5432/recsvc"
    assert load_settings({"DATABASE_URL": " ", "DB_HOST": "db"}).database_url == "postgresql://db:5432/recsvc"


def test_database_url_from_parts():
    s = load_settings({"DB_HOST": "db", "DB_PORT": "6543", "DB_NAME": "app", "DB_USER": "u", "DB_PASSWORD": "p@ss"})
    assert s.database_url == "postgresql://u:p%40ss@db:6543/app"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://localhost/x"),
        ("REDIS_URL", "localhost:6379"),
        ("MODEL_BACKUPS", "-1"),
        ("TRAIN_INTERVAL_SECONDS", "soon"),
        ("TRAIN_INTERVAL_SECONDS", "nan"),
        ("TOP_K_RECOMMENDATIONS", "0"),
        ("MAX_PAGE_LIMIT", "1.5"),
        ("RECS_RETAIN_SECONDS", "-5"),
        ("API_PORT", "70000"),
        ("API_WORKERS", "0"),
        ("API_LIST_MEMO_USERS", "-1"),
        ("API_REUSE_PORT", "sometimes"),
        ("API_FEED_SHORTCUT", "fast"),
        ("API_GC_THRESHOLD", "0"),
        ("API_GC_THRESHOLD", "often"),
        ("RATE_LIMIT", "lots"),
        ("CORS_ORIGINS", " , "),
        ("LIGHTFM_LOSS", "mse"),
        ("LIGHTFM_COMPONENTS", "0"),
        ("LOG_LEVEL", "loud"),
        ("FLOWER_BASIC_AUTH", "admin"),
        ("FLOWER_PORT", "0"),
        ("DB_PORT", "x"),
        ("MAX_POST_AGE_DAYS", "-1"),
        ("MAX_POST_AGE_DAYS", "a month"),
        ("FULL_RETRAIN_INTERVAL_SECONDS", "-60"),
        ("PRECOMPUTE_NICENESS", "20"),
        ("PRECOMPUTE_NICENESS", "-1"),
        ("REDIS_PREFIX", "a{b}"),  # a brace would change the keys' hash tags
        ("REDIS_URL", "redis://127.0.0.1:6379/x"),  # redis-py would quietly use database 0
        ("REDIS_URL", "redis://127.0.0.1:abc/6"),
        ("REDIS_URL", "redis://127.0.0.1:0/6"),
        ("REDIS_URL", "unix:///tmp/redis.sock?db=abc"),
        ("REDIS_URL", "redis://127.0.0.1:6379/\uff15"),  # a full-width digit is not a database number
        ("CELERY_BROKER_URL", "redis://127.0.0.1:abc/1"),
        ("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/x"),
        ("DATABASE_URL", "postgresql://127.0.0.1:99999/x"),
        ("DATABASE_URL", "postgresql://127.0.0.1:port/x"),
    ],
)
def test_bad_values_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_secrets_are_not_echoed():
    with pytest.raises(ConfigError, match="ADMIN_TOKEN") as info:
        load_settings({"ADMIN_TOKEN": "short-secret"})
    assert "short-secret" not in str(info.value)


def test_inconsistent_page_limits_are_refused():
    with pytest.raises(ConfigError, match="DEFAULT_PAGE_LIMIT"):
        load_settings({"DEFAULT_PAGE_LIMIT": "50", "MAX_PAGE_LIMIT": "40"})
    with pytest.raises(ConfigError, match="MAX_PAGE_LIMIT"):
        load_settings({"TOP_K_RECOMMENDATIONS": "50"})


def test_dotenv_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("TOP_K_RECOMMENDATIONS=150\nMODEL_DIR=/from/dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL_DIR", "/from/env")
    monkeypatch.delenv("TOP_K_RECOMMENDATIONS", raising=False)
    s = load_settings()
    assert s.top_k == 150
    assert s.model_dir == "/from/env"


def test_live_feed_settings_default_parse_and_are_refused_by_name():
    d = load_settings({})
    assert (d.max_feed_posts, d.live_max_posts, d.live_max_users) == (1000, 2000, 100_000)
    assert (d.events_max_per_user, d.events_ttl_seconds, d.impressions) == (1000, 3600, "demote")
    assert (d.events_token, d.events_rate_limit, d.api_models_kept) == (None, "20/second", 2)
    s = load_settings(
        {"IMPRESSIONS": "Hide", "EVENTS_TOKEN": "e" * 20, "MAX_FEED_POSTS": "300", "API_MODELS_KEPT": "0"}
    )
    assert (s.impressions, s.events_token, s.max_feed_posts, s.api_models_kept) == ("hide", "e" * 20, 300, 0)
    for name, value in [
        ("MAX_FEED_POSTS", "0"),
        ("LIVE_MAX_POSTS", "-1"),
        ("LIVE_MAX_USERS", "many"),
        ("EVENTS_MAX_PER_USER", "0"),
        ("EVENTS_TTL_SECONDS", "10"),
        ("IMPRESSIONS", "forget"),
        ("EVENTS_TOKEN", "short"),
        ("EVENTS_RATE_LIMIT", "fast"),
        ("API_MODELS_KEPT", "17"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})
