"""The Celery settings follow the service's settings, and the time budgets nest as the pipeline relies on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from celeryconfig import celery_settings
from common.config import ConfigError
from tasks import limits
from testing.processes import REPO
from testing.service import settings_from


def test_celery_settings_come_from_the_environment(service_env):
    env = {
        **service_env,
        "CELERY_BROKER_URL": "redis://broker.example:6379/3",
        "CELERY_RESULT_BACKEND": "redis://results.example:6379/4",
        "TRAIN_INTERVAL_SECONDS": "42",
        "TRAIN_TIME_LIMIT_SECONDS": "600",
    }
    conf = celery_settings(settings_from(env))

    assert conf["broker_url"] == "redis://broker.example:6379/3"
    assert conf["result_backend"] == "redis://results.example:6379/4"
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"] and conf["result_extended"]
    assert conf["worker_prefetch_multiplier"] == 1 and conf["task_acks_late"]
    assert (conf["task_soft_time_limit"], conf["task_time_limit"]) == (600, 660)
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["beat_schedule"]["train"] == {"task": "tasks.train", "schedule": 42.0, "options": {"expires": 42.0}}
    # Beat's full retrain, daily by default, is the same task asked to read everything and fit in full.
    assert conf["beat_schedule"]["full-retrain"] == {
        "task": "tasks.train",
        "schedule": 86400.0,
        "kwargs": {"full": True},
        "options": {"expires": 86400.0},
    }
    off = celery_settings(settings_from({**env, "FULL_RETRAIN_INTERVAL_SECONDS": "0"}))
    assert "full-retrain" not in off["beat_schedule"]


def test_the_app_takes_its_settings_and_importing_the_package_builds_nothing(service_env):
    # Celery's own layout: `celery -A tasks` finds tasks.celery.app; importing `tasks` alone reads no setting.
    code = (
        "import sys, tasks; assert 'tasks.celery' not in sys.modules and 'celery' not in sys.modules;"
        "from celery.app.utils import find_app; app = find_app('tasks');"
        "import tasks.celery; assert app is tasks.celery.app; print(app.conf.task_time_limit)"
    )
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "600"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "660.0"


def test_a_bad_setting_stops_celery_at_start_naming_it(service_env):
    env = {**service_env, "TRAIN_TIME_LIMIT_SECONDS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "inspect", "ping"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    # One line, as the web's: not Celery's "Unable to load celery application" over a traceback.
    assert done.stderr.strip().splitlines() == [
        "recsvc tasks: invalid configuration: TRAIN_TIME_LIMIT_SECONDS='soon' is invalid: "
        "could not convert string to float: 'soon'"
    ]
    with pytest.raises(ConfigError):
        settings_from(env)


@pytest.mark.parametrize("limit", ["10", "60", "1200", "86400"])
def test_time_budgets_nest(service_env, limit):
    settings = settings_from({**service_env, "TRAIN_TIME_LIMIT_SECONDS": limit})
    soft, hard, lock = limits.soft_time_limit(settings), limits.hard_time_limit(settings), limits.lock_ttl(settings)
    # The task is asked to stop, then killed, and only then may the lock and a staged version expire.
    assert float(limit) == soft < hard < lock
