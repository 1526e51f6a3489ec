"""Experiments in the web app: the variant in every page, the popularity control, the served stream,
/admin/experiments and the scrape-time gauges of the online report."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from app import metrics
from app.runtime import build_runtime
from app.served_log import QUEUE_PAGES, ServedLog
from common.config import load_settings
from common.experiments import parse_experiment
from common.recs_cache import RecsCache, ServedEntry
from testing.environment import REDIS_PREFIX
from testing.factories import random_model
from testing.polling import poll
from testing.service import publish

EXPERIMENT = {
    "name": "pop-control",
    "control": "popular",
    "variants": [
        {"name": "model", "share": 0.4, "ranking": "production"},
        {"name": "popular", "share": 0.4, "ranking": "popular"},
        {"name": "bpr", "share": 0.2, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr"}},
    ],
}


@pytest.fixture
def model():
    return random_model(num_users=30, num_items=40, seed=3, exclude={u: [0, 1] for u in range(30)})


@pytest.fixture
def version(cache, model_dir, model):
    return publish(cache, model_dir, model, top_k=30)


@pytest.fixture
def experiment_client(make_app, settings_env, version):
    return make_app(
        {**settings_env, "EXPERIMENT": json.dumps(EXPERIMENT), "SERVED_STREAM_MAXLEN": "1000"}
    ).test_client()


def test_pages_carry_the_users_variant_and_the_control_gets_the_popularity_feed(experiment_client, model):
    experiment = parse_experiment(json.dumps(EXPERIMENT))
    seen = set()
    for u in range(30):
        user = f"user-{u}"
        body = experiment_client.get(f"/recommendations/{user}?limit=10").get_json()
        variant = experiment.assign(user)
        seen.add(variant.name)
        assert (body["experiment"], body["variant"]) == ("pop-control", variant.name)
        assert body["variant_fallback"] is (variant.ranking == "model")  # no bpr model is served: production answers
        posts = [r["post_id"] for r in body["recommendations"]]
        popular = [f"post-{i}" for i in model.popular_items if i not in (0, 1)][:10]
        if variant.ranking == "popular":
            assert body["strategy"] == "popular" and posts == popular
        else:
            assert body["strategy"] == "personalized"
        assert {"post-0", "post-1"}.isdisjoint(posts)  # what the model excludes for the user, in every variant
    assert seen == {"model", "popular", "bpr"}


def test_without_an_experiment_pages_say_so_and_nothing_is_recorded_when_disabled(
    make_app, settings_env, version, cache
):
    client = make_app({**settings_env, "SERVED_STREAM_MAXLEN": "0"}).test_client()
    body = client.get("/recommendations/user-1").get_json()
    assert (body["experiment"], body["variant"], body["variant_fallback"]) == (None, None, False)
    assert cache.served_backlog() == 0


def test_each_page_is_recorded_in_the_served_stream(experiment_client, cache):
    body = experiment_client.get("/recommendations/user-2?limit=5&offset=5").get_json()
    # The worker's thread writes the queued pages within FLUSH_SECONDS.
    assert poll(lambda: cache.served_backlog(), timeout=5), "the page never reached the stream"
    (page,) = cache.read_served_pages(10)
    assert page.user_id == "user-2" and page.first_rank == 6
    assert page.post_ids == [r["post_id"] for r in body["recommendations"]]
    assert (page.experiment, page.variant, page.model_version) == (
        "pop-control",
        body["variant"],
        body["model_version"],
    )
    assert page.ranking == ("popular" if body["variant"] == "popular" else "production")
    assert abs(page.served_ms / 1000 - time.time()) < 60  # the serving time, which attribution starts from


def test_the_stream_is_bounded(make_app, settings_env, version, cache):
    app = make_app({**settings_env, "SERVED_STREAM_MAXLEN": "10"})
    client = app.test_client()
    for _ in range(300):
        client.get("/recommendations/user-3?limit=2")
    app.extensions["recsvc"].served_log.flush()
    # Approximate trimming drops whole macro nodes (100 entries by default): at most about maxlen + 100.
    assert 10 <= cache.served_backlog() <= 110


def test_admin_experiments_needs_the_token_and_shows_the_configuration_and_report(
    experiment_client, admin_headers, cache
):
    assert experiment_client.get("/admin/experiments").status_code == 401
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert experiment_client.get("/admin/experiments", headers=wrong).status_code == 401
    body = experiment_client.get("/admin/experiments", headers=admin_headers).get_json()
    assert body["configured"]["name"] == "pop-control" and body["report"] is None
    assert [v["name"] for v in body["configured"]["variants"]] == ["model", "popular", "bpr"]
    assert body["attribution_window_hours"] == 24.0
    report = {
        "experiment": {"name": "pop-control", "control": "popular", "days": [_day()]},
        "quality": _quality(),
        "computed_at": "2026-03-02T12:00:00+00:00",
    }
    cache.store_online_report(report)
    body = experiment_client.get("/admin/experiments", headers=admin_headers).get_json()
    assert body["report"] == report["experiment"] and body["computed_at"] == report["computed_at"]
    status = experiment_client.get("/admin/model-status", headers=admin_headers).get_json()
    assert status["online"] == report["quality"]


def _day():
    vs = {"relative_difference": 0.5, "ci_low": 0.18, "ci_high": 0.9, "p_value": 0.0007}
    clicks = {"view": 0, "like": 0, "comment": 0, "any": 150}
    ctr = {"view": 0.0, "like": 0.0, "comment": 0.0, "any": 0.15}
    return {
        "day": "2026-03-02",
        "variants": [
            {
                "variant": "model",
                "impressions": 1000,
                "users": 50,
                "clicks": clicks,
                "ctr": ctr,
                "vs_control": {"any": vs},
            },
            {"variant": "popular", "impressions": 1000, "users": 50, "clicks": clicks, "ctr": ctr, "vs_control": None},
        ],
    }


def _quality(alert=False):
    daily = [{"day": "2026-03-02", "impressions": 1000, "clicks": 150, "ctr": 0.15}]
    return {"daily": daily, "ctr_today": 0.15, "ctr_trailing_week": 0.2, "drop_fraction": 0.2, "alert": alert}


def test_metrics_expose_the_online_report_redis_and_training(experiment_client, cache):
    text = experiment_client.get("/metrics").get_data(as_text=True)
    assert "recsvc_redis_up 1.0" in text and "recsvc_online_ctr" not in text
    cache.store_online_report(
        {"experiment": {"name": "pop-control", "control": "popular", "days": [_day()]}, "quality": _quality(True)}
    )
    cache.record_training_outcome({"status": "failed", "reason": "x"})
    text = experiment_client.get("/metrics").get_data(as_text=True)
    for line in (
        "recsvc_online_ctr 0.15",
        "recsvc_online_ctr_trailing_week 0.2",
        "recsvc_online_ctr_drop_alert 1.0",
        "recsvc_training_last_run_failed 1.0",
        'recsvc_experiment_impressions{experiment="pop-control",variant="model"} 1000.0',
        'recsvc_experiment_ctr{experiment="pop-control",type="any",variant="model"} 0.15',
        'recsvc_experiment_relative_difference{bound="low",experiment="pop-control",variant="model"} 0.18',
        'recsvc_experiment_p_value{experiment="pop-control",variant="model"} 0.0007',
    ):
        assert line in text, line


def test_metrics_say_redis_is_down(make_app, settings_env, dead_redis_url):
    client = make_app({**settings_env, "REDIS_URL": dead_redis_url}).test_client()
    assert "recsvc_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)


def _entry(i=0):
    return ServedEntry(f"user-{i}", ["post-1", "post-2"], 1, "", "production", "production", "v1", 1_700_000_000_000)


def test_served_pages_are_written_by_the_workers_thread_in_batches(redis_client):
    cache = RecsCache(redis_client, REDIS_PREFIX)
    log = ServedLog(cache, maxlen=1000, flush_seconds=0.05)
    for i in range(50):
        log.record(_entry(i))
    assert poll(lambda: cache.served_backlog() == 50, timeout=5)
    assert [p.user_id for p in cache.read_served_pages(100)] == [f"user-{i}" for i in range(50)]
    log.close()


def test_a_flush_returns_once_every_page_queued_before_it_is_written(redis_client):
    """A flush while the log's thread is writing a batch waits for that batch (the race a test of the stream's
    bound lost under load: its own flush returned with the thread's batch still on its way)."""
    cache = RecsCache(redis_client, REDIS_PREFIX)
    writing, release = threading.Event(), threading.Event()
    write = cache.record_served_pages

    def slow_write(entries, maxlen):  # the first write (the thread's) is held until released
        if not writing.is_set():
            writing.set()
            release.wait(5)
        write(entries, maxlen)

    cache.record_served_pages = slow_write  # type: ignore[method-assign]
    log = ServedLog(cache, maxlen=1000, flush_seconds=0.01)
    for i in range(50):
        log.record(_entry(i))
    assert writing.wait(5)  # the thread took the 50 pages and is writing them
    log.record(_entry(50))
    flushed = threading.Thread(target=log.flush)
    flushed.start()
    flushed.join(0.3)
    assert flushed.is_alive()  # it waits for the batch in flight
    release.set()
    flushed.join(5)
    assert cache.served_backlog() == 51
    log.close()


# Holds redis-server busy (a script runs alone) for 0.35 s: longer than a request's timeout (0.2 s), shorter than
# two after the 0.05 s the test waits before it flushes.
_BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > 350000
return 1
"""


def test_a_batch_whose_reply_comes_late_is_not_written_twice(private_redis, tmp_path):
    """A batch is written at most once: a retry after a reply that came too late repeats pages Redis has.

    The app's served log, its Redis client as the app makes it. redis-server, busy for 0.35 s, runs the batch
    once it is free, after the client gave up waiting (0.2 s); a retry sent meanwhile would run it again.
    """
    env = {"REDIS_URL": private_redis.url, "REDIS_PREFIX": REDIS_PREFIX, "MODEL_DIR": str(tmp_path)}
    runtime = build_runtime(load_settings(env, dotenv=False))
    log, cache = runtime.served_log, RecsCache(redis.Redis.from_url(private_redis.url), REDIS_PREFIX)
    log.record(_entry(0))
    log.flush()  # connected, and the script that writes a batch is loaded: the next batch is sent at once
    for i in range(1, 51):
        log.record(_entry(i))
    busy = threading.Thread(target=lambda: redis.Redis.from_url(private_redis.url).eval(_BUSY_SCRIPT, 0))
    busy.start()
    time.sleep(0.05)
    assert log.flush() == 0  # no reply in time: counted lost, though Redis will run it
    busy.join()
    assert poll(lambda: cache.served_backlog() == 51, timeout=5)  # redis-server ran the batch, late
    time.sleep(0.3)  # and would have run a retry's copy by now
    assert cache.served_backlog() == 51
    runtime.close()


def test_served_pages_lost_when_redis_is_down_or_the_queue_is_full(dead_redis_url):
    lost = metrics.SERVED_PAGES_LOST._value.get()
    log = ServedLog(RecsCache(redis.Redis.from_url(dead_redis_url), REDIS_PREFIX), maxlen=1000, flush_seconds=60)
    # Its thread would flush after 60 s: this test flushes itself.
    for i in range(QUEUE_PAGES + 5):
        log.record(_entry(i))
    assert metrics.SERVED_PAGES_LOST._value.get() == lost + 5  # beyond the queue's bound
    assert log.flush() == 0  # Redis refused: the batch is dropped and counted
    assert metrics.SERVED_PAGES_LOST._value.get() == lost + 5 + QUEUE_PAGES
    log.close()


def test_the_openapi_document_describes_the_experiment_fields_and_endpoint(client):
    spec = client.get("/openapi.json").get_json()
    page = spec["components"]["schemas"]["Recommendations"]
    assert {"experiment", "variant", "variant_fallback"} <= set(page["required"])
    assert spec["paths"]["/admin/experiments"]["get"]["security"] == [{"adminToken": []}]
    answer = spec["paths"]["/admin/experiments"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Experiments")
    assert "online" in spec["components"]["schemas"]["ModelStatus"]["properties"]
