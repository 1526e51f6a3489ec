"""End to end: beat schedules tasks.refresh, a worker runs it, the live state follows, Flower shows it.

Real processes (``celery -A tasks worker`` and ``beat`` from the pipeline tests' fixtures) and the real test
database. The PostgreSQL outage is a TCP proxy between the worker and the shared server that the test closes
(refusing new connections and cutting open ones) and opens again: the shared server itself is never stopped.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import redis
import requests

from tasks import refresh_pipeline
from testing.polling import wait_until
from testing.processes import free_port, start_worker
from testing.service import run_train

INTERVAL = 2  # REFRESH_INTERVAL_SECONDS of these tests
BOUND = INTERVAL + 5  # the bound: a row reaches the live state within the interval plus 5 s


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target address; ``close`` makes the target unreachable, ``open`` again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not on Linux
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def insert_post(conn, post_id: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM communities ORDER BY id LIMIT 1")
        cur.execute(
            "INSERT INTO posts (id, community_id, author_id, tags, created_at) VALUES (%s, %s, NULL, %s, now())",
            (post_id, cur.fetchone()[0], ["live"]),
        )


def pooled(cache, post_id: str) -> bool:
    state = cache.live_state()
    return state is not None and any(post[0] == post_id for post in cache.live_pool(state.generation) or [])


def refresh_results(celery_redis_url: str) -> list[dict]:
    """Every finished tasks.refresh result in the result backend (what Flower shows), oldest first."""
    backend = redis.Redis.from_url(celery_redis_url)
    results = []
    for key in backend.scan_iter("celery-task-meta-*"):
        meta = json.loads(backend.get(key))
        if meta.get("name") == "tasks.refresh" and meta.get("status") == "SUCCESS":
            results.append(meta)
    return sorted(results, key=lambda meta: meta["date_done"])


def test_beat_refreshes_within_the_interval_and_flower_shows_what_it_found(
    loaded_db, cache, service_env, services, celery_client, celery_redis_url
):
    service_env["REFRESH_INTERVAL_SECONDS"] = str(INTERVAL)
    service_env["FLOWER_BASIC_AUTH"] = "ops:flower-test-password"
    flower_port = free_port()
    flower = services("flower", ["flower", "--address=127.0.0.1", f"--port={flower_port}"], service_env)
    start_worker(services, service_env, concurrency=2)
    flower.wait_for_log(r"Visit me at")
    trained = run_train(celery_client)
    assert trained["status"] == "published", trained
    services("beat", ["beat", "--loglevel=INFO", "--schedule", str(service_env["MODEL_DIR"]) + "-beat"], service_env)
    assert wait_until(lambda: cache.live_state(), BOUND + 30, "the first refresh after the publish")
    assert cache.live_state().model_version == trained["version"]

    insert_post(loaded_db, "live-post-1")
    inserted = time.monotonic()
    wait_until(lambda: pooled(cache, "live-post-1"), BOUND, "the new post in the live pool")
    assert time.monotonic() - inserted <= BOUND

    found = wait_until(
        lambda: [r for r in refresh_results(celery_redis_url) if r["result"]["new_posts"] == 1],
        10,
        "the refresh that found the post in the result backend",
    )
    result = found[-1]["result"]
    assert result["status"] == "published" and result["read"]["posts"] >= 1 and result["seconds"] < INTERVAL
    assert set(result["watermarks"]) == set(refresh_pipeline.TABLES)

    def in_flower():
        tasks = requests.get(
            f"http://127.0.0.1:{flower_port}/api/tasks",
            params={"taskname": "tasks.refresh"},
            auth=("ops", "flower-test-password"),
            timeout=5,
        ).json()
        task = tasks.get(found[-1]["task_id"])
        return task if task and task["state"] == "SUCCESS" else None

    shown = wait_until(in_flower, 30, "the refresh that found the post in Flower")
    assert "'new_posts': 1" in shown["result"] and "'watermarks'" in shown["result"]


def test_postgresql_away_during_refreshes_leaves_the_live_state_and_the_next_refresh_recovers(
    loaded_db, cache, service_env, services, celery_client, database_url
):
    host, port = "127.0.0.1", 5432
    proxy = TcpProxy((host, port)).open()
    try:
        service_env["REFRESH_INTERVAL_SECONDS"] = str(INTERVAL)
        service_env["DATABASE_URL"] = database_url.replace(f"{host}:{port}", f"{host}:{proxy.port}")
        assert service_env["DATABASE_URL"] != database_url
        worker = start_worker(services, service_env, concurrency=2)
        assert run_train(celery_client)["status"] == "published"
        services(
            "beat", ["beat", "--loglevel=INFO", "--schedule", str(service_env["MODEL_DIR"]) + "-beat"], service_env
        )
        wait_until(lambda: cache.live_state(), BOUND + 30, "the first refresh")

        proxy.close()
        insert_post(loaded_db, "live-post-2")  # straight to the server: only the worker's path is cut
        worker.wait_for_log(r"tasks\.refresh\[[^\]]+\] retry: Retry in", timeout=BOUND + 10)
        before = cache.live_state()
        time.sleep(INTERVAL * 3)  # more refreshes and retries fail meanwhile
        during = cache.live_state()
        assert (during.generation, during.watermarks) == (before.generation, before.watermarks)
        assert not pooled(cache, "live-post-2")

        proxy.open()
        recovered = time.monotonic()
        wait_until(lambda: pooled(cache, "live-post-2"), BOUND + 10, "the post once PostgreSQL is back")
        assert time.monotonic() - recovered <= BOUND + 10
    finally:
        proxy.close()


def test_a_refresh_skips_while_another_holds_its_lock_and_ignores_the_training_lock(
    loaded_db, cache, service_env, services, celery_client
):
    start_worker(services, service_env, concurrency=2)
    assert run_train(celery_client)["status"] == "published"
    training = cache.training_lock(60)
    assert training.acquire()  # a training run in progress does not hold a refresh up
    try:
        ran = celery_client.send_task("tasks.refresh").get(timeout=30)
        assert ran["status"] == "published" and ran["new_model"] is True
        other = cache.refresh_lock(60)
        assert other.acquire()
        try:
            assert celery_client.send_task("tasks.refresh").get(timeout=30) == {
                "status": "skipped",
                "reason": "a refresh is already running",
            }
        finally:
            other.release()
        assert celery_client.send_task("tasks.refresh").get(timeout=30)["status"] == "unchanged"
    finally:
        training.release()
