"""`grove demo` end to end: real SDK and CLI, scripted model, real git, real database."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_three_agents_and_the_tester_really_runs_the_code(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
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
