"""Benchmark the CPU one page costs a web worker's app, without gunicorn and wrk: where the serving gap is.

``benchmarks/serve.py`` measures throughput under gunicorn on a 2-core machine, where wrk, redis-server,
gunicorn and the app share the cores, so its ratio to the bare endpoint mixes every part's cost (its
"worker CPU per request" is gunicorn's and the app's together). This one calls the WSGI apps in process, one
request after another, and reads the process's CPU time per request (every thread's: the requests', the
model reloader's, the served log's). Side by side, alternating ``--rounds`` times, medians reported:

1. the bare Flask endpoint (``benchmarks/bare_app.py``) for scale;
2. ``GET /recommendations/<user>`` for random users of ``--users`` and random pages, as ``serve.py`` asks,
   answered by the feed's shortcut (``app.feed_shortcut``), and the same through Flask's request machinery
   (``API_FEED_SHORTCUT=0``);
3. the same on the live feed (``--fresh-posts`` fresh posts, ``--seen-per-user`` views and half as many
   impressions per user, exclusions on), as ``serve.py``'s live server, and with the fresh posts only (what
   the exclusions cost);
4. ``/recommendations`` for ``--returning`` users only, so that every list and every user's exclusions
   are in the worker's memories (``app.list_memo``, ``app.feed.mirror``): the page without a Redis round trip.

Each app is set up as a gunicorn worker sets itself up (``post_worker_init``: the reloader thread, which
keeps the live mirror, and a frozen heap), on a redis-server of its own, with Prometheus' per-process
metric files as under gunicorn. Reported per request: the CPU, the page's Redis reads (calls of
``RecsCache.user_reads``, the page's one round trip) and redis-server's CPU (the pages recorded in the
``served`` stream included). Usage, from the repository root::

    .venv/bin/python -m benchmarks.page_cost [--users 100000] [--requests 3000] [--rounds 3]

Prints a markdown table (the figures of docs/PERFORMANCE.md, "Where a page's time goes").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

# prometheus_client picks how it keeps values when it is first imported (by the imports below): per-process
# metric files, as gunicorn.conf.py sets them up for the web workers.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recsvc-page-cost-metrics-")

from werkzeug.test import EnvironBuilder  # noqa: E402  (after PROMETHEUS_MULTIPROC_DIR is set)

from benchmarks.redis_read import process_cpu  # noqa: E402
from benchmarks.serve import PAGE_LIMIT, featured_model, make_live  # noqa: E402
from common.config import load_settings  # noqa: E402
from common.recs_cache import RecsCache  # noqa: E402
from common.redis_clients import worker_client  # noqa: E402
from ml.demo import DEFAULT_POSTS  # noqa: E402
from ml.settings import TrainingSettings  # noqa: E402
from testing.processes import RedisServer  # noqa: E402
from testing.service import publish  # noqa: E402

WARM_UP_REQUESTS = 300


def page_request(user: int, page: int) -> dict:
    """The WSGI environ of ``/recommendations/user-<user>``'s page ``page`` (pages of ``PAGE_LIMIT``)."""
    query = f"limit={PAGE_LIMIT}&offset={page * PAGE_LIMIT}"
    return EnvironBuilder(path=f"/recommendations/user-{user}", query_string=query).get_environ()


def requests_for(users: list[int], pages: int, count: int, seed: int) -> list[dict]:
    """``count`` requests of random users of ``users`` and random pages, as ``benchmarks/serve.py`` asks."""
    rng = random.Random(seed)
    return [page_request(rng.choice(users), rng.randrange(pages)) for _ in range(count)]


def call(app, environ: dict) -> None:
    """One request through the WSGI app, its body read; anything but a 200 stops the benchmark."""
    statuses: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    content = b"".join(body)
    getattr(body, "close", lambda: None)()
    if not statuses[0].startswith("200"):
        sys.exit(f"{environ['PATH_INFO']}: {statuses[0]} {content[:300]!r}")


def measure(app, warm_up: list[dict], measured: list[dict], redis_pid: int) -> dict:
    """Per measured request: the process's CPU (us), the page's Redis reads and redis-server CPU (us)."""
    for environ in warm_up:
        call(app, environ)
    time.sleep(0.2)  # the served log's background writes of the warm-up are done
    reads, server = page_reads(app), process_cpu(redis_pid)
    started = time.process_time()
    for environ in measured:
        call(app, environ)
    cpu = time.process_time() - started
    time.sleep(0.2)
    n = len(measured)
    return {
        "cpu_us": 1e6 * cpu / n,
        "reads": (page_reads(app) - reads) / n,
        "server_us": 1e6 * (process_cpu(redis_pid) - server) / n,
    }


class CountedCalls:
    """A method that counts its calls (the page's Redis read, ``RecsCache.user_reads``)."""

    def __init__(self, method):
        self._method = method
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._method(*args, **kwargs)


def page_reads(app) -> int:
    """How many times a recsvc app (made by :func:`worker_app`) has read Redis for a page; 0 for another app."""
    runtime = app.extensions.get("recsvc")
    return runtime.cache.user_reads.calls if runtime is not None else 0


def worker_app(settings):
    """The recsvc app of ``settings``, started by gunicorn's ``post_worker_init`` hook as a worker starts it."""
    from app import create_app, gunicorn_hooks

    app = create_app({"SETTINGS": settings})
    cache = app.extensions["recsvc"].cache
    cache.user_reads = CountedCalls(cache.user_reads)
    gunicorn_hooks.start_worker(SimpleNamespace(wsgi=app))
    return app


def clean_up(apps: list, redis_server: RedisServer, work: Path) -> None:
    """Stop the apps as gunicorn stops a worker, then the redis-server, and remove the run's files."""
    from app import gunicorn_hooks

    for app in apps:
        gunicorn_hooks.stop_worker(None, SimpleNamespace(wsgi=app))
    redis_server.close()
    shutil.rmtree(work, ignore_errors=True)
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's and the live state's command-line arguments (this benchmark's and ``page_split.py``'s)."""
    parser.add_argument("--users", type=int, default=100_000, help="model users (default 100000)")
    parser.add_argument("--items", type=int, default=DEFAULT_POSTS, help=f"model posts (default {DEFAULT_POSTS})")
    parser.add_argument("--components", type=int, default=TrainingSettings().components)
    parser.add_argument("--communities", type=int, default=32, help="communities of the posts (default 32)")
    parser.add_argument("--fresh-posts", type=int, default=1000, help="posts in the live pool (default 1000)")
    parser.add_argument("--seen-per-user", type=int, default=10, help="reported views per user (default 10)")


def publish_feeds(client, redis_url: str, work: Path, args: argparse.Namespace):
    """The model of ``args`` published twice on ``redis_url``: as is, and with live state as ``serve.py``'s live
    server has it. Returns (model, settings, live settings): the two apps' settings, keys and model directories."""
    settings = replace(load_settings(), redis_url=redis_url, model_dir=str(work / "models"))
    live_settings = replace(
        settings, redis_prefix=settings.redis_prefix.rstrip(":") + "-live:", model_dir=str(work / "models-live")
    )
    model = featured_model(args.users, args.items, args.components, seed=1, communities=args.communities)
    publish(RecsCache(client, settings.redis_prefix), settings.model_dir, model)
    live_cache = RecsCache(client, live_settings.redis_prefix)
    publish(live_cache, live_settings.model_dir, model)
    make_live(live_cache, model, args.fresh_posts, args.seen_per_user)
    return model, settings, live_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_feed_arguments(parser)
    parser.add_argument("--returning", type=int, default=500, help="users of run 4 (default 500)")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per run (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs; medians (default 3)")
    args = parser.parse_args(argv)
    if min(args.users, args.requests, args.rounds, args.returning) < 1 or args.returning > args.users:
        parser.error("--users, --requests, --rounds and --returning must be at least 1, --returning at most --users")

    work = Path(tempfile.mkdtemp(prefix="recsvc-page-cost-"))
    load_before = os.getloadavg()[0]
    redis_server = RedisServer().start()
    apps = []
    try:
        client = worker_client(redis_server.url)
        model, settings, live_settings = publish_feeds(client, redis_server.url, work, args)
        unexcluded_settings = replace(
            settings, redis_prefix=settings.redis_prefix.rstrip(":") + "-fresh:", model_dir=str(work / "models-fresh")
        )
        unexcluded_cache = RecsCache(client, unexcluded_settings.redis_prefix)
        publish(unexcluded_cache, unexcluded_settings.model_dir, model)
        make_live(unexcluded_cache, model, args.fresh_posts, seen_per_user=0)

        from benchmarks.bare_app import app as bare

        recs = worker_app(settings)
        live = worker_app(live_settings)
        unexcluded = worker_app(unexcluded_settings)
        through_flask = worker_app(replace(settings, api_feed_shortcut=False))
        apps = [recs, live, unexcluded, through_flask]
        pages = settings.top_k // PAGE_LIMIT
        everyone = list(range(args.users))
        returning = random.Random(5).sample(everyone, args.returning)
        runs = {
            "bare Flask endpoint (constant JSON)": (bare, None),
            f"GET /recommendations (random users of {args.users}, pages of {PAGE_LIMIT})": (recs, everyone),
            "the same through Flask (API_FEED_SHORTCUT=0)": (through_flask, everyone),
            f"GET /recommendations, live: {args.fresh_posts} fresh posts, exclusions on": (live, everyone),
            f"the same without exclusions ({args.fresh_posts} fresh posts only)": (unexcluded, everyone),
            f"GET /recommendations, {args.returning} returning users (lists and exclusions held)": (recs, returning),
        }
        # The returning users' every page once first, so that the worker holds all they need.
        every_page = [page_request(user, page) for user in returning for page in range(pages)]
        results: dict[str, list[dict]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            for n, (name, (app, users)) in enumerate(runs.items()):
                if users is None:
                    bare_request = EnvironBuilder(path="/bare").get_environ()
                    warm_up, measured = [bare_request] * WARM_UP_REQUESTS, [bare_request] * args.requests
                else:
                    drawn = requests_for(users, pages, WARM_UP_REQUESTS + args.requests, seed=100 * round_ + n)
                    warm_up, measured = drawn[:WARM_UP_REQUESTS], drawn[WARM_UP_REQUESTS:]
                    if users is returning:
                        warm_up = every_page
                results[name].append(measure(app, warm_up, measured, redis_server.pid))
    finally:
        clean_up(apps, redis_server, work)

    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    bare_us = next(iter(medians.values()))["cpu_us"]
    print(
        f"\nin process, one request at a time, {args.requests} requests per run, median of {args.rounds} "
        f"alternating runs; model {args.users} users x {args.items} posts x {args.components} components; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print("| run | CPU per request, us | x bare | Redis reads per request | redis-server CPU per request, us |")
    print("|---|---:|---:|---:|---:|")
    for name, m in medians.items():
        print(f"| {name} | {m['cpu_us']:.0f} | {m['cpu_us'] / bare_us:.1f} | {m['reads']:.2f} | {m['server_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
