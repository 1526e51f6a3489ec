"""Fixtures of the web app's tests: an app on the test Redis database and a temporary model directory."""

from __future__ import annotations

import pytest

from app import create_app
from common.config import load_settings
from testing.environment import ADMIN_TOKEN, REDIS_PREFIX, TEST_DATABASE_URL
from testing.processes import free_port


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
def admin_headers():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def dead_redis_url():
    """A Redis URL where nothing listens (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"
