"""docs/NESTJS.md cannot rot: its TypeScript examples compile against the client, its commands resolve.

Each ```ts block of the guide starts with a ``// src/<file>.ts`` line naming the file it is in the example app;
the blocks are written to those files in a scratch directory inside clients/nestjs (so they resolve the
client's installed dependencies) with ``@recsvc/nestjs-client`` mapped to the client's sources, and compiled
with the client's strict ``tsc`` settings. The ```sh blocks are checked like the README's commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.clients.test_nestjs_client import CLIENT_DIR
from tests.test_readme_commands import CHECKS, REPO, command_lines, program_of, sh_blocks, split_line

GUIDE = REPO / "docs" / "NESTJS.md"
TSC = CLIENT_DIR / "node_modules" / ".bin" / "tsc"


def ts_blocks() -> dict[str, str]:
    """File name in the example app -> source, from the guide's ```ts blocks."""
    blocks = re.findall(r"^```ts\n(.*?)^```", GUIDE.read_text(), re.MULTILINE | re.DOTALL)
    files = {}
    for block in blocks:
        header = re.match(r"// (src/[\w.-]+\.ts)\n", block)
        assert header, f"a ts block does not start with its file name:\n{block[:200]}"
        assert header[1] not in files, f"{header[1]} appears twice"
        files[header[1]] = block
    return files


@pytest.fixture
def scratch():
    """A directory inside clients/nestjs with a tsconfig that maps the package name to its sources."""
    assert TSC.exists(), "run `make nestjs-client` first"
    directory = CLIENT_DIR / f".docs-check-{os.getpid()}"
    (directory / "src").mkdir(parents=True)
    tsconfig = {
        "extends": "../tsconfig.json",
        "compilerOptions": {
            "noEmit": True,
            "rootDir": "..",
            "baseUrl": ".",
            "paths": {"@recsvc/nestjs-client": ["../src/index.ts"]},
        },
        "include": ["src/**/*.ts"],
    }
    (directory / "tsconfig.json").write_text(json.dumps(tsconfig))
    yield directory
    shutil.rmtree(directory)


def compile_files(directory, files: dict[str, str]) -> subprocess.CompletedProcess:
    for name, source in files.items():
        (directory / name).write_text(source)
    return subprocess.run(
        [str(TSC), "-p", str(directory / "tsconfig.json")], cwd=CLIENT_DIR, capture_output=True, text=True, timeout=240
    )


@pytest.mark.timeout(300)
def test_guide_examples_compile_against_the_client(scratch):
    files = ts_blocks()
    assert {"src/app.module.ts", "src/feed.service.ts", "src/feed.controller.ts"} <= set(files)
    result = compile_files(scratch, files)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same compile fails on an example that misuses the client, so passing means something.
    broken = {
        "src/broken.ts": "import { RecommendationsService } from '@recsvc/nestjs-client';\n"
        "export const f = (s: RecommendationsService) => s.getRecommendations(42);\n"
    }
    result = compile_files(scratch, broken)
    assert result.returncode != 0 and "broken.ts" in result.stdout, result.stdout + result.stderr


def test_guide_commands_resolve():
    commands = [c for block in sh_blocks(GUIDE.read_text()) for line in command_lines(block) for c in split_line(line)]
    assert [c.argv[:2] for c in commands] == [("cd", "clients/nestjs"), ("npm", "ci"), ("npm", "pack")]
    for command in commands:
        CHECKS[program_of(command.argv[0])](command)
