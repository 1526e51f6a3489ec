"""The operator's monitoring files: Prometheus alert rules (checked and unit-tested by the real promtool) and
the Grafana dashboard, whose every series must be one a live recsvc really exports on /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from testing.environment import server_env
from testing.factories import random_model
from testing.processes import GunicornServer
from testing.service import publish

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "recsvc.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package; make test-tools installs it)"
)
# A selector of a recsvc series: its name and, if any, its label matchers.
SELECTOR = re.compile(r"\b(recsvc_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')


@needs_promtool
def test_alert_rules_are_valid_and_each_alert_is_unit_tested():
    check = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert alerts == {
        "RecsvcDown",
        "RecsvcNoModel",
        "RecsvcModelTooOld",
        "RecsvcTrainingFailing",
        "RecsvcOnlineCtrDrop",
        "RecsvcRedisUnreachable",
    }
    cases = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == alerts  # every alert has a test where it fires (and the cases also say when it must not)


@needs_promtool
def test_example_prometheus_config_is_valid():
    check = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=RULES, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    return exprs + [r["expr"] for g in rules for r in g["rules"]]


@pytest.fixture
def scraped(redis_url, model_dir, cache, tmp_path):
    """The samples of a live gunicorn's /metrics after it served pages and an online report was computed."""
    # Users without a list: the worker computes their pages (source=model) unless their variant is the control.
    without_lists = tuple(f"user-{u}" for u in range(10, 20))
    publish(cache, model_dir, random_model(num_users=20, num_items=40, seed=1), top_k=30, skip_users=without_lists)
    experiment = {
        "name": "dash",
        "control": "popular",
        "variants": [
            {"name": "model", "share": 0.5, "ranking": "production"},
            {"name": "popular", "share": 0.5, "ranking": "popular"},
        ],
    }
    env = {**server_env(redis_url, model_dir), "EXPERIMENT": json.dumps(experiment)}
    vs = {"relative_difference": 0.2, "ci_low": 0.1, "ci_high": 0.3, "p_value": 0.01}
    ctr = {"view": 0.1, "like": 0.05, "comment": 0.01, "any": 0.12}
    cache.store_online_report(
        {
            "experiment": {
                "name": "dash",
                "control": "popular",
                "days": [
                    {
                        "day": "2026-03-02",
                        "variants": [
                            {"variant": "model", "impressions": 10, "ctr": ctr, "vs_control": {"any": vs}},
                            {"variant": "popular", "impressions": 10, "ctr": ctr, "vs_control": None},
                        ],
                    }
                ],
            },
            "quality": {"daily": [], "ctr_today": 0.1, "ctr_trailing_week": 0.1, "drop_fraction": 0.2, "alert": False},
        }
    )
    cache.record_training_outcome({"status": "published", "reason": None})
    with GunicornServer(env, workers=1, log_path=tmp_path / "gunicorn.log").start() as server:
        session = requests.Session()
        for u in range(20):
            assert session.get(f"{server.url}/recommendations/user-{u}", params={"limit": 5}).status_code == 200
        session.get(f"{server.url}/recommendations/user-1", params={"limit": 5})  # a memo hit
        text = session.get(f"{server.url}/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_every_series_of_the_dashboard_and_the_alerts_is_exported(scraped):
    names = {s.name for s in scraped}
    checked = 0
    for expr in _expressions():
        for name, matchers in SELECTOR.findall(expr):
            assert name in names, f"{name} (in {expr!r}) is not on /metrics"
            for label, op, value in MATCHER.findall(matchers):
                if label in ("job", "instance") or op != "=":
                    continue
                found = {s.labels.get(label) for s in scraped if s.name == name}
                assert value in found, f"{name}{{{label}={value!r}}} (in {expr!r}) matches nothing: {found}"
            checked += 1
    assert checked >= 30
