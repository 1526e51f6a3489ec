"""Fixtures of the web app's tests: an app on the test Redis database and a temporary model directory."""

from __future__ import annotations

import socket

import pytest
import redis

from app import create_app
from common.config import load_settings
from common.recs_cache import RecsCache
from tests.app.helpers import REDIS_PREFIX
from tests.conftest import TEST_DATABASE_URL

ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def model_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def settings_env(redis_url, model_dir):
    """The environment the app's settings are read from; tests may add variables before ``app`` is made."""
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": REDIS_PREFIX,
        "DATABASE_URL": TEST_DATABASE_URL,
        "MODEL_DIR": str(model_dir),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "TOP_K_RECOMMENDATIONS": "30",
        "MAX_PAGE_LIMIT": "25",
        "DEFAULT_PAGE_LIMIT": "10",
    }


@pytest.fixture
def make_app():
    """Makes apps from an environment mapping; their Redis connections are closed after the test."""
    made = []

    def make(env, **config):
        app = create_app({"TESTING": True, "SETTINGS": load_settings(env, dotenv=False), **config})
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["recsvc"].close()


@pytest.fixture
def app(make_app, settings_env):
    return make_app(settings_env)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cache(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield RecsCache(client, REDIS_PREFIX)
    client.close()


@pytest.fixture
def admin_headers():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def dead_redis_url():
    """A Redis URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"
