"""Operating the pipeline: a manual retrain through the celery CLI, and the run seen in Flower's HTTP API."""

from __future__ import annotations

import subprocess
import sys

import requests

from testing.polling import wait_until
from testing.processes import REPO, free_port, start_worker

FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-test-password"


def celery_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run ``celery -A tasks ARGS`` as an operator would; return its output."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_manual_retrain_through_the_cli_appears_in_flower(loaded_db, cache, service_env, services):
    env = {**service_env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    port = free_port()
    flower = services("flower", ["flower", "--address=127.0.0.1", f"--port={port}"], env)
    start_worker(services, env)
    flower.wait_for_log(r"Visit me at")
    api = f"http://127.0.0.1:{port}/api"
    auth = (FLOWER_USER, FLOWER_PASSWORD)

    task_id = celery_cli(env, "call", "tasks.train").strip()
    output = celery_cli(env, "result", task_id)  # waits for the run to finish

    assert "'status': 'published'" in output
    assert cache.current_version() in output

    def finished_in_flower():
        tasks = requests.get(f"{api}/tasks", params={"taskname": "tasks.train"}, auth=auth, timeout=5).json()
        task = tasks.get(task_id)
        return task if task and task["state"] == "SUCCESS" else None

    task = wait_until(finished_in_flower, 30, "the run to appear in Flower as SUCCESS")
    assert "'status': 'published'" in task["result"] and cache.current_version() in task["result"]

    def worker_in_flower():
        # Flower asks the workers by broadcast with a short timeout: a busy worker may miss one round.
        workers = requests.get(f"{api}/workers", params={"refresh": "1"}, auth=auth, timeout=30).json()
        return any(name.startswith("w1@") for name in workers)

    wait_until(worker_in_flower, 30, "the worker to be listed by Flower", interval=1.0)
    assert requests.get(f"{api}/tasks", timeout=5).status_code == 401  # basic auth is required

    active = celery_cli(env, "inspect", "active", "--timeout=5")
    assert "w1@" in active


def test_bootstrap_through_the_worker_and_a_rejected_run_show_in_flower(loaded_db, cache, service_env, services):
    env = {**service_env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    port = free_port()
    flower = services("flower", ["flower", "--address=127.0.0.1", f"--port={port}"], env)
    flower.wait_for_log(r"Visit me at")
    services("worker-w1", ["worker", "--loglevel=INFO", "--hostname=w1@%h", "--concurrency=1"], env)
    api = f"http://127.0.0.1:{port}/api"
    auth = (FLOWER_USER, FLOWER_PASSWORD)

    def in_flower(name: str, state: str):
        tasks = requests.get(f"{api}/tasks", params={"taskname": name}, auth=auth, timeout=5).json()
        return [task for task in tasks.values() if task["state"] == state]

    # The first model of `make run` (the Procfile's beat line): trained on the worker, so Flower shows it.
    done = subprocess.run(
        [sys.executable, "-m", "tasks.bootstrap", "--through-worker"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    version = cache.current_version()
    assert '"status": "published"' in done.stdout and version in done.stdout
    (first,) = wait_until(lambda: in_flower("tasks.train", "SUCCESS"), 30, "the first run in Flower")
    assert "'status': 'published'" in first["result"] and version in first["result"]
    (check,) = in_flower("tasks.ensure_published", "SUCCESS")
    assert "'status': 'unservable'" in check["result"]

    # Runs that publish nothing but are no failure: SUCCESS, their status leading the result.
    def result_in_flower(task_id: str) -> str | None:
        task = requests.get(f"{api}/task/info/{task_id}", auth=auth, timeout=5)
        return task.ok and task.json()["state"] == "SUCCESS" and task.json()["result"]

    unchanged = celery_cli(env, "call", "tasks.train").strip()
    assert wait_until(lambda: result_in_flower(unchanged), 60, "the unchanged run").startswith("{'status': 'unchanged'")
    lock = cache.training_lock(60)
    assert lock.acquire()
    skipped = celery_cli(env, "call", "tasks.train").strip()
    assert wait_until(lambda: result_in_flower(skipped), 60, "the skipped run").startswith("{'status': 'skipped'")
    lock.release()

    # Data that cannot yield a model: the run fails in Flower, the exception naming the reason.
    with loaded_db.cursor() as cur:
        cur.execute("DELETE FROM interactions")
    loaded_db.commit()
    task_id = celery_cli(env, "call", "tasks.train", "--kwargs", '{"force": true}').strip()
    failed = wait_until(lambda: in_flower("tasks.train", "FAILURE"), 60, "the rejected run in Flower as FAILURE")
    assert [task["uuid"] for task in failed] == [task_id]
    assert failed[0]["exception"] == "RunRejected('no interactions to learn from')"
    assert cache.last_training_outcome()["status"] == "rejected"
    assert cache.current_version() == version
