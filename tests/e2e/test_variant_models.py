"""A ``model`` variant end to end with the real processes: a Celery worker's training run trains, gates and
publishes the variants' models next to production's, gunicorn serves each variant user its variant's version
(``variant_fallback: false``), a variant whose model failed the gate falls back to production and says so,
and the next run's variant version reaches the web worker without a restart."""

from __future__ import annotations

import json

import requests

from testing.polling import wait_until
from testing.processes import GunicornServer, start_worker
from testing.service import run_train, settings_from

EXPERIMENT = {
    "name": "e2e-models",
    "control": "prod",
    "variants": [
        {"name": "prod", "share": 0.4, "ranking": "production"},
        {"name": "bpr", "share": 0.4, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr"}},
        # An untrained model (one epoch at a vanishing rate) fails the quality gate: nothing is published for it.
        {
            "name": "untrained",
            "share": 0.2,
            "ranking": "model",
            "training": {"LIGHTFM_LEARNING_RATE": "0.000001", "LIGHTFM_EPOCHS": "1"},
        },
    ],
}


def test_a_training_run_publishes_the_variants_model_and_gunicorn_serves_it(
    loaded_db, cache, service_env, services, celery_client, tmp_path
):
    env = {**service_env, "EXPERIMENT": json.dumps(EXPERIMENT)}
    experiment = settings_from(env).experiment
    start_worker(services, env)
    outcome = run_train(celery_client, timeout=120)
    assert outcome["status"] == "published"
    bpr, untrained = outcome["variants"]["bpr"], outcome["variants"]["untrained"]
    assert bpr["status"] == "published" and bpr["version"] != outcome["version"]
    assert untrained["status"] == "rejected" and "quality gate" in untrained["reason"]
    assert outcome["stages"]["variants"] > 0  # what the variants cost the run, in the task result Flower shows

    with loaded_db.cursor() as cur:
        cur.execute("SELECT id FROM users ORDER BY id LIMIT 60")
        users = [row[0] for row in cur.fetchall()]
    by_variant = {
        name: [u for u in users if experiment.assign(u).name == name] for name in ("prod", "bpr", "untrained")
    }
    assert all(by_variant.values())

    with GunicornServer(env, workers=1, log_path=tmp_path / "gunicorn.log").start() as server:
        session = requests.Session()

        def page(user: str) -> dict:
            return session.get(f"{server.url}/recommendations/{user}", params={"limit": 5}).json()

        for name, version, fallback in (
            ("bpr", bpr["version"], False),
            ("untrained", outcome["version"], True),  # its model is missing: production, and the page says so
            ("prod", outcome["version"], False),
        ):
            body = page(by_variant[name][0])
            assert (body["variant"], body["model_version"], body["variant_fallback"]) == (name, version, fallback)

        # The next run's variant version reaches the running worker (its reloader polls the variant pointer).
        following = run_train(celery_client, timeout=120)["variants"]["bpr"]
        assert following["status"] == "published" and following["previous_version"] == bpr["version"]
        user = by_variant["bpr"][0]
        wait_until(lambda: page(user)["model_version"] == following["version"], 30, "the new variant version served")
