"""Fixtures of the training-pipeline tests: demo data in PostgreSQL, settings, and real Celery processes.

Processes (worker, beat, Flower, the celery CLI) run as they do in production, as subprocesses of
``celery -A tasks ...`` in their own process group, pointed at the test PostgreSQL database, the test Redis
databases and a temporary MODEL_DIR through their environment. Teardown kills every process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

import ml.db
from common.config import Settings, load_settings
from common.recs_cache import RecsCache
from tasks import limits, pipeline

REPO = Path(__file__).resolve().parents[2]

# Pub/sub channels are global to the Redis server, not per database: a prefix of this session's own keeps
# other test runs' model updates off the channel these tests listen to.
REDIS_PREFIX = f"recsvc-test-tasks-{os.getpid()}:"

# Small enough that a run takes a second or two on a busy 2-core machine, big enough to beat popularity.
DEMO_USERS, DEMO_POSTS, DEMO_INTERACTIONS = 150, 240, 4000


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def write_demo(out_dir: Path, users: int, posts: int, interactions: int, seed: int = 7) -> Path:
    """Write a demo dataset directory with ``python -m ml.demo`` (the command users run)."""
    subprocess.run(
        [sys.executable, "-m", "ml.demo", "--out", str(out_dir), "--users", str(users), "--posts", str(posts),
         "--interactions", str(interactions), "--seed", str(seed)],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out_dir


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The small demo dataset every test starts from."""
    return write_demo(tmp_path_factory.mktemp("demo"), DEMO_USERS, DEMO_POSTS, DEMO_INTERACTIONS)


@pytest.fixture
def loaded_db(pg_conn, demo_dir):
    """The test database with the schema and the demo dataset; returns a connection to it."""
    ml.db.create_schema(pg_conn)
    ml.db.load_dataset_dir(pg_conn, demo_dir)
    pg_conn.commit()
    return pg_conn


@pytest.fixture
def service_env(database_url, redis_url, celery_redis_url, tmp_path) -> dict[str, str]:
    """Environment of the service's processes in these tests; a test adjusts it before starting them."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CELERY", "FLOWER"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=REDIS_PREFIX,
        CELERY_BROKER_URL=celery_redis_url,
        CELERY_RESULT_BACKEND=celery_redis_url,
        MODEL_DIR=str(tmp_path / "models"),
        TRAIN_INTERVAL_SECONDS="300",
        TRAIN_TIME_LIMIT_SECONDS="60",
        QUALITY_GATE_MARGIN="0.2",
        RECS_RETAIN_SECONDS="1800",
        LIGHTFM_EPOCHS="30",
        TRAIN_THREADS="1",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The settings the service's processes read from ``env``."""
    return load_settings(env, dotenv=False)


@pytest.fixture
def cache(redis_client) -> RecsCache:
    """A RecsCache on the test Redis database, with the prefix the test processes use."""
    return RecsCache(redis_client, REDIS_PREFIX)


@pytest.fixture
def celery_client(celery_redis_url) -> Iterator[Celery]:
    """A Celery client on the test broker: sends tasks by name and reads results, as an operator would."""
    client = Celery("test-client", broker=celery_redis_url, backend=celery_redis_url)
    client.conf.update(
        task_serializer="json", accept_content=["json"], result_accept_content=["json"], result_extended=True
    )
    yield client
    client.close()


class ServiceProcess:
    """One service process (``celery -A tasks ...``) in its own process group, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """Wait until the process's output matches ``pattern`` (a regex); fail early if the process exits."""

        def found():
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return re.search(pattern, self.log())

        return wait_until(found, timeout, f"{pattern!r} in the output of {self.name}", interval=0.05)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (a worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Kill the process group and reap the leader."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._log.close()


@pytest.fixture
def services(tmp_path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start service processes: ``services(name, args, env)``; every process group is killed at teardown."""
    started: list[ServiceProcess] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> ServiceProcess:
        process = ServiceProcess(name, args, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def start_worker(services, env: dict[str, str], name: str = "w1", concurrency: int = 1) -> ServiceProcess:
    """A ``celery -A tasks worker`` process, returned once it is consuming."""
    worker = services(
        f"worker-{name}",
        ["worker", "--loglevel=INFO", f"--hostname={name}@%h", f"--concurrency={concurrency}", "--without-gossip",
         "--without-mingle", "--pool=prefork"],
        env,
    )  # fmt: skip
    worker.wait_for_log(r"\bready\.")
    return worker


def run_train(celery_client: Celery, timeout: float = 90.0, force: bool = True) -> dict:
    """Send ``tasks.train`` by name, as beat and the CLI do, and wait for its result.

    Forced by default: most tests retrain on the data of the version already published, which an unforced
    run answers with ``unchanged``.
    """
    return celery_client.send_task("tasks.train", kwargs={"force": force}).get(timeout=timeout)


def next_update(cache: RecsCache, pubsub, timeout: float = 10.0) -> dict:
    """The next well-formed update message on the model-updates channel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = cache.parse_update(pubsub.get_message(timeout=0.2))
        if update:
            return update
    pytest.fail(f"no model update announced within {timeout:.0f} s")


def publish_once(settings, cache: RecsCache):
    """One whole forced in-process run with the lock held, as the train task does for a single chunk."""
    lock = cache.training_lock(limits.lock_ttl(settings))
    assert lock.acquire()
    try:
        stages = pipeline.Stages()
        candidate, model = pipeline.build_candidate(settings, cache, stages, force=True)
        previous = pipeline.precompute_and_publish(settings, cache, lock, candidate, model, stages)
    finally:
        pipeline.release_lock(lock)
    return candidate, model, previous, stages
