"""End to end: the app under real gunicorn with several workers, real Redis, new versions published live."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
import redis
import requests

from app.runtime import REDIS_COOLDOWN
from common.recs_cache import RecsCache
from testing.environment import ADMIN_TOKEN, REDIS_PREFIX, TOP_K, server_env
from testing.factories import random_model
from testing.polling import poll
from testing.processes import (
    BARE_GUNICORN_CONFIG,
    GUNICORN,
    REPO,
    GunicornServer,
    child_pids,
    listening_addresses,
    running,
)
from testing.service import publish


@pytest.fixture
def server(redis_url, model_dir, cache, tmp_path):
    publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    gunicorn = GunicornServer(server_env(redis_url, model_dir), workers=3, log_path=tmp_path / "gunicorn.log").start()
    yield gunicorn
    assert gunicorn.stop() == 0, gunicorn.log()


def test_every_worker_serves_a_new_version_within_a_second(server, cache, model_dir):
    old = set(server.worker_versions().values())
    assert len(old) == 1 and len(server.worker_versions()) == 3
    session = requests.Session()
    first = session.get(f"{server.url}/recommendations/user-4", params={"limit": 10}).json()
    assert first["model_version"] in old and first["source"] == "cache"

    newer = random_model(num_users=50, num_items=80, seed=2)
    version = publish(cache, model_dir, newer, top_k=TOP_K)
    published = time.monotonic()
    switched = poll(lambda: server.holds(version), 1.0, 0.02)
    elapsed = time.monotonic() - published
    assert switched, f"workers hold {server.worker_versions()} {elapsed:.2f}s after publishing {version}"
    assert elapsed < 1.0
    # Fresh connections spread over the workers: every answer now carries the new version.
    answers = [requests.get(f"{server.url}/recommendations/user-4", params={"limit": 10}).json() for _ in range(30)]
    assert {a["model_version"] for a in answers} == {version}
    expected = [newer.item_ids[i] for i in newer.top_k([newer.user_index("user-4")], TOP_K)[0][0][:10]]
    assert [r["post_id"] for r in answers[0]["recommendations"]] == expected

    # Paging pinned to the old version continues its ranking on every worker.
    pinned = [
        requests.get(
            f"{server.url}/recommendations/user-4",
            params={"limit": 10, "offset": 10, "version": first["model_version"]},
        ).json()
        for _ in range(12)
    ]
    assert {p["model_version"] for p in pinned} == {first["model_version"]}
    assert len({json.dumps(p["recommendations"]) for p in pinned}) == 1
    assert pinned[0]["recommendations"][0]["rank"] == 11
    first_posts = {r["post_id"] for r in first["recommendations"]}
    assert not first_posts & {r["post_id"] for r in pinned[0]["recommendations"]}


def test_metrics_add_up_over_all_workers(server):
    def count():
        text = requests.get(f"{server.url}/metrics").text
        line = next(
            (
                line
                for line in text.splitlines()
                if line.startswith("recsvc_http_requests_total{")
                and 'endpoint="/recommendations/<user_id>"' in line
                and 'status="200"' in line
            ),
            None,
        )
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = count()
    for i in range(40):  # new connection each time, so several workers answer
        assert requests.get(f"{server.url}/recommendations/user-{i % 7}").status_code == 200
    assert count() - before == 40


def test_errors_are_json_and_access_log_has_the_request_id(server):
    response = requests.get(
        f"{server.url}/recommendations/user-1", params={"limit": "x"}, headers={"X-Request-ID": "e2e-42"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_arguments"
    assert response.headers["X-Request-ID"] == "e2e-42"
    assert requests.get(f"{server.url}/nowhere").json()["error"]["code"] == "not_found"
    # gunicorn decodes %2F before routing: the id has a '/', a 400 naming user_id rather than a routing 404.
    slashed = requests.get(f"{server.url}/recommendations/user%2F0001").json()["error"]
    assert slashed["code"] == "invalid_arguments" and "user_id" in slashed["details"]["fields"]["path"]
    misspelt = requests.get(f"{server.url}/recommendations/user-1?limt=5").json()["error"]
    assert misspelt["code"] == "invalid_arguments" and "limt" in misspelt["message"]
    assert poll(lambda: "request_id=e2e-42" in server.log(), 5)
    entries = [json.loads(line) for line in server.log().splitlines()]  # every log line is one JSON object
    access = [e for e in entries if e["logger"] == "gunicorn.access" and e["message"].endswith("request_id=e2e-42")]
    assert [entry["request_id"] for entry in access] == ["e2e-42"]  # the field, as on the app's own lines


@pytest.mark.parametrize("chunked", [False, True], ids=["with its length", "chunked"])
def test_an_events_body_over_one_mebibyte_is_a_413_however_it_is_sent(server, chunked):
    """Trailing spaces keep the batch valid JSON wherever it is cut: a body cut at the bound must not pass."""
    one = {"user_id": "user-1", "post_id": "post-1", "type": "view", "created_at": "2026-12-01T12:00:00Z"}
    body = json.dumps({"events": [one]}).encode() + b" " * (2 * 1024 * 1024)
    parts = [body[start : start + 65536] for start in range(0, len(body), 65536)]
    connection = http.client.HTTPConnection(*server.url.removeprefix("http://").split(":"), timeout=10)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    sent = iter(parts) if chunked else body
    connection.request("POST", "/events", body=sent, headers=headers, encode_chunked=chunked)
    response = connection.getresponse()
    assert response.status == 413, response.read()
    assert json.loads(response.read())["error"]["code"] == "payload_too_large"
    connection.close()


def test_a_page_excluding_200_uuids_fits_the_request_line_and_a_longer_line_is_a_414(server):
    """DESIGN's 200 excluded post ids fit gunicorn's request line when they are UUIDs (8,190 bytes at most)."""
    exclude = ",".join(str(uuid.UUID(int=n)) for n in range(200))
    page = requests.get(f"{server.url}/recommendations/user-1", params={"limit": 5, "exclude": exclude})
    assert page.status_code == 200, page.text
    refused = requests.get(f"{server.url}/recommendations/user-1", params={"exclude": "p" * 8200})
    assert refused.status_code == 414 and refused.json()["error"]["code"] == "request_uri_too_long"


def sources_of(answers: list[dict]) -> set[tuple[str, str]]:
    """The (model_version, source) pairs that pages were served with."""
    return {(a["model_version"], a["source"]) for a in list(answers)}


def test_requests_keep_succeeding_while_redis_stops_and_restarts(model_dir, tmp_path, private_redis):
    cache = RecsCache(redis.Redis.from_url(private_redis.url), REDIS_PREFIX)
    first = publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    # A memo of 5 users per worker, so that while Redis is away most of the 50 users' pages come from the
    # model (the others from lists the workers had already read).
    env = {**server_env(private_redis.url, model_dir), "API_LIST_MEMO_USERS": "5"}
    failures, answers, stop = [], [], threading.Event()
    with GunicornServer(env, workers=2, log_path=tmp_path / "g.log").start() as server:

        def load():
            session = requests.Session()
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = session.get(f"{server.url}/recommendations/user-{i % 50}", params={"limit": 5}, timeout=5)
                    (answers if r.status_code == 200 else failures).append(r.json())
                except requests.RequestException as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            private_redis.stop()
            time.sleep(2.0)
            during = len(answers)
            private_redis.start()  # empty: no persistence
            time.sleep(1.0)
            second = publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=2), top_k=TOP_K)
            caught_up = poll(lambda: server.holds(second), 15, 0.1)
            # A worker whose last Redis call failed just before the restart skips Redis for REDIS_COOLDOWN
            # (computing pages from the model meanwhile); after that its pages come from the new lists.
            back_on_cache = poll(lambda: (second, "cache") in sources_of(answers), REDIS_COOLDOWN + 10, 0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert not failures, failures[:3]
        assert caught_up, server.worker_versions()
        assert back_on_cache, server.log()[-3000:]
        assert {(first, "cache"), (first, "model")} <= sources_of(answers)
        assert during > 0
        assert server.stop() == 0


def listening_sockets(pid: int, port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` that process ``pid`` holds."""
    return {inode for inode, (_, bound) in listening_addresses(pid).items() if bound == port}


def test_every_worker_listens_on_its_own_socket(server):
    """SO_REUSEPORT: the kernel spreads new connections evenly over the workers' sockets.

    On one socket shared by all workers, the worker that wakes first under load takes nearly all of them
    (32 connections were seen split 29/3/0/0), and a keep-alive connection stays where it landed.
    """
    sockets = [listening_sockets(pid, server.port) for pid in server.worker_pids()]
    assert all(len(own) == 1 for own in sockets), sockets
    assert len(set().union(*sockets)) == len(sockets)  # no socket is shared


def test_without_reuse_port_the_workers_share_a_socket_and_usr2_upgrades_in_place(
    redis_url, model_dir, cache, tmp_path
):
    """API_REUSE_PORT=0 gives gunicorn's in-place upgrade back: USR2 starts a new master on the old one's
    socket, TERM then retires the old master, and no request fails on the way."""
    publish(cache, model_dir, random_model(num_users=50, num_items=80, seed=1), top_k=TOP_K)
    env = {**server_env(redis_url, model_dir), "API_REUSE_PORT": "0"}
    server = GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
    failures, answered, stop = [], [], threading.Event()

    def load():  # a new connection per request, as clients arriving during the upgrade would make
        while not stop.is_set():
            try:
                response = requests.get(f"{server.url}/recommendations/user-{len(answered) % 50}", timeout=10)
                (answered if response.status_code == 200 else failures).append(response.status_code)
            except requests.RequestException as exc:
                failures.append(repr(exc))

    loader = threading.Thread(target=load)
    new_master = None
    try:  # from here on, whatever fails, both masters are stopped
        old_workers = server.worker_pids()
        shared = [listening_sockets(pid, server.port) for pid in old_workers]
        assert len(set().union(*shared)) == 1 and all(shared), shared
        loader.start()
        os.kill(server.master_pid, signal.SIGUSR2)
        new_master = poll(lambda: next((p for p in server.worker_pids() if p not in old_workers), None), 30)
        assert new_master, server.log()[-3000:]
        assert poll(lambda: len(child_pids(new_master)) == 2, 30), server.log()[-3000:]
        before_retiring = len(answered)
        assert server.stop() == 0, server.log()[-3000:]  # TERM: the old master and workers finish and exit
        new_workers = child_pids(new_master)
        assert not set(new_workers) & set(old_workers)
        # The new workers serve on the inherited socket, and their master keeps its own metrics.
        assert poll(lambda: set(server.worker_versions()) == {str(p) for p in new_workers}, 30)
        statuses = [
            requests.get(f"{server.url}/admin/model-status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            for _ in range(10)
        ]
        assert {s.json()["worker_pid"] for s in statuses} <= set(new_workers)
        time.sleep(0.5)
    finally:
        stop.set()
        if loader.is_alive():
            loader.join(30)
        server.stop()  # a no-op once the old master was retired above
        if new_master is not None and running(new_master):
            os.kill(new_master, signal.SIGTERM)
            assert poll(lambda: not running(new_master), 30), "the new master did not stop"
    assert not failures, failures[:5]
    assert len(answered) > before_retiring > 0


@pytest.mark.parametrize(("threshold", "expected"), [(None, 50_000), ("1234", 1234)])
def test_workers_pin_blas_freeze_the_loaded_app_and_make_collections_rare(redis_url, tmp_path, threshold, expected):
    """post_worker_init pins BLAS to one thread, calls gc.freeze() (full collections then skip the app's objects
    during requests) and sets the collector's threshold to API_GC_THRESHOLD."""
    env = server_env(redis_url, tmp_path / "models")
    if threshold is not None:
        env["API_GC_THRESHOLD"] = threshold
    probe = GunicornServer(env, workers=1, app="tests.e2e.worker_probe_app:app", config=BARE_GUNICORN_CONFIG).start()
    try:
        answer = requests.get(probe.url, timeout=5).json()
    finally:
        assert probe.stop() == 0, probe.log()
    assert answer["frozen"] > 1000
    assert answer["threshold"] == expected
    assert answer["blas"] and set(answer["blas"]) == {1}  # on every BLAS loaded (numpy's, scipy's)


def test_a_second_server_on_a_taken_port_is_refused(server):
    """With reuse_port it would otherwise start silently and take part of the first one's traffic."""
    result = subprocess.run(
        [str(GUNICORN), "wsgi:app"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "API_HOST": "127.0.0.1", "API_PORT": str(server.port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr


def test_a_bad_setting_stops_gunicorn_at_start_naming_the_variable():
    result = subprocess.run(
        [str(GUNICORN), "wsgi:app"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "API_WORKERS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "API_WORKERS" in result.stderr and "invalid" in result.stderr


def test_a_host_that_does_not_resolve_stops_gunicorn_at_start_naming_api_host():
    result = subprocess.run(
        [str(GUNICORN), "wsgi:app"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "API_HOST": "not a host!", "API_PORT": "8000"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "API_HOST='not a host!'" in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("reuse_port", ["1", "0"])
def test_the_master_logs_the_address_it_serves(redis_url, model_dir, cache, tmp_path, reuse_port):
    """With reuse_port the master opens no socket itself, and gunicorn logged ``Listening at:  (pid)``."""
    publish(cache, model_dir, random_model(num_users=5, num_items=10, seed=1), top_k=TOP_K)
    env = {**server_env(redis_url, model_dir), "API_REUSE_PORT": reuse_port}
    with GunicornServer(env, workers=1, log_path=tmp_path / "gunicorn.log").start() as server:
        messages = [json.loads(line)["message"] for line in server.log().splitlines()]
        listening = [m for m in messages if m.startswith("Listening at:")]
        assert listening == [f"Listening at: {server.url} ({server.master_pid})"], listening
