"""The model reloader thread against real Redis: messages, polling, failed loads."""

from __future__ import annotations

import time

import pytest
import redis
from prometheus_client import REGISTRY

from app.model_holder import ModelHolder
from app.reloader import ModelReloader
from common.recs_cache import RecsCache
from testing.environment import REDIS_PREFIX
from testing.factories import random_model
from testing.polling import poll
from testing.service import publish


class DeafCache(RecsCache):
    """A cache whose subscription listens where nothing is published, so only polling can see updates."""

    @property
    def channel(self) -> str:
        return self.prefix + "nothing-is-published-here"


@pytest.fixture
def run_reloader(redis_url):
    started = []

    def run(holder, cache_class=RecsCache, **options):
        cache = cache_class(redis.Redis.from_url(redis_url), REDIS_PREFIX)
        reloader = ModelReloader(holder, cache, **options)
        reloader.start()
        started.append(reloader)
        return reloader

    yield run
    for reloader in started:
        reloader.stop()
        reloader.close()
        assert not reloader.is_alive()


def listening() -> bool:
    """Whether the reloader of this process is subscribed (its ``recsvc_reloader_listening`` gauge)."""
    return REGISTRY.get_sample_value("recsvc_reloader_listening") == 1


def holder_for(cache, model_dir):
    return ModelHolder(str(model_dir), cache.current_version)


def test_a_published_version_is_loaded_within_a_second(cache, model_dir, run_reloader):
    first = publish(cache, model_dir, random_model(seed=1), top_k=5)
    holder = holder_for(cache, model_dir)
    holder.reload()
    swapped_in = []
    reloader = run_reloader(holder, poll_interval=60, on_loaded=swapped_in.append)  # only the message is fast
    assert poll(listening, 5.0)  # subscribed: the message will reach it
    second = publish(cache, model_dir, random_model(seed=2), top_k=5)
    published_at = time.monotonic()
    assert poll(lambda: holder.current.version == second, 1.0), f"still on {holder.current.version}"
    assert time.monotonic() - published_at < 1.0
    assert poll(lambda: swapped_in == [second], 1.0), swapped_in
    assert reloader.is_alive() and first != second


def test_a_version_announced_while_not_listening_is_found_by_polling(cache, model_dir, run_reloader):
    publish(cache, model_dir, random_model(seed=1), top_k=5)
    holder = holder_for(cache, model_dir)
    holder.reload()
    run_reloader(holder, cache_class=DeafCache, poll_interval=0.3)
    time.sleep(0.2)
    second = publish(cache, model_dir, random_model(seed=2), top_k=5)
    assert poll(lambda: holder.current.version == second, 2.0)


def test_a_failed_load_keeps_the_old_model_and_is_not_retried_at_once(cache, model_dir, run_reloader, caplog):
    first = publish(cache, model_dir, random_model(seed=1), top_k=5)
    holder = holder_for(cache, model_dir)
    holder.reload()
    run_reloader(holder, poll_interval=0.1, retry_failed_after=60)
    time.sleep(0.2)

    def damage(version):
        (model_dir / f"{version}.npz").write_bytes(b"not a model")

    broken = publish(cache, model_dir, random_model(seed=2), top_k=5, before_publish=damage)
    assert poll(lambda: holder.last_error is not None, 2.0)
    time.sleep(0.5)  # several polls: the broken version must not be re-read each time
    assert holder.current.version == first
    assert holder.last_error["version"] == broken
    failures = [r for r in caplog.records if r.levelname == "ERROR" and broken in r.getMessage()]
    assert len(failures) == 1


def test_the_reloader_keeps_retrying_an_unreachable_redis_and_stops_cleanly(dead_redis_url, model_dir):
    holder = ModelHolder(str(model_dir), lambda: None)
    dead = RecsCache(redis.Redis.from_url(dead_redis_url), REDIS_PREFIX)
    reloader = ModelReloader(holder, dead, max_backoff=0.2)
    reloader.start()
    try:
        time.sleep(0.5)  # several failed connection attempts
        assert reloader.is_alive() and holder.current is None
    finally:
        reloader.stop()
        reloader.close()
    assert not reloader.is_alive()


def test_the_listening_gauge_follows_the_subscription(private_redis, model_dir):
    cache = RecsCache(redis.Redis.from_url(private_redis.url, socket_timeout=1), REDIS_PREFIX)
    reloader = ModelReloader(ModelHolder(str(model_dir), lambda: None), cache, poll_interval=0.1, max_backoff=0.2)
    reloader.start()
    try:
        assert poll(listening, 5.0)
        assert cache.client.pubsub_numsub(cache.channel)[0][1] == 1
        private_redis.stop()
        assert poll(lambda: not listening(), 5.0), "still listening with Redis stopped"
        private_redis.start()
        assert poll(listening, 5.0), "not listening again after Redis came back"
    finally:
        reloader.stop()
        reloader.close()
    assert not listening()
