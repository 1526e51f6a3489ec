"""A training run that PostgreSQL refuses fails with one line naming DATABASE_URL (issue 10, defect 5)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

import ml.db.connection
from testing.polling import wait_until
from testing.processes import start_worker

MISSING_ROLE = "recsvc_no_such_role"


def test_a_refused_connection_fails_the_run_with_one_line(service_env, services, celery_client, cache):
    parts = urlsplit(service_env["DATABASE_URL"])
    env = {**service_env, "DATABASE_URL": f"postgresql://{MISSING_ROLE}@{parts.hostname}:{parts.port or 5432}/recsvc"}
    worker = start_worker(services, env)

    # The worker retries an unreachable database 3 times with backoff (up to about 14 s) before it gives up.
    with pytest.raises(ml.db.connection.ConnectError) as failed:
        celery_client.send_task("tasks.train").get(timeout=120)

    # Celery stores the task's failure before it calls on_failure, which records the outcome.
    outcome = wait_until(cache.last_training_outcome, 10, "the failed run's outcome")
    assert outcome["status"] == "failed"
    for message in (str(failed.value), outcome["reason"]):
        assert "\n" not in message
        assert "DATABASE_URL=postgresql://" in message and f'role "{MISSING_ROLE}" does not exist' in message
    assert f'role "{MISSING_ROLE}" does not exist; create it' in worker.log()
