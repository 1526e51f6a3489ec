"""Security: admin tokens, secrets kept out of logs and answers, no pickle, hostile ids through the SQL paths.

Covered elsewhere and not repeated here (docs/RELIABILITY.md has the map): admin disabled without a token
(tests/app/test_admin.py), secrets not echoed by configuration errors (tests/common/test_config.py), Flower's
basic auth from ``FLOWER_BASIC_AUTH`` (tests/tasks/test_flower_cli.py), the container's non-root user
(tests/docker/test_docker_files.py), an artifact carrying a pickle refused unopened (test_faults.py here).
"""

from __future__ import annotations

import csv
import hmac
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests

import app.auth
import ml.artifact
import ml.db.load
import ml.db.schema
from app import create_app
from testing.environment import ADMIN_TOKEN
from testing.processes import GunicornServer, start_worker
from testing.service import publish_once, run_train, settings_from

REPO = Path(__file__).resolve().parents[2]

WRONG_TOKENS = [
    "",
    "x",
    ADMIN_TOKEN[:-1],  # a prefix
    ADMIN_TOKEN + "x",  # one character more
    ADMIN_TOKEN[:-1] + chr(ord(ADMIN_TOKEN[-1]) + 1),  # same length, last character differs
    chr(ord(ADMIN_TOKEN[0]) + 1) + ADMIN_TOKEN[1:],  # same length, first character differs
    ADMIN_TOKEN.upper(),
    "x" * 7000,  # long, still under gunicorn's header limit
    "tökén-ユーザー-0123456789",
]


@pytest.mark.parametrize("token", WRONG_TOKENS, ids=[f"{len(t)} chars" for t in WRONG_TOKENS])
def test_every_wrong_token_of_any_length_is_401(served, token):
    headers = {"Authorization": f"Bearer {token}".encode()}
    for method, path in (("POST", "/admin/reload-model"), ("GET", "/admin/model-status")):
        response = requests.request(method, f"{served.url}{path}", headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{served.url}/admin/model-status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).ok


def test_the_token_is_compared_with_compare_digest(monkeypatch, tmp_path, redis_url):
    """Bearer tokens (app.auth: admin and events endpoints) go through hmac.compare_digest, right or wrong."""
    compared, compare_digest = [], hmac.compare_digest

    def recording(a, b):
        compared.append((len(a), len(b)))
        return compare_digest(a, b)

    monkeypatch.setattr(app.auth.hmac, "compare_digest", recording)
    env = {"REDIS_URL": redis_url, "MODEL_DIR": str(tmp_path), "ADMIN_TOKEN": ADMIN_TOKEN}
    flask_app = create_app({"TESTING": True, "SETTINGS": settings_from(env)})
    try:
        client = flask_app.test_client()
        assert client.get("/admin/model-status", headers={"Authorization": "Bearer short"}).status_code == 401
        assert client.get("/admin/model-status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    finally:
        flask_app.extensions["recsvc"].close()
    assert compared == [(5, len(ADMIN_TOKEN)), (len(ADMIN_TOKEN), len(ADMIN_TOKEN))]


def test_no_code_unpickles_anything():
    """Artifacts are numpy archives read with allow_pickle=False; Celery speaks JSON only."""
    offenders = []
    pattern = re.compile(
        r"\bimport (c?pickle|dill|cloudpickle|joblib)\b|allow_pickle\s*=\s*True|torch\.load|pickle\.loads?"
    )
    for package in ("app", "ml", "tasks", "common"):
        for path in (REPO / package).rglob("*.py"):
            offenders += [
                f"{path}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
            ]
    config = (REPO / "celeryconfig.py").read_text()
    assert not offenders
    assert re.search(r"accept_content\s*=\s*\[\s*\"json\"\s*\]", config), "Celery must accept JSON only"
    loads = [
        line for path in (REPO / "ml").rglob("*.py") for line in path.read_text().splitlines() if "np.load(" in line
    ]
    assert loads and all("allow_pickle=False" in line for line in loads)


# A secret-looking setting given a literal value, or a URL with a literal password. Placeholders (``<...>``,
# ``...``, ``user:password``) and references (``$VAR``, ``${VAR:?...}``, ``$$(...)``) are not secrets.
_SECRET_SETTING = re.compile(
    r"(?<![${])\b(ADMIN_TOKEN|[A-Z_]*PASSWORD|FLOWER_BASIC_AUTH)\s*(?P<sep>[=:])\s*['\"]?(?P<value>[^\s#'\"]+)"
)
_URL_PASSWORD = re.compile(r"[a-z+]+://[^/\s:@]*:(?P<value>[^@\s/]+)@")


def _is_placeholder(value: str) -> bool:
    return value.startswith(("$", "<", "...", "{")) or "<" in value or "password" in value.lower()


def test_no_secret_is_committed():
    """Tracked files (the tests and their support package aside, whose throwaway values are made up) hold no literal
    token or password."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert ".env" not in tracked and ".env" in (REPO / ".gitignore").read_text().split()
    found = []
    for name in tracked:
        path = REPO / name
        if (
            name.startswith(("tests/", "testing/"))
            or "/test/" in name
            or not path.is_file()
            or path.stat().st_size > 1_000_000
        ):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in (_SECRET_SETTING, _URL_PASSWORD):
                for match in pattern.finditer(line):
                    prose = line.lstrip().startswith("#") and match.groupdict().get("sep") == ":"  # "X: text"
                    if not prose and not _is_placeholder(match["value"]):
                        found.append(f"{name}:{number}: {line.strip()}")
    assert not found


HOSTILE_IDS = [
    "'; DROP TABLE users; --",
    'Robert"); DROP TABLE interactions;--',
    "\\N",
    "NULL",
    'a,b"c',
    "back\\slash\\.",
    "%s %(x)s {0} $1 ?",
    "1' OR '1'='1",
    "$(touch recsvc-pwned) `id` | ls && rm -rf ~",  # no "/": ids in the path cannot hold one
    "ünïcødé ユーザー 💜",
]


def write_hostile_dataset(out: Path) -> Path:
    """A dataset directory whose user, community and post ids are SQL, CSV and shell metacharacters."""
    out.mkdir()
    times = {"joined": "2026-01-01T00:00:00Z", "followed": "2026-01-02T00:00:00Z"}
    bad_community = "c'; --"
    posts = [f"post-{n}" for n in range(12)] + ["'); DELETE FROM posts; --", 'post,with"quote']
    rows = {
        "users.csv": (["id", "role", "created_at"], [(u, "fan", times["joined"]) for u in HOSTILE_IDS]),
        "communities.csv": (["id", "name"], [(bad_community, "Community; DROP"), ("plain", "Plain")]),
        "follows.csv": (
            ["user_id", "community_id", "created_at"], [(u, bad_community, times["followed"]) for u in HOSTILE_IDS]
        ),
        "posts.csv": (
            ["id", "community_id", "author_id", "tags", "created_at"],
            [(p, bad_community if n % 2 else "plain", "", "tag'1|t\"2", f"2026-01-03T{n:02d}:00:00Z")
             for n, p in enumerate(posts)],
        ),
        "interactions.csv": (
            ["user_id", "post_id", "type", "created_at"],
            [(u, posts[(i + j) % len(posts)], "like", f"2026-02-{1 + j:02d}T00:00:00Z")
             for i, u in enumerate(HOSTILE_IDS) for j in range(7)],
        ),
    }  # fmt: skip
    for name, (header, data) in rows.items():
        with (out / name).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(data)
    return out


def test_hostile_ids_go_through_every_sql_path_as_data(pg_conn, cache, service_env, tmp_path):
    """Import (COPY), the training read (COPY of the configured queries), the model and the feed keep them intact."""
    ml.db.schema.create_schema(pg_conn)
    ml.db.load.load_dataset_dir(pg_conn, write_hostile_dataset(tmp_path / "hostile"))
    pg_conn.commit()
    settings = settings_from(service_env)

    candidate, model, _, _ = publish_once(settings, cache)

    assert ml.db.schema.count_rows(pg_conn)["users"] == len(HOSTILE_IDS)  # no statement ran from the data
    assert sorted(ml.artifact.load(settings.model_dir, candidate.version)[0].user_ids) == sorted(HOSTILE_IDS)
    assert "'); DELETE FROM posts; --" in model.item_ids
    flask_app = create_app({"TESTING": True, "SETTINGS": settings})
    try:
        client = flask_app.test_client()
        for user in HOSTILE_IDS:
            page = client.get(f"/recommendations/{quote(user, safe='')}?limit=3")
            assert page.status_code == 200, (user, page.get_json())
            body = page.get_json()
            assert (body["user_id"], body["strategy"], body["model_version"]) == (
                user,
                "personalized",
                candidate.version,
            )
    finally:
        flask_app.extensions["recsvc"].close()


def test_no_secret_reaches_a_log_or_an_answer(loaded_db, service_env, services, celery_client, tmp_path, private_redis):
    """Passwords in the Redis and database URLs, Flower's and the admin token stay out of every log and answer.

    The cache Redis requires a password (set with CONFIG SET), so the credentials demonstrably come from
    REDIS_URL; PostgreSQL trusts local connections, so its password is only carried, which is enough to
    show it is never printed.
    """
    secrets = {"redis": "redis-secret-pw-4821", "db": "db-secret-pw-9931", "flower": "flower-secret-pw-1177"}
    redis.Redis.from_url(private_redis.url).config_set("requirepass", secrets["redis"])
    redis_url = private_redis.url.replace("redis://", f"redis://:{secrets['redis']}@")
    database_url = service_env["DATABASE_URL"].replace("postgres@", f"postgres:{secrets['db']}@")
    env = {**service_env, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "ADMIN_TOKEN": ADMIN_TOKEN,
           "FLOWER_BASIC_AUTH": f"ops:{secrets['flower']}", "LOG_LEVEL": "debug"}  # fmt: skip
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(private_redis.url).ping()  # without the password Redis refuses
    worker = start_worker(services, env)
    assert run_train(celery_client)["status"] == "published"
    server = GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        answers = [
            requests.get(f"{server.url}/health"),
            requests.post(f"{server.url}/admin/reload-model", headers=admin),
            requests.get(f"{server.url}/admin/model-status", headers=admin),
            requests.get(f"{server.url}/admin/model-status", headers={"Authorization": "Bearer wrong"}),
            requests.get(f"{server.url}/"),
            requests.get(f"{server.url}/metrics"),
        ]
    finally:
        assert server.stop() == 0
    assert answers[0].json()["checks"]["redis"]["ok"] is True  # the password from REDIS_URL was used
    texts = {
        "worker log": worker.log(),
        "gunicorn log": server.log(),
        "answers": "\n".join(a.text for a in answers),
    }
    for what, text in texts.items():
        for name, secret in {**secrets, "admin token": ADMIN_TOKEN}.items():
            assert secret not in text, f"the {name} appears in the {what}"
