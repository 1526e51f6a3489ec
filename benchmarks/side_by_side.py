"""Benchmark two checkouts' feeds side by side under gunicorn, alternating, against the bare endpoint.

Runs of ``benchmarks/serve.py`` a few minutes apart differ by up to a sixth on a shared machine, more than most
single changes move. This serves ``/recommendations`` from this checkout and from ``--other`` (a checkout of a
nearby commit, e.g. ``git worktree add /tmp/before HEAD~3``, which must read the same model artifact and Redis
keys; it runs with this checkout's virtualenv) at once, with the bare endpoint of ``benchmarks/bare_app.py``,
and alternates wrk runs over them ``--rounds`` times, the two feeds' order swapped every round. Each
round gives each feed's share of the bare endpoint's throughput; the medians over the rounds are reported,
with p99, the workers' CPU per request (gunicorn's and the app's), the kernel's part of it (system calls, a
Redis round trip's among them) and redis-server's CPU per request. Each round also measures the floor of
any feed that reads Redis once per page: the bare app's ``/bare/<user>``, its constant answer after the
feed's own Redis read for a random user (``RecsCache.user_reads``, the list unpacked), so that what the
round trip costs and what the feed's own work costs can be told apart. ``--live`` gives both feeds the live
state of ``serve.py``'s live run (1,000 fresh posts, 10 views and 5 impressions per user).

``--other-publishes`` is for a checkout whose Redis layout or artifact differs from this one's (e.g. the tree
before the live feed, which read a version's lists from one hash): the other checkout then publishes a random
model of the same size with its own code (its test helpers ``publish`` and ``random_model``), under a key
prefix and model directory of its own, and is served from them; ``--live`` then gives only this checkout's
feed the live state. That is how the live feed is compared with the feed before it (issue 11).
``--other-env NAME=VALUE`` (repeatable) adds to the other server's environment only, so that ``--other .``
compares settings, e.g. ``--other-env API_WORKERS=4 --other-env "GUNICORN_CMD_ARGS=--threads 1"`` (the bare
endpoint keeps this checkout's settings). ``--other-redis unix`` has the other server read the same
redis-server over its Unix socket instead of TCP loopback (the bare endpoint and this checkout keep TCP): what
the transport costs a page; the report counts the clients redis-server has on the socket after the rounds.
Usage, from the repository root::

    .venv/bin/python -m benchmarks.side_by_side --other /tmp/before [--other-publishes] [--other-env NAME=VALUE]
        [--other-redis unix] [--users 100000] [--live] [--rounds 8] [--duration 8] [--connections 32]

Prints a markdown table. Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.serve import PAGE_LIMIT, WRK_SCRIPT, featured_model, make_live, run_wrk, with_worker_cpu
from common.config import load_settings
from common.recs_cache import RecsCache
from common.redis_clients import worker_client
from ml.settings import TrainingSettings
from testing.processes import BARE_GUNICORN_CONFIG, REPO, GunicornServer, RedisServer
from testing.service import publish

WARM_UP_SECONDS = 3
OTHER_PREFIX = "recsvc-other:"
# Run in a checkout (``python -c``, with the checkout as its directory and path): its own code publishes a random
# model of the given size and seed and prints its version. Here for --other-publishes, in the other checkout;
# benchmarks/collector.py runs it in this one. The test helpers moved from tests/ to testing/ on 2026-11-29;
# older trees have them where they were.
PUBLISH_RANDOM_MODEL = """
import sys
from pathlib import Path

import redis

from common.recs_cache import RecsCache

try:
    from testing.factories import random_model
    from testing.service import publish
except ImportError:
    from tests.app.helpers import publish
    from tests.ml.factories import random_model

users, items, components, url, prefix, model_dir, seed = sys.argv[1:]
cache = RecsCache(redis.Redis.from_url(url), prefix)
print(publish(cache, Path(model_dir), random_model(int(users), int(items), int(components), seed=int(seed))))
"""


def commit(checkout: Path) -> str:
    """The checkout's commit, short, with ``+`` when its work tree has changes (``?`` outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+" if dirty else "")


def clients_on_unix_socket(cache: RecsCache) -> int:
    """How many clients redis-server has on a Unix socket now (CLIENT LIST gives them the socket's path as addr)."""
    return sum(1 for client in cache.client.client_list() if client["addr"].startswith("/"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the checkout to compare this one with")
    parser.add_argument(
        "--other-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the other checkout's server only (repeatable), e.g. API_WORKERS=4",
    )
    parser.add_argument(
        "--other-redis",
        choices=("tcp", "unix"),
        default="tcp",
        help="how the other checkout's server reaches redis-server: TCP as this one (default), or its Unix socket",
    )
    parser.add_argument("--users", type=int, default=100_000, help="model users (default 100000)")
    parser.add_argument("--live", action="store_true", help="both feeds with live state (fresh posts, exclusions)")
    parser.add_argument(
        "--other-publishes",
        action="store_true",
        help="the other checkout publishes its own model under its own keys (a tree of another Redis layout)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds; medians (default 8)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    args = parser.parse_args(argv)
    if not (args.other / "wsgi.py").is_file():
        parser.error(f"--other {args.other} is not a checkout of this project (no wsgi.py)")
    if args.users < 1 or args.rounds < 1 or args.duration < 1 or args.connections < 2:
        parser.error("--users, --rounds and --duration must be at least 1, --connections at least 2")
    if any("=" not in setting for setting in args.other_env):
        parser.error("--other-env takes NAME=VALUE")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    settings = load_settings()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="recsvc-side-by-side-"))
    script = work / "load.lua"
    script.write_text(WRK_SCRIPT)
    redis_server = RedisServer("tcp+unix" if args.other_redis == "unix" else "tcp").start()
    servers: list[GunicornServer] = []
    names = {
        "bare": "bare Flask endpoint (constant JSON)",
        "floor": "the same after the page's one Redis read (`/bare/<user>`: the floor)",
        "other": f"`/recommendations`, {args.other} ({commit(args.other)})"
        + (", its own model and keys" if args.other_publishes else "")
        + "".join(f", {setting}" for setting in args.other_env)
        + (", Redis over a Unix socket" if args.other_redis == "unix" else ""),
        "this": f"`/recommendations`, this checkout ({commit(REPO)})",
    }
    try:
        cache = RecsCache(worker_client(redis_server.url), settings.redis_prefix)
        components = TrainingSettings().components
        model = featured_model(args.users, 2016, components, seed=1)
        publish(cache, work / "models", model)
        if args.live:
            make_live(cache, model, fresh_posts=1000, seen_per_user=10)
        env = {"REDIS_URL": redis_server.url, "MODEL_DIR": str(work / "models"), "LOG_LEVEL": "warning"}
        other_env = env
        if args.other_publishes:
            other_env = {**env, "REDIS_PREFIX": OTHER_PREFIX, "MODEL_DIR": str(work / "models-other")}
            sizes = [str(args.users), "2016", str(components)]
            subprocess.run(
                [sys.executable, "-c", PUBLISH_RANDOM_MODEL, *sizes, redis_server.url, OTHER_PREFIX,
                 other_env["MODEL_DIR"], "1"],
                cwd=args.other, env={**os.environ, "PYTHONPATH": str(args.other.resolve())}, check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        other_env = {**other_env, **dict(setting.split("=", 1) for setting in args.other_env)}
        if redis_server.unix_url is not None:
            other_env["REDIS_URL"] = redis_server.unix_url
        workers = settings.api_workers
        bare = GunicornServer(
            env, workers, work / "bare.log", app="benchmarks.bare_app:app", config=BARE_GUNICORN_CONFIG
        )
        other_workers = int(other_env.get("API_WORKERS", workers))
        other = GunicornServer(other_env, other_workers, work / "other.log", repo=args.other.resolve())
        this = GunicornServer(env, workers, work / "this.log")
        for server in (bare, other, this):
            servers.append(server.start())
        pages = settings.top_k // PAGE_LIMIT

        def run(server: GunicornServer, mode: str, duration: float = args.duration) -> dict:
            wrk = (server.url, script, duration, args.connections, mode, args.users, pages)
            return with_worker_cpu(server, lambda: run_wrk(*wrk), redis_server.pid)

        # Each row's server and wrk mode, in the order of names (the floor is the bare app's other endpoint).
        measured = {"bare": (bare, "bare"), "floor": (bare, "floor"), "other": (other, "recs"), "this": (this, "recs")}
        for server, mode in measured.values():
            run(server, mode, WARM_UP_SECONDS)
        results: dict[str, list[dict]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in ["bare", "floor", *(("other", "this") if round_ % 2 == 0 else ("this", "other"))]:
                results[name].append(run(*measured[name]))
        unix_clients = clients_on_unix_socket(cache)  # the other server's connections, still open
    finally:
        for server in servers:
            server.stop()
        redis_server.close()
        shutil.rmtree(work, ignore_errors=True)

    feed = "live feed (1000 fresh posts, exclusions)" if args.live else "feed"
    if args.live and args.other_publishes:
        feed += " in this checkout, the other's feed without live state"
    print(
        f"\n{workers} workers per server{' (the other: its row says)' if args.other_env else ''}, "
        f"{args.connections} connections, {args.rounds} alternating rounds of "
        f"{args.duration} s, {os.cpu_count()} cores; {feed}, model {args.users} users x 2016 posts; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    if args.other_redis == "unix":
        print(f"The other server over redis-server's Unix socket: {unix_clients} clients on it.\n")
    print(
        "| server | requests/s | % of bare (per round) | p99 ms | worker CPU per request, us | of it the kernel's, us "
        "| redis-server CPU per request, us |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        shares = [run["rps"] / base["rps"] for run, base in zip(runs, results["bare"], strict=True)]
        share = f"{100 * statistics.median(shares):.0f} % ({', '.join(f'{100 * s:.0f}' for s in shares)})"
        print(
            f"| {names[name]} | {statistics.median(r['rps'] for r in runs):.0f} | {share} | "
            f"{statistics.median(r['p99_ms'] for r in runs):.2f} | "
            f"{statistics.median(r['worker_cpu_us'] for r in runs):.0f} | "
            f"{statistics.median(r['worker_system_us'] for r in runs):.0f} | "
            f"{statistics.median(r['redis_cpu_us'] for r in runs):.0f} |"
        )
    failed = {name: sum(run["errors"] for run in runs) for name, runs in results.items()}
    where = ", ".join(f"{names[name]}: {count}" for name, count in failed.items() if count)
    print(f"\nfailed requests: {sum(failed.values())}" + (f" ({where})" if where else ""))
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
