"""Every shell command in README.md and docs/DOCKER.md refers to something real, and the cheap ones are run, so
the docs cannot rot.

The commands are the lines of those documents' ```sh blocks, run from the repository root (in a block that
shows output, the lines after a ``$`` prompt). Each is split into its pipeline and ``&&`` steps, and every step
must be of a kind this test knows how to check; a new kind of command in them fails here until it is checked too:

- ``make X``: a target of the Makefile (``make -n X`` parses it without running anything);
- ``python -m X`` / ``.venv/bin/python -m X``: the module exists, ``--help`` runs, and every subcommand and
  option written in the README appears in that help; a few are run for real on scratch data;
- ``celery -A tasks X``: celery's own CLI parses the subcommand and options; task names are registered;
- ``curl`` on ``localhost``: the path is a route of the app (or Flower's port) and the port the default (so are
  the ``http://localhost:PORT/...`` links in the text; macOS's ``open`` is no command here, a URL is written out);
- ``docker compose -f F ...``: F parses and names the services used; ``cp A B``: A exists;
- ``cd D``, ``npm ci|test|pack|run X``, ``npx tsc``: the directory, the package script, the local binary.

Usage notation is understood: ``[--opt]`` is optional, ``A | B`` after a command are alternative arguments
(unless ``B`` starts a program: then it is a pipe), and ``DIR``, ``VERSION``, ``N`` and ``<...>`` are
placeholders.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ml import artifact
from testing.factories import random_model

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Documents whose commands are checked here: the README and the pages its commands moved to.
DOCUMENTS = (README, REPO / "docs" / "DOCKER.md")
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
DEFAULT_API_PORT = 8000
DEFAULT_FLOWER_PORT = 5555
PROGRAMS = {"make", "python", "celery", "curl", "docker", "cp", "cd", "npm", "npx", "jq"}
PLACEHOLDER = re.compile(r"^(<.*>|[A-Z][A-Z_]*|\.\.\.)$")


@dataclass(frozen=True)
class Command:
    line: str  # the README line it came from
    argv: tuple[str, ...]
    cwd: str  # relative to the repository root, after any `cd` before it on the line


def sh_blocks(text: str) -> list[list[str]]:
    """The lines of every ```sh block."""
    return [block.splitlines() for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def command_lines(block: list[str]) -> list[str]:
    """The command lines of a block: after a ``$`` prompt if it shows output, else every line; comments cut."""
    prompted = [line[2:] for line in block if line.startswith("$ ")]
    lines = prompted if prompted else block
    return [re.split(r"\s+#\s", line)[0].strip() for line in lines if line.strip() and not line.startswith("#")]


def program_of(word: str) -> str:
    return Path(word).name


def split_line(line: str) -> list[Command]:
    """A README line as its commands: ``&&`` steps and pipes, with usage alternatives expanded."""
    commands: list[Command] = []
    cwd = "."
    for step in re.split(r"\s&&\s", line):
        pieces = [p.strip() for p in re.split(r"\s\|\s", step)]
        head = pieces[0]
        alternatives = [head]
        for piece in pieces[1:]:
            first = shlex.split(piece)[0]
            if program_of(first) in PROGRAMS:  # a pipe into another program
                alternatives.append(piece)
            else:  # usage alternatives: `cmd --list | VERSION` is `cmd --list` or `cmd VERSION`
                base = shlex.split(head)
                fixed = base[: 3 if program_of(base[0]) == "python" else len(base) - 1]
                alternatives.append(shlex.join(fixed) + " " + piece)
        for text in alternatives:
            text = re.sub(r"<[^<>]*>", "ARG", text)  # `<task id>` is one placeholder
            argv = tuple(w for w in shlex.split(text.replace("[", " ").replace("]", " ")) if w)
            if program_of(argv[0]) == "cd":
                cwd = str(Path(cwd) / argv[1])
            commands.append(Command(line, argv, cwd))
    return commands


def readme_commands() -> list[Command]:
    """The commands of every document in DOCUMENTS."""
    for document in DOCUMENTS:
        assert document.is_file(), f"{document.relative_to(REPO)} is missing"
    return [
        c
        for document in DOCUMENTS
        for block in sh_blocks(document.read_text())
        for line in command_lines(block)
        for c in split_line(line)
    ]


def concrete(args: tuple[str, ...]) -> list[str]:
    return [a for a in args if not PLACEHOLDER.match(a)]


# --- checkers, one per kind of command -----------------------------------------------------------------------------


def check_make(command: Command) -> None:
    targets = concrete(command.argv[1:])
    assert targets, command.line
    makefile = (REPO / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"no make target {target}"
        result = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


_help_cache: dict[tuple[str, ...], str] = {}


def help_text(argv: list[str]) -> str:
    key = tuple(argv)
    if key not in _help_cache:
        result = subprocess.run([*argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{shlex.join(argv)} --help: {result.stderr}"
        _help_cache[key] = result.stdout
    return _help_cache[key]


def check_python(command: Command) -> None:
    argv = command.argv
    assert argv[1] == "-m", f"only `python -m` commands are documented: {command.line}"
    module, args = argv[2], concrete(argv[3:])
    if not (REPO / Path(*module.split("."))).with_suffix(".py").is_file():
        # Not ours: must at least be importable here (e.g. the standard library's json.tool).
        found = subprocess.run([PYTHON, "-c", f"import importlib.util as u; assert u.find_spec({module!r})"])
        assert found.returncode == 0, f"no module {module}"
        return
    text = help_text([PYTHON, "-m", module])
    for arg in args:
        if arg.startswith("-"):
            assert arg.split("=")[0] in text, f"{module} has no option {arg}"
        elif arg == args[0]:  # a subcommand
            assert re.search(rf"\b{re.escape(arg)}\b", text), f"{module} has no subcommand {arg}"
            text = help_text([PYTHON, "-m", module, arg])


def check_celery(command: Command) -> None:
    argv = list(command.argv)
    assert argv[1:3] == ["-A", "tasks"], command.line
    args = concrete(argv[3:])
    if args[:1] == ["call"]:
        from tasks.celery import app

        app.loader.import_default_modules()  # the task modules of the app's include list, as a worker imports them

        assert args[1] in app.tasks, f"no task {args[1]}"
        args = args[:1]  # `call`'s --help takes no task name
    help_text([str(BIN / "celery"), "-A", "tasks", *args])


def _app_routes():
    from app import create_app
    from common.config import load_settings

    app = create_app({"TESTING": True, "SETTINGS": load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}, dotenv=False)})
    try:
        return app.url_map.bind("localhost")
    finally:
        app.extensions["recsvc"].close()


def check_url(command: Command) -> None:
    urls = [m for a in command.argv for m in re.findall(r"localhost:(\d+)(/[^\s'\"?]*)?", a)]
    assert urls, f"no localhost URL in {command.line}"
    method = "POST" if "POST" in command.argv else "GET"
    for port, path in urls:
        if int(port) == DEFAULT_FLOWER_PORT:
            continue  # Flower's own pages
        assert int(port) == DEFAULT_API_PORT, command.line
        _app_routes().match(path or "/", method=method)  # raises NotFound / MethodNotAllowed


def check_docker(command: Command) -> None:
    argv = list(command.argv)
    assert argv[1] == "compose", command.line
    compose_file = REPO / command.cwd / argv[argv.index("-f") + 1]
    services = yaml.safe_load(compose_file.read_text())["services"]
    rest = argv[argv.index("-f") + 2 :]
    assert rest[0] in {"up", "down", "ps", "logs", "exec", "run", "build", "pull", "stop", "restart"}, command.line
    for word in rest[1:]:
        if not word.startswith("-") and word not in ("sh", "python", "celery", "-m") and rest[0] != "exec":
            assert word in services, f"no compose service {word}"
    if rest[0] == "exec":  # `exec SERVICE COMMAND...`: the command runs in the image, so check it as one
        assert rest[1] in services, f"no compose service {rest[1]}"
        inner = Command(command.line, tuple(rest[2:]), ".")
        CHECKS[program_of(inner.argv[0])](inner)


def check_cp(command: Command) -> None:
    assert (REPO / command.cwd / command.argv[1]).exists(), command.line


def check_cd(command: Command) -> None:
    assert (REPO / command.cwd).is_dir(), command.line


def check_npm(command: Command) -> None:
    package = json.loads((REPO / command.cwd / "package.json").read_text())
    sub = command.argv[1]
    assert sub in {"ci", "install", "test", "pack", "run"}, command.line
    if sub == "run":
        assert command.argv[2] in package["scripts"], command.line
    if sub == "test":
        assert "test" in package["scripts"]
    if sub == "ci":
        assert (REPO / command.cwd / "package-lock.json").is_file()


def check_npx(command: Command) -> None:
    binary = REPO / command.cwd / "node_modules" / ".bin" / command.argv[1]
    assert binary.exists(), f"{command.argv[1]} is not installed in {command.cwd} (make nestjs-client)"


def check_jq(command: Command) -> None:
    pass  # a filter on a documented command's output


CHECKS = {
    "make": check_make,
    "python": check_python,
    "celery": check_celery,
    "curl": check_url,
    "docker": check_docker,
    "cp": check_cp,
    "cd": check_cd,
    "npm": check_npm,
    "npx": check_npx,
    "jq": check_jq,
}


def test_readme_has_commands_of_every_main_kind():
    kinds = {program_of(c.argv[0]) for c in readme_commands()}
    assert {"make", "python", "celery", "curl"} <= kinds, kinds


# Without a README there is nothing to parametrize; test_readme_has_commands_of_every_main_kind then fails.
@pytest.mark.parametrize(
    "command", readme_commands() if README.is_file() else [], ids=lambda c: shlex.join(c.argv)[:80]
)
def test_readme_command_refers_to_something_real(command):
    program = program_of(command.argv[0])
    assert program in CHECKS, f"no check for `{program}` commands: {command.line}"
    if command.argv[0].startswith(".venv/"):
        assert (REPO / command.argv[0]).exists() or (BIN / program).exists(), command.argv[0]
    CHECKS[program](command)


def test_readme_links_to_the_running_system_are_routes():
    """``http://localhost:PORT/...`` in the text (what to open in a browser) names a route and a default port."""
    links = re.findall(r"http://localhost:\d+/[^\s`)'\"]*", README.read_text())
    assert links, "the README links to none of the running system's pages"
    for link in links:
        check_url(Command(link, ("curl", link), "."))


def test_the_notation_is_read_as_meant():
    """The parser itself, on the README's own notation."""
    (listing, rollback) = split_line(".venv/bin/python -m tasks.rollback --list | VERSION")
    assert listing.argv == (".venv/bin/python", "-m", "tasks.rollback", "--list")
    assert rollback.argv == (".venv/bin/python", "-m", "tasks.rollback", "VERSION")
    (curl, tool) = split_line("curl -s 'localhost:8000/recommendations/user-0001?limit=3' | python -m json.tool")
    assert curl.argv[0] == "curl" and tool.argv == ("python", "-m", "json.tool")
    (result,) = split_line(".venv/bin/celery -A tasks result <task id>")
    assert concrete(result.argv) == [".venv/bin/celery", "-A", "tasks", "result"]
    (bootstrap,) = split_line(".venv/bin/python -m tasks.bootstrap [--force]")
    assert bootstrap.argv[-1] == "--force"
    cd, npm = split_line("cd clients/nestjs && npm ci")
    assert npm.cwd == "clients/nestjs" and npm.argv == ("npm", "ci")
    assert command_lines(["$ make run", '{"output": 1}', "make test  # comment"]) == ["make run"]
    with pytest.raises(AssertionError):
        check_python(Command("x", ("python", "-m", "ml.demo", "--no-such-option"), "."))
    with pytest.raises(AssertionError):
        check_celery(Command("x", ("celery", "-A", "tasks", "call", "tasks.no_such_task"), "."))
    from werkzeug.exceptions import NotFound

    with pytest.raises(NotFound):
        check_url(Command("x", ("curl", "localhost:8000/no/such/path"), "."))


# --- the cheap ones, run for real -----------------------------------------------------------------------------------


def test_documented_data_commands_run_on_scratch_data(tmp_path, pg_conn, database_url, redis_url):
    """``ml.demo --out DIR``, ``ml.db load DIR``, ``ml.evaluate DIR``, ``tasks.rollback --list`` run as documented."""
    documented = {c.argv[2] for c in readme_commands() if program_of(c.argv[0]) == "python"}
    assert {"ml.demo", "ml.db", "ml.evaluate", "tasks.rollback"} <= documented
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(tmp_path / "models"),
    }

    def run(*args: str) -> str:
        result = subprocess.run([PYTHON, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, f"{shlex.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    data = tmp_path / "demo"
    run("ml.demo", "--out", str(data), "--users", "60", "--posts", "200", "--interactions", "3000", "--seed", "1")
    run("ml.db", "load", str(data))
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 60
    report = run("ml.evaluate", str(data), "--json")
    assert set(json.loads(report)) >= {"model", "popularity"}
    version = artifact.save(random_model(), tmp_path / "models", {"metrics": None})
    listing = run("tasks.rollback", "--list")
    assert re.search(rf"^{re.escape(version)}\b", listing, re.MULTILINE), listing
