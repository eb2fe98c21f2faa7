"""Dogfooding tests through the real `grove` CLI, the real SDK and Claude CLI, real git and the
real database, against the scripted model server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentgrove.testing import (
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    read_file,
    say,
    tool_use,
    write_file,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

SPEC = "# SPEC\n\nadd(a, b) returns a + b.\n"


def _wait_for_child(request: ModelRequest) -> Turn:
    child_id = json.loads(request.tool_results[0])["id"]
    return Turn([tool_use("mcp__grove__wait_agents", {"ids": [child_id], "timeout_s": 120})])


def _report_child(request: ModelRequest) -> Turn:
    [child] = json.loads(request.tool_results[0])
    return say(f"child {child['id']} {child['status']}: {child['output']}")


def test_dogfood_2_spec_writer_delegates_to_an_implementer(repo: Path) -> None:
    script = (
        Script()
        .on(
            role="spec-writer",
            turns=[
                write_file("SPEC.md", SPEC),
                Turn(
                    [
                        tool_use(
                            "mcp__grove__spawn_agent",
                            {"role": "implementer", "task": "Implement SPEC.md in calc.py"},
                        )
                    ]
                ),
                _wait_for_child,
                _report_child,
            ],
        )
        .on(
            role="implementer",
            turns=[
                read_file("SPEC.md"),
                lambda req: (
                    write_file("calc.py", "def add(a, b):\n    return a + b\n")
                    if "add(a, b)" in req.tool_results[0]
                    else say("SPEC.md is missing")
                ),
                say("Implemented add in calc.py"),
            ],
        )
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "run",
            "spec-writer",
            "Write SPEC.md for add() and delegate it",
            "--json",
            cwd=repo,
            env=server.env(),
        )
        server.assert_done()
    assert result.returncode == 0, result.stderr
    parent = json.loads(result.stdout)
    shown = json.loads(run_cli("show", parent["id"], "--json", cwd=repo).stdout)
    [child_id] = shown["children"]
    child = json.loads(run_cli("show", child_id, "--json", cwd=repo).stdout)

    assert parent["status"] == "completed" and child["status"] == "completed"
    assert child["parent_id"] == parent["id"]
    assert f"child {child_id} completed: Implemented add in calc.py" in parent["output"]
    child_tree = Path(child["workspace"]["path"])
    assert (child_tree / "SPEC.md").read_text() == SPEC
    assert (child_tree / "calc.py").exists()
    assert child["workspace"]["files_changed"] == ["calc.py"]
    # The child branched from the parent's work in progress, committed before the spawn.
    log = subprocess.run(
        ["git", "log", "--format=%s", child["workspace"]["branch"]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "spec-writer: work in progress before spawning implementer" in log
    tree = shown["tree"]
    assert tree["agents"] == 2
    assert tree["tokens_in"] == parent["tokens_in"] + child["tokens_in"]
    assert tree["tokens_out"] == parent["tokens_out"] + child["tokens_out"]
    assert tree["cost_usd"] == pytest.approx(parent["cost_usd"] + child["cost_usd"])
    assert child["cost_usd"] > 0 and parent["cost_usd"] > 0
