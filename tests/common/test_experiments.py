"""Experiment declarations and the assignment of users to variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import chisquare

from common.config import ConfigError, load_settings
from common.experiments import parse_experiment
from testing.processes import REPO, free_port

SPEC = {
    "name": "pop-control",
    "control": "popular",
    "variants": [
        {"name": "model", "share": 0.5, "ranking": "production"},
        {"name": "popular", "share": 0.3, "ranking": "popular"},
        {"name": "bpr", "share": 0.2, "ranking": "model", "training": {"LIGHTFM_LOSS": "bpr"}},
    ],
}
USERS = [f"user-{i}" for i in range(30_000)]


def _assign_in_subprocess(users):
    code = (
        "import json, sys; from common.experiments import parse_experiment; "
        "e = parse_experiment(sys.argv[1]); print(json.dumps([e.assign(u).name for u in json.load(sys.stdin)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(SPEC)],
        input=json.dumps(users),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_assignment_is_the_same_in_other_processes_and_balanced():
    experiment = parse_experiment(json.dumps(SPEC))
    here = [experiment.assign(u).name for u in USERS]
    assert _assign_in_subprocess(USERS[:5000]) == here[:5000]  # another interpreter (its own hash seed)
    assert [experiment.assign(u).name for u in USERS[:100]] == here[:100]  # sticky across requests
    observed = [here.count(name) for name in ("model", "popular", "bpr")]
    expected = [0.5 * len(USERS), 0.3 * len(USERS), 0.2 * len(USERS)]
    assert chisquare(observed, expected).pvalue > 0.001


def test_another_experiment_name_reshuffles_users():
    other = parse_experiment(json.dumps({**SPEC, "name": "second"}))
    first = parse_experiment(json.dumps(SPEC))
    same = sum(first.assign(u).name == other.assign(u).name for u in USERS[:10_000])
    assert 0.3 < same / 10_000 < 0.46  # independent: 0.5^2 + 0.3^2 + 0.2^2 = 0.38


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "name must be"),
        ({"variants": SPEC["variants"][:1]}, "at least two"),
        ({"control": "nope"}, "control 'nope'"),
        ({"extra": 1}, "unknown field"),
        ({"variants": [{**SPEC["variants"][0], "share": 0.9}, *SPEC["variants"][1:]]}, "sum to 1"),
        ({"variants": [{**SPEC["variants"][0], "ranking": "random"}, *SPEC["variants"][1:]]}, "ranking must be"),
        ({"variants": [SPEC["variants"][0], {**SPEC["variants"][0], "share": 0.5}]}, "unique"),
        ({"variants": [*SPEC["variants"][:2], {**SPEC["variants"][2], "training": {}}]}, "training must map"),
    ],
)
def test_bad_declarations_are_refused_naming_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        parse_experiment(json.dumps({**SPEC, **change}))


def test_not_json_is_refused():
    with pytest.raises(ValueError, match="not JSON"):
        parse_experiment("{name: x}")


BAD_SETTINGS = [
    ({"EXPERIMENT": '{"name": "x", "variants": []}'}, "EXPERIMENT="),
    ({"EXPERIMENT_FILE": "/nonexistent/experiment.json"}, "EXPERIMENT_FILE="),
    ({"SERVED_STREAM_MAXLEN": "-1"}, "SERVED_STREAM_MAXLEN="),
    ({"ONLINE_SCHEMA": "public"}, "ONLINE_SCHEMA="),
    ({"ATTRIBUTION_WINDOW_HOURS": "0"}, "ATTRIBUTION_WINDOW_HOURS="),
    ({"CTR_DROP_ALERT_FRACTION": "1.5"}, "CTR_DROP_ALERT_FRACTION="),
]


@pytest.mark.parametrize(("env", "named"), BAD_SETTINGS)
def test_bad_experiment_settings_are_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env, dotenv=False)


def test_a_model_variant_takes_only_valid_training_variables():
    spec = {**SPEC, "variants": [*SPEC["variants"][:2], {**SPEC["variants"][2], "training": {"LIGHTFM_EPOCH": "3"}}]}
    with pytest.raises(ConfigError, match=r"EXPERIMENT=.*not training variables: LIGHTFM_EPOCH"):
        load_settings({"EXPERIMENT": json.dumps(spec)}, dotenv=False)
    spec["variants"][2]["training"] = {"LIGHTFM_EPOCHS": "0"}
    with pytest.raises(ConfigError, match=r"LIGHTFM_EPOCHS='0' is invalid"):
        load_settings({"EXPERIMENT": json.dumps(spec)}, dotenv=False)


def test_the_experiment_may_come_from_a_file_but_not_from_both(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(SPEC))
    assert load_settings({"EXPERIMENT_FILE": str(path)}, dotenv=False).experiment.name == "pop-control"
    assert load_settings({}, dotenv=False).experiment is None  # none by default
    with pytest.raises(ConfigError, match="both set"):
        load_settings({"EXPERIMENT_FILE": str(path), "EXPERIMENT": json.dumps(SPEC)}, dotenv=False)


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "gunicorn"), "wsgi:app"],
        [sys.executable, "-m", "celery", "-A", "tasks", "inspect", "ping"],
    ],
    ids=["gunicorn", "celery"],
)
def test_a_bad_experiment_stops_the_processes_at_start_naming_it(command, tmp_path):
    env = {**os.environ, "EXPERIMENT": '{"name": "x", "variants": [{"name": "a"}]}', "API_PORT": str(free_port())}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert 'EXPERIMENT=\'{"name": "x"' in done.stderr and "is invalid: variants must be" in done.stderr
