"""`grove demo` end to end: real SDK and CLI, scripted model, real git, real database."""

from __future__ import annotations

import re
import select
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GROVE, run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_three_agents_and_the_tester_really_runs_the_code(tmp_path: Path) -> None:
    result = run_cli("demo", "--keep", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "kept the demo repository" in out
    for role in ("spec-writer", "implementer", "tester"):
        assert re.search(rf"{role}\s+│\s+completed", out), out
    assert "SPEC.md" in out and "greet.py" in out
    assert "tester said: Ran greet.py: Hello, Grove! — PASS" in out
    repo = Path(re.search(r"demo repository: (\S+)", out).group(1))  # type: ignore[union-attr]
    branches = subprocess.run(
        ["git", "branch", "--list", "--format=%(refname:short)", "grove/*"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(branches) == 3
    # The implementer's branch holds the spec-writer's commit too: each agent built on the last.
    log = subprocess.run(
        ["git", "log", "--format=%s", "--all"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert "spec-writer:" in log and "implementer:" in log


def test_dev_model_server_plays_the_readme_examples(repo: Path) -> None:
    """`grove dev model-server` answers what the README tells a new user to try: a
    file-writer's "Create PATH containing TEXT"; anything else fails, naming --script."""
    server = subprocess.Popen(
        [*GROVE, "dev", "model-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 60)
        assert ready, "the model server never announced itself"
        url = server.stdout.readline().split(" on ")[-1].strip()
        env_line = server.stdout.readline()
        assert env_line.startswith("export "), env_line  # pasteable into a shell
        env = dict(part.split("=", 1) for part in shlex.split(env_line)[1:])
        assert env["ANTHROPIC_BASE_URL"] == url
        assert run_cli("init", cwd=repo).returncode == 0

        made = run_cli("run", "file-writer", "Create hello.txt containing hi", cwd=repo, env=env)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "Created hello.txt" in made.stdout
        agent_id = made.stderr.split()[0]
        shown = subprocess.run(
            ["git", "show", f"grove/{agent_id}:hello.txt"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout == "hi\n"

        # Anything else fails, naming --script: never a green run that did nothing.
        other = run_cli("run", "reviewer", "Review the README", cwd=repo, env=env)
        assert other.returncode == 1, other.stdout + other.stderr
        assert "no behaviour for this task ('Review the README')" in other.stderr
        assert "grove dev model-server --script FILE.yaml" in other.stderr
        # A second server on the taken port: one line, exit 2, like the dashboard.
        taken = run_cli("dev", "model-server", "--port", url.rsplit(":", 1)[1], cwd=repo)
        assert taken.returncode == 2, taken.stderr
        assert taken.stderr.strip().splitlines() == [
            f"grove: error: cannot serve the model server on 127.0.0.1:{url.rsplit(':', 1)[1]}: "
            "Address already in use; choose another --port (0: any free port)"
        ]
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reaps it and closes its pipes
