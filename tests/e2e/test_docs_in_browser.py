"""End to end: /docs (Swagger UI) and /redoc (ReDoc) in a real headless Chromium, served by gunicorn.

A check that the pages and their scripts are served is not enough: ReDoc 3 was served fine and showed a blank
page, because its bundle is an ES module that the page loaded as a classic script. Here the browser runs the
page's scripts, and the test reads what a user would see.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis

from common.recs_cache import RecsCache
from testing.environment import REDIS_PREFIX, TEST_REDIS_URL, server_env
from testing.factories import random_model
from testing.processes import GunicornServer
from testing.service import publish
from tests.e2e.browser import CHROMIUM, Browser

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; make test installs it as root)"
)

OPERATION = "/recommendations/{user_id}"


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    """One gunicorn worker with a published model, shared by the module's tests (the pages only read it)."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    model_dir = tmp_path_factory.mktemp("models")
    publish(RecsCache(client, REDIS_PREFIX), model_dir, random_model(num_users=5, num_items=10, seed=1), top_k=10)
    server = GunicornServer(server_env(TEST_REDIS_URL, model_dir), workers=1).start()
    yield server
    server.stop()
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_page_renders_the_api_without_errors_or_outside_requests(docs_server, browser, path):
    with browser.open(f"{docs_server.url}{path}") as page:
        shown = page.wait_for_text(OPERATION, timeout=60)
        page.settle(1.0)
        assert shown, f"{path} never showed {OPERATION}; errors: {page.errors}; text: {page.text()[:500]!r}"
    assert not page.errors, page.errors
    outside = [url for url in page.requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    outside = [url for url in outside if not url.startswith(docs_server.url + "/")]
    assert not outside, f"{path} reached outside the service: {outside}"
