"""Benchmark the web API under gunicorn on loopback with wrk, against a bare Flask endpoint.

In one run, with the same gunicorn settings (``gunicorn.conf.py``, ``API_WORKERS`` workers) for both apps:

1. the bare endpoint (``benchmarks/bare_app.py``, a constant JSON answer): requests per second, p50/p99;
2. ``GET /recommendations/<user>`` for random known users and random pages: the same figures;
3. the live feed (issue #11): the same requests to a second server whose Redis holds a live pool of
   ``--fresh-posts`` (1,000) fresh posts the model scores from their features and, for every user,
   ``--seen-per-user`` reported views and half as many impressions (exclusions on); runs of 1, 2 and 3
   alternate, ``--rounds`` times, and the medians are reported;
4. browsing (issue #12), on the server of 2: ``GET /posts/<post>/similar`` for random posts of the model and
   ``GET /recommendations/<user>?community=<c>`` for random users and one of ``--communities`` (32)
   communities, random pages of each; and the requests of 2 to a server with ``API_FEED_SHORTCUT=0``, whose
   pages all go through Flask's request machinery (``app.feed_shortcut``); they alternate with 1-3, and the
   medians are reported;
5. the load of 2 while three new model versions are published, ``--rounds`` times (medians, as for every
   other run; until 2026-11-30 a single run): failed requests, latency, and how long each version took to
   be held by every worker (read from the per-worker ``recsvc_model_info`` gauge). A forked process per
   version makes its random model before the load starts (the stand-in for training, not measured), then
   saves, ranks, writes and publishes it, as a Celery worker on this host would, its precompute at the
   configured ``PRECOMPUTE_NICENESS`` (:mod:`tasks.priority`), its writes paced at the configured
   ``PUBLISH_WRITE_RATE``; alternating with it (unless that is 0), the same
   with ``PRECOMPUTE_NICENESS=0``, at the web's own priority, so that what the setting buys is measured. The
   load lasts until the third version is held everywhere (until 2026-12-01 it lasted ``--duration`` seconds,
   which at a million users covered the making of the first model and a few seconds of its precompute);
6. the memory of one web worker (RSS and PSS);
7. the hit rate of the workers' list memo (``app.list_memo``) over the measured runs: with the default
   500 users it is about 100 % (no request reaches Redis); ``--users 100000`` measures the Redis path.

Every run also reports its workers' CPU per request: gunicorn's and the app's together (the app's alone, in
process, is what ``benchmarks/page_cost.py`` measures). The row of 5 includes the loads of the new models.

Impressions (issue #13) and the garbage collector: after the runs above, three more ``/recommendations``
servers start together and are warmed up alike: one as configured (every page recorded in the ``served``
stream, ``API_GC_THRESHOLD``'s collector), one that records no page (``SERVED_STREAM_MAXLEN=0``) and one with
Python's own collector threshold (``API_GC_THRESHOLD=700``). They alternate ``--rounds`` times, and the first
is reported as a share of each of the others (throughput, p99 and the slowest request). Until 2026-11-30 the
server of the runs above was compared with a new one, which mixed the two servers' ages into the ratio.

It starts its own redis-server on a free port and writes the model to a temporary directory, so it
touches no other data. The model is random (serving cost does not depend on what it learnt) with the
demo data's default size (``ml.demo``) and the default number of components. Usage, from the repository
root::

    .venv/bin/python -m benchmarks.serve [--duration 10] [--connections 32] [--worker-class gthread|sync]
        [--threads N] [--users 500] [--items 2016] [--communities 32] [--fresh-posts 1000] [--seen-per-user 10]
        [--cluster]

``--cluster`` serves from a local Redis Cluster of three masters (:mod:`testing.cluster`) instead of one
redis-server: the same figures, with a first page read from the user's shard (and, for what only the shard
of the global state holds, from that one too).

Needs ``wrk`` (Debian package ``wrk``). Prints a markdown table (the figures of docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.redis_read import process_cpu, process_cpu_times
from common.config import load_settings
from common.recs_cache import RecsCache
from common.redis_clients import worker_client
from ml.demo import DEFAULT_POSTS, DEFAULT_USERS
from ml.model import RecModel
from ml.settings import TrainingSettings
from ml.similar import save_neighbours
from testing.cluster import RedisClusterNodes
from testing.factories import random_model
from testing.polling import poll
from testing.processes import BARE_GUNICORN_CONFIG, GunicornServer, RedisServer
from testing.service import publish

PAGE_LIMIT = 20
WARM_UP_SECONDS = 2
PUBLISHING_LOAD_LIMIT = 1800  # seconds: the load while versions are published lasts until the third is held
# wrk's Lua hooks: random known users and pages, and a JSON summary line at the end.
WRK_SCRIPT = r"""
local counter, mode, users, pages, items, communities = 0, "bare", 1, 1, 1, 1
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  mode, users, pages = args[1], tonumber(args[2]), tonumber(args[3])
  items, communities = tonumber(args[4]), tonumber(args[5])
  math.randomseed(os.time() * 100 + id)
end
function request()
  if mode == "bare" then
    return wrk.format("GET", "/bare")
  end
  if mode == "floor" then
    return wrk.format("GET", string.format("/bare/user-%d", math.random(0, users - 1)))
  end
  local offset = math.random(0, pages - 1) * LIMIT
  if mode == "similar" then
    return wrk.format("GET", string.format("/posts/post-%d/similar?limit=%d&offset=%d",
      math.random(0, items - 1), LIMIT, offset))
  end
  if mode == "community" then
    return wrk.format("GET", string.format("/recommendations/user-%d?community=community-%d&limit=%d&offset=%d",
      math.random(0, users - 1), math.random(0, communities - 1), LIMIT, offset))
  end
  local path = string.format("/recommendations/user-%d?limit=%d&offset=%d",
    math.random(0, users - 1), LIMIT, math.random(0, pages - 1) * LIMIT)
  return wrk.format("GET", path)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %f, "p99_ms": %f, "max_ms": %f}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
""".replace("LIMIT", str(PAGE_LIMIT))


def run_wrk(
    url: str,
    script: Path,
    duration: float,
    connections: int,
    mode: str,
    users: int,
    pages: int,
    items: int = 1,
    communities: int = 1,
    until: threading.Event | None = None,
) -> dict:
    """One wrk run; returns requests/s, p50/p99/max latency (ms) and the failed-request count.

    Given ``until``, the run ends when that event is set (wrk reports on SIGINT what it measured so far), or
    after ``duration`` seconds at the latest.
    """
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url, "--"]
    sizes = [str(users), str(pages), str(items), str(communities)]
    with subprocess.Popen([*command, mode, *sizes], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        if until is not None and until.wait(duration):
            wrk.send_signal(signal.SIGINT)
        output, errors = wrk.communicate(timeout=duration + 60)
    if wrk.returncode:
        raise subprocess.CalledProcessError(wrk.returncode, command, output, errors)
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    result = json.loads(line[4:])
    result["rps"] = result["requests"] / result["seconds"]
    result["errors"] = result["non_2xx"] + result["socket_errors"]
    return result


def featured_model(users: int, items: int, components: int, seed: int, communities: int = 2) -> RecModel:
    """A random model that also knows its posts' tags and communities as features, so it scores fresh posts.

    Post ``i`` is in community ``community-<i % communities>``.
    """
    model = random_model(users, items, components, seed=seed)
    model = replace(model, item_community_ids=[f"community-{i % communities}" for i in range(items)])
    names = sorted(
        {f"tag:{t}" for tags in model.item_tags for t in tags} | {f"community:{c}" for c in model.item_community_ids}
    )
    rng = np.random.default_rng(seed)
    return replace(
        model,
        item_feature_names=names,
        item_feature_embeddings=rng.standard_normal((len(names), components)).astype(np.float32),
        item_feature_biases=rng.standard_normal(len(names)).astype(np.float32),
    )


def make_live(cache: RecsCache, model: RecModel, fresh_posts: int, seen_per_user: int, seed: int = 7) -> None:
    """A live pool of ``fresh_posts`` posts and, per user, reported views and impressions of its top posts."""
    rng = np.random.default_rng(seed)
    now = time.time()
    pool = [
        (f"fresh-{n}", tuple(model.item_tags[i]), model.item_community_ids[i], now - n)
        for n, i in enumerate(rng.integers(0, model.num_items, fresh_posts))
    ]
    cache.publish_live(pool, {}, "bench", {}, retain_seconds=3600, max_posts=fresh_posts, max_users=1)
    top, _ = model.top_k(np.arange(model.num_users), 100)
    events = []
    for user, user_id in enumerate(model.user_ids):
        picks = rng.choice(top[user][top[user] >= 0], seen_per_user + seen_per_user // 2, replace=False)
        events += [(user_id, model.item_ids[i], "view") for i in picks[:seen_per_user]]
        events += [(user_id, model.item_ids[i], "impression") for i in picks[seen_per_user:]]
    for start in range(0, len(events), 1000):
        cache.record_events(events[start : start + 1000], cap=1000, ttl=3600)


def with_worker_cpu(server: GunicornServer, run, redis_pid: int | None = None) -> dict:
    """``run()``'s wrk result, with the CPU its server's workers spent per request (``worker_cpu_us``), the part
    of it the kernel spent on their behalf (``worker_system_us``) and, given ``redis_pid``, redis-server's CPU
    per request (``redis_cpu_us``).

    The workers' CPU is gunicorn's and the app's together; ``benchmarks/page_cost.py`` measures the app's
    alone, so the difference is what gunicorn costs a request. The kernel's part tells system calls (a Redis
    round trip's sending, waiting and waking among them) from the interpreter's own work.
    """
    pids = server.worker_pids()
    before = [process_cpu_times(pid) for pid in pids]
    redis_before = process_cpu(redis_pid) if redis_pid is not None else 0.0
    result = run()
    after = [process_cpu_times(pid) for pid in pids]
    requests = max(result["requests"], 1)
    user = sum(end[0] - start[0] for start, end in zip(before, after, strict=True))
    system = sum(end[1] - start[1] for start, end in zip(before, after, strict=True))
    result["worker_cpu_us"] = 1e6 * (user + system) / requests
    result["worker_system_us"] = 1e6 * system / requests
    if redis_pid is not None:
        result["redis_cpu_us"] = 1e6 * (process_cpu(redis_pid) - redis_before) / requests
    return result


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over rounds; failed requests are added up."""
    figures = ("rps", "p50_ms", "p99_ms", "max_ms", "worker_cpu_us")
    summary = {key: statistics.median(run[key] for run in runs) for key in figures}
    summary["errors"] = sum(run["errors"] for run in runs)
    return summary


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MB; PSS shares pages inherited from the master fairly among workers."""
    rss = pss = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "Rss":
            rss = int(value.split()[0]) / 1024
        elif name == "Pss":
            pss = int(value.split()[0]) / 1024
    return rss, pss


def memo_lookups(server: GunicornServer) -> dict[str, float]:
    """The workers' list memo lookups so far, by outcome (summed over the workers by /metrics)."""
    return {
        sample.labels["outcome"]: sample.value
        for sample in server.metric_samples("recsvc_list_memo_lookups")
        if sample.name.endswith("_total")
    }


def reload_under_load(
    server: GunicornServer,
    redis_url: str,
    prefix: str,
    model_dir: Path,
    args,
    wrk,
    precompute_niceness: int,
    publish_write_rate: int,
) -> tuple[dict, list, list]:
    """wrk load over the publishing of three versions, their precompute at ``precompute_niceness``, their writes
    paced at ``publish_write_rate``.

    Each version's model is made first, in a forked process of its own (a random model stands in for a
    training run, which is not what this measures); then the load starts, and each version in turn is saved,
    ranked, written and published, with ``args.duration / 5`` seconds of load before, between and after them.
    ``wrk(until)`` runs the load until that event is set, so that it covers every publish at any size. Returns
    wrk's result, each version's time from its publish to its being held by every worker, and each version's
    time from its save to that.
    """
    publishers = [
        Publisher(redis_url, prefix, model_dir, args, seed, precompute_niceness, publish_write_rate)
        for seed in (11, 12, 13)
    ]
    visible_after: list[float] = []
    took: list[float] = []
    result: dict = {}
    finished = threading.Event()
    try:
        for publisher in publishers:
            publisher.wait_until_ready()
        load = threading.Thread(target=lambda: result.update(wrk(finished)))
        load.start()
        try:
            time.sleep(args.duration / 5)
            for publisher in publishers:
                started = time.monotonic()
                version = publisher.publish()
                published = time.monotonic()
                everywhere = poll(lambda v=version: server.holds(v), 10, 0.01)
                held = time.monotonic()
                visible_after.append(held - published if everywhere else float("inf"))
                took.append(held - started if everywhere else float("inf"))
                time.sleep(args.duration / 5)
        finally:
            finished.set()
            load.join()
    finally:
        for publisher in publishers:
            publisher.close()
    return result, visible_after, took


class Publisher:
    """A forked process that makes a random model of the benchmark's size, then, when told, publishes it.

    It trains nothing: the model is made as soon as the process starts, and :meth:`publish` has it saved,
    ranked, written and published through the pipeline's stages (``testing.service.publish``), as a Celery
    worker sharing this host would, the ranking and the writes at ``precompute_niceness``
    (``PRECOMPUTE_NICENESS``), the writes paced at ``publish_write_rate`` (``PUBLISH_WRITE_RATE``).
    """

    TIMEOUT = 300  # seconds for the model to be made, and again for it to be published

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        model_dir: Path,
        args,
        seed: int,
        precompute_niceness: int,
        publish_write_rate: int,
    ):
        context = multiprocessing.get_context("fork")
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(
            target=_publisher,
            args=(child_end, redis_url, prefix, model_dir, args, seed, precompute_niceness, publish_write_rate),
        )
        self._process.start()
        child_end.close()

    def wait_until_ready(self) -> None:
        """Wait for the model to be made."""
        self._receive("made no model")

    def publish(self) -> str:
        """Publish the model; return its version."""
        self._pipe.send("publish")
        version = self._receive("gave no version")
        self._process.join(30)
        return version

    def close(self) -> None:
        """End the process if it is still there (a run that failed)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(30)
        self._pipe.close()

    def _receive(self, failure: str):
        if not self._pipe.poll(self.TIMEOUT):
            raise RuntimeError(f"the publishing process {failure} within {self.TIMEOUT} s")
        return self._pipe.recv()  # EOFError if the process died


def _publisher(
    pipe, url: str, prefix: str, model_dir: Path, args, seed: int, precompute_niceness: int, publish_write_rate: int
) -> None:
    model = random_model(args.users, args.items, args.components, seed=seed)
    pipe.send("ready")
    pipe.recv()
    cache = RecsCache(worker_client(url), prefix)  # connections of its own: none is shared across the fork
    pipe.send(
        publish(cache, model_dir, model, precompute_niceness=precompute_niceness, publish_write_rate=publish_write_rate)
    )


def server_envs(redis_url: str, work: Path, live_prefix: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """The environments of the plain servers (bare, recommendations, unrecorded) and of the live one.

    They differ only in the live server's key prefix and model directory: the gunicorn overrides
    (``--worker-class``, ``--threads``) apply to every server, so that their figures stay comparable.
    """
    env = {"REDIS_URL": redis_url, "MODEL_DIR": str(work / "models"), "LOG_LEVEL": "warning"}
    if args.cluster:  # Celery is never on the cluster (the web does not use it, but its settings are checked)
        env["CELERY_BROKER_URL"] = env["CELERY_RESULT_BACKEND"] = "redis://127.0.0.1:6379/0"
    overrides = []
    if args.worker_class:
        overrides.append(f"--worker-class {args.worker_class}")
    if args.threads:
        overrides.append(f"--threads {args.threads}")
    if overrides:
        env["GUNICORN_CMD_ARGS"] = " ".join(overrides)
    return env, {**env, "REDIS_PREFIX": live_prefix, "MODEL_DIR": str(work / "models-live")}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/app runs; medians (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--worker-class", choices=["gthread", "sync"], help="override gunicorn.conf.py's")
    parser.add_argument("--threads", type=int, help="override gunicorn.conf.py's threads per worker (gthread)")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"model users (default {DEFAULT_USERS})")
    parser.add_argument("--items", type=int, default=DEFAULT_POSTS, help=f"model posts (default {DEFAULT_POSTS})")
    parser.add_argument("--components", type=int, default=TrainingSettings().components)
    parser.add_argument("--communities", type=int, default=32, help="communities of the posts (default 32)")
    parser.add_argument("--fresh-posts", type=int, default=1000, help="posts in the live pool (default 1000)")
    parser.add_argument("--seen-per-user", type=int, default=10, help="reported views per user (default 10)")
    parser.add_argument(
        "--cluster", action="store_true", help="serve from a local Redis Cluster of three masters (testing.cluster)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.connections < 2 or args.rounds < 1 or args.duration < 1 or (args.threads is not None and args.threads < 1):
        parser.error(
            "--connections must be at least 2 (wrk runs 2 threads), --rounds, --duration and --threads at least 1"
        )
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    settings = load_settings()
    load_before = os.getloadavg()[0]
    pages = settings.top_k // PAGE_LIMIT
    work = Path(tempfile.mkdtemp(prefix="recsvc-bench-"))
    script = work / "load.lua"
    script.write_text(WRK_SCRIPT)
    private_redis = RedisClusterNodes().start() if args.cluster else RedisServer().start()
    servers: list[GunicornServer] = []
    try:
        client = worker_client(private_redis.url)
        cache = RecsCache(client, settings.redis_prefix)
        model = featured_model(args.users, args.items, args.components, seed=1, communities=args.communities)
        # With the similar-post table a training run writes before it publishes (the browsing runs read it).
        publish(cache, work / "models", model, before_publish=partial(save_neighbours, work / "models", model=model))
        live_prefix = settings.redis_prefix.rstrip(":") + "-live:"
        live_cache = RecsCache(client, live_prefix)
        publish(live_cache, work / "models-live", model)
        make_live(live_cache, model, args.fresh_posts, args.seen_per_user)
        env, live_env = server_envs(private_redis.url, work, live_prefix, args)
        workers = settings.api_workers

        def wrk_on(server, mode, duration=args.duration, until=None):
            sizes = (args.users, pages, args.items, args.communities)
            return lambda: with_worker_cpu(
                server, lambda: run_wrk(server.url, script, duration, args.connections, mode, *sizes, until=until)
            )

        bare = GunicornServer(
            env, workers, work / "bare.log", app="benchmarks.bare_app:app", config=BARE_GUNICORN_CONFIG
        ).start()
        servers.append(bare)
        app = GunicornServer(env, workers, work / "app.log").start()
        servers.append(app)
        live = GunicornServer(live_env, workers, work / "live.log").start()
        servers.append(live)
        through_flask = GunicornServer({**env, "API_FEED_SHORTCUT": "0"}, workers, work / "flask.log").start()
        servers.append(through_flask)
        wrk_on(bare, "bare", WARM_UP_SECONDS)()  # every worker imported, connections made
        wrk_on(app, "recs", WARM_UP_SECONDS)()  # and each version's item metadata fetched once
        wrk_on(live, "recs", WARM_UP_SECONDS)()  # and the live pool read and represented once
        wrk_on(through_flask, "recs", WARM_UP_SECONDS)()
        wrk_on(app, "similar", WARM_UP_SECONDS)()  # and the version's normalised embeddings made
        wrk_on(app, "community", WARM_UP_SECONDS)()  # and its community index
        memo_before = memo_lookups(app)
        # Alternate the runs so that all see the same background load (this machine may be shared).
        modes = (
            (bare, "bare"),
            (app, "recs"),
            (live, "recs"),
            (app, "similar"),
            (app, "community"),
            (through_flask, "recs"),
        )
        rounds = [[wrk_on(server, mode)() for server, mode in modes] for _ in range(args.rounds)]
        memo = {k: v - memo_before.get(k, 0.0) for k, v in memo_lookups(app).items()}
        baseline = median_run([run[0] for run in rounds])
        recs = median_run([run[1] for run in rounds])
        live_recs = median_run([run[2] for run in rounds])
        similar = median_run([run[3] for run in rounds])
        filtered = median_run([run[4] for run in rounds])
        flask_recs = median_run([run[5] for run in rounds])
        through_flask.stop()
        # Impressions and the garbage collector: three servers started together and warmed alike (a server that
        # has served the runs above is not compared with a new one): as configured (every page recorded,
        # API_GC_THRESHOLD's collector), one that records no page, and one with Python's own threshold.
        variants = [
            GunicornServer({**env, **overrides}, workers, work / f"{name}.log").start()
            for name, overrides in (
                ("configured", {}),
                ("unrecorded", {"SERVED_STREAM_MAXLEN": "0"}),
                ("python-gc", {"API_GC_THRESHOLD": "700"}),
            )
        ]
        servers.extend(variants)
        for server in variants:
            wrk_on(server, "recs", WARM_UP_SECONDS)()
        triples = [[wrk_on(server, "recs")() for server in variants] for _ in range(args.rounds)]
        configured, not_recorded, gc_python = (median_run([run[i] for run in triples]) for i in range(3))
        for server in variants:
            server.stop()
        bare.stop()
        live.stop()

        def load(until):  # as long as the three versions take, at most PUBLISHING_LOAD_LIMIT seconds
            return wrk_on(app, "recs", PUBLISHING_LOAD_LIMIT, until)()

        # Alternating: the precompute at the configured niceness, then (unless that is 0) at the web's priority.
        nicenesses = (settings.precompute_niceness, 0) if settings.precompute_niceness else (0,)
        reloads = [
            [
                reload_under_load(
                    app, private_redis.url, cache.prefix, work / "models", args, load, n, settings.publish_write_rate
                )
                for n in nicenesses
            ]
            for _ in range(args.rounds)
        ]
        during_reload = median_run([run[0][0] for run in reloads])
        during_unlowered = median_run([run[-1][0] for run in reloads]) if len(nicenesses) > 1 else None
        visible_after = [seconds for run in reloads for _, times, _ in run for seconds in times]
        publish_seconds = [seconds for run in reloads for _, _, times in run for seconds in times]
        load_seconds = [result["seconds"] for run in reloads for result, _, _ in run]
        memory = [memory_mb(pid) for pid in app.worker_pids()]
        app.stop()
    finally:
        for server in servers:
            server.stop()
        private_redis.close()
        shutil.rmtree(work, ignore_errors=True)

    worker_class = args.worker_class or "gthread (gunicorn.conf.py)"
    threads = f"{args.threads} threads" if args.threads else "threads of gunicorn.conf.py"
    print(
        f"\n{workers} workers, worker class {worker_class}, {threads}, {args.connections} connections, "
        f"median of {args.rounds} alternating runs of {args.duration:g} s, {os.cpu_count()} cores; "
        f"model {args.users} users x {args.items} posts x {args.components} components, {args.communities} "
        "communities; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print("| run | requests/s | p50 ms | p99 ms | max ms | worker CPU per request, us | failed requests |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in (
        ("bare Flask endpoint (constant JSON)", baseline),
        (f"GET /recommendations (random known users, pages of {PAGE_LIMIT})", recs),
        (f"GET /recommendations, live: {args.fresh_posts} fresh posts, exclusions on", live_recs),
        ("GET /posts/<post>/similar (random posts and pages)", similar),
        ("GET /recommendations?community=<one of them> (random users, communities, pages)", filtered),
        ("GET /recommendations through Flask (API_FEED_SHORTCUT=0)", flask_recs),
        (
            f"GET /recommendations while 3 versions are published (PRECOMPUTE_NICENESS={settings.precompute_niceness})",
            during_reload,
        ),
        *(
            [("the same, precompute at the publisher's own priority (PRECOMPUTE_NICENESS=0)", during_unlowered)]
            if during_unlowered is not None
            else []
        ),
    ):
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | "
            f"{r['worker_cpu_us']:.0f} | {r['errors']} |"
        )
    print(
        f"\n/recommendations throughput: {100 * recs['rps'] / baseline['rps']:.0f}% of the bare endpoint "
        f"({100 * flask_recs['rps'] / baseline['rps']:.0f}% through Flask, API_FEED_SHORTCUT=0)"
    )
    live_ratio = live_recs["rps"] / baseline["rps"]
    print(
        f"live feed throughput: {100 * live_ratio:.0f}% of the bare endpoint, "
        f"{100 * live_recs['rps'] / recs['rps']:.0f}% of /recommendations without live state; "
        f"p99 {live_recs['p99_ms'] / recs['p99_ms']:.2f}x"
    )
    print(
        f"similar posts throughput: {100 * similar['rps'] / recs['rps']:.0f}% of /recommendations (target 80%), "
        f"p99 {similar['p99_ms'] / recs['p99_ms']:.2f}x; community-filtered feed: "
        f"{100 * filtered['rps'] / recs['rps']:.0f}% (target 50%), p99 {filtered['p99_ms'] / recs['p99_ms']:.2f}x"
    )
    print(
        f"impressions recorded: /recommendations at {100 * configured['rps'] / not_recorded['rps']:.0f}% of the "
        f"throughput without them (target 95%): {configured['rps']:.0f} against {not_recorded['rps']:.0f} "
        f"requests/s, p99 {configured['p99_ms']:.2f} against {not_recorded['p99_ms']:.2f} ms"
    )
    print(
        f"garbage collector: /recommendations at {100 * configured['rps'] / gc_python['rps']:.0f}% of the throughput "
        f"with Python's threshold (API_GC_THRESHOLD={settings.api_gc_threshold} against 700, servers started "
        f"together): {configured['rps']:.0f} against {gc_python['rps']:.0f} requests/s, p99 {configured['p99_ms']:.2f} "
        f"against {gc_python['p99_ms']:.2f} ms, max {configured['max_ms']:.1f} against {gc_python['max_ms']:.1f} ms"
    )
    publishing = (
        f"p99 while 3 versions are published: {during_reload['p99_ms'] / baseline['p99_ms']:.2f}x the bare endpoint's"
    )
    if during_unlowered is not None:
        publishing += f" ({during_unlowered['p99_ms'] / baseline['p99_ms']:.2f}x with PRECOMPUTE_NICENESS=0)"
    print(publishing + " (target 2x)")
    print("new version held by every worker after: " + ", ".join(f"{1000 * s:.0f} ms" for s in visible_after))
    print(
        "each version from its save to held by every worker: "
        + ", ".join(f"{s:.2f} s" for s in publish_seconds)
        + "; the load around each three: "
        + ", ".join(f"{s:.2f} s" for s in load_seconds)
    )
    rss = max(m[0] for m in memory)
    pss = max(m[1] for m in memory)
    print(f"memory of one web worker: {rss:.0f} MB RSS, {pss:.0f} MB PSS (largest of {len(memory)} workers)")
    lookups = memo.get("hit", 0.0) + memo.get("miss", 0.0)
    if lookups:
        print(
            f"list memo hit rate during the /recommendations runs: {100 * memo.get('hit', 0.0) / lookups:.1f} % "
            f"of {lookups:.0f} lookups (a miss costs a Redis round trip)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
