"""An experiment end to end with the real processes: gunicorn serves the variants and records every page,
beat's tasks.move_impressions moves the pages into recsvc's table, clicks arrive in the backend's
interactions, tasks.online_report computes the report, and /admin/experiments and /metrics show it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import requests

from ml import online
from testing.environment import ADMIN_TOKEN
from testing.polling import wait_until
from testing.processes import GunicornServer, start_worker
from testing.service import run_train

EXPERIMENT = {
    "name": "e2e",
    "control": "popular",
    "variants": [
        {"name": "model", "share": 0.5, "ranking": "production"},
        {"name": "popular", "share": 0.5, "ranking": "popular"},
    ],
}
SCHEMA = "recsvc_online_e2e"


def test_pages_move_to_postgres_and_the_report_counts_their_clicks(
    loaded_db, cache, service_env, services, celery_client, tmp_path
):
    env = {
        **service_env,
        "EXPERIMENT": json.dumps(EXPERIMENT),
        "ONLINE_SCHEMA": SCHEMA,
        "ONLINE_REPORT_INTERVAL_SECONDS": "10",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    start_worker(services, env, concurrency=2)
    services("beat", ["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}"], env)
    assert run_train(celery_client, timeout=180)["status"] == "published"
    with loaded_db.cursor() as cur:
        cur.execute("SELECT id FROM users ORDER BY id LIMIT 40")
        users = [row[0] for row in cur.fetchall()]
    with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start() as server:
        session = requests.Session()
        pages = {}
        for user in users:
            body = session.get(f"{server.url}/recommendations/{user}", params={"limit": 10}).json()
            assert body["experiment"] == "e2e" and body["variant"] in ("model", "popular")
            pages[user] = body
        # Every user clicks (views) the first post of its page.
        with loaded_db.cursor() as cur:
            for user, body in pages.items():
                cur.execute(
                    "INSERT INTO interactions (user_id, post_id, type, created_at)"
                    " VALUES (%s, %s, 'view', clock_timestamp())",
                    (user, body["recommendations"][0]["post_id"]),
                )
        loaded_db.commit()
        clicked = datetime.now(UTC)

        def moved():
            with loaded_db.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {SCHEMA}.impressions")
                n = cur.fetchone()[0]
            loaded_db.rollback()
            return n == 10 * len(users)

        online.create_online_schema(loaded_db, SCHEMA)  # as the mover does (idempotent): the poll may come first
        wait_until(moved, 60, "every served post in recsvc's impressions table")
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def reported():
            body = session.get(f"{server.url}/admin/experiments", headers=headers).json()
            report = body["report"]
            if not report or not report["days"] or datetime.fromisoformat(body["computed_at"]) <= clicked:
                return None  # none yet, or computed before the clicks arrived
            variants = report["days"][0]["variants"]
            total = sum(v["impressions"] for v in variants)
            return variants if total == 10 * len(users) else None

        variants = wait_until(reported, 90, "a report over every impression")
        by_name = {v["variant"]: v for v in variants}
        for name in ("model", "popular"):
            assigned = [u for u, body in pages.items() if body["variant"] == name]
            assert by_name[name]["users"] == len(assigned)
            assert by_name[name]["clicks"]["view"] == len(assigned)  # one click per user, within the window
        assert by_name["model"]["vs_control"] is not None and by_name["popular"]["vs_control"] is None
        metrics = session.get(f"{server.url}/metrics").text
        assert 'recsvc_experiment_impressions{experiment="e2e",variant="model"}' in metrics
        status = session.get(f"{server.url}/admin/model-status", headers=headers).json()
        assert status["online"]["daily"][0]["impressions"] > 0
