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
    bash,
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


DESIGN_SUMMARY = "SPEC.md: greet.py prints Hello, <name>!"


def _implement(request: ModelRequest) -> Turn:
    if DESIGN_SUMMARY not in request.prompt:
        return say("the design output is missing from my prompt")
    return write_file("greet.py", "import sys\nprint(f'Hello, {sys.argv[1]}!')\n")


def _verdict(request: ModelRequest) -> str:
    out = request.tool_results[0]
    return f"ran greet.py: {out.strip()} — {'PASS' if 'Hello, Grove!' in out else 'FAIL'}"


def test_dogfood_3_design_implement_test_workflow(repo: Path) -> None:
    verdict: list[str] = []

    def report(request: ModelRequest) -> Turn:
        verdict.append(_verdict(request))
        return write_file("TEST_REPORT.md", verdict[0] + "\n")

    script = (
        Script()
        .on(role="spec-writer", turns=[write_file("SPEC.md", SPEC), say(DESIGN_SUMMARY)])
        .on(role="implementer", turns=[_implement, say("Implemented greet.py")])
        .on(
            role="tester",
            turns=[
                bash("python3 greet.py Grove"),
                report,
                lambda req: say(verdict[0]),
            ],
        )
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "workflow",
            "run",
            "design-implement-test",
            "--input",
            "feature=a greeter",
            "--wait",
            "--json",
            cwd=repo,
            env=server.env(),
        )
        server.assert_done()
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    nodes = {n["key"]: n for n in run["nodes"]}
    assert run["status"] == "completed"
    assert [n["state"] for n in run["nodes"]] == ["completed"] * 3
    # Order: each node started only after its dependency finished.
    agents = {
        k: json.loads(run_cli("show", n["agent_id"], "--json", cwd=repo).stdout)
        for k, n in nodes.items()
    }
    assert agents["design"]["finished_at"] <= agents["implement"]["started_at"]
    assert agents["implement"]["finished_at"] <= agents["test"]["started_at"]
    assert DESIGN_SUMMARY in agents["implement"]["task"]
    assert nodes["test"]["output"] == "ran greet.py: Hello, Grove! — PASS"
    logs = run_cli("logs", nodes["test"]["agent_id"], cwd=repo).stdout
    assert "Bash" in logs and "python3 greet.py Grove" in logs
    # The final branch holds all three nodes' commits.
    log = subprocess.run(
        ["git", "log", "--format=%s", nodes["test"]["branch"]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    roles = [line.split(":")[0] for line in log]
    assert roles[:3] == ["tester", "implementer", "spec-writer"] or roles[:2] == [
        "implementer",
        "spec-writer",
    ]
    assert nodes["test"]["base_commit"] == nodes["implement"]["result_commit"]
    assert nodes["implement"]["base_commit"] == nodes["design"]["result_commit"]
    tip = subprocess.run(
        ["git", "ls-tree", "--name-only", nodes["test"]["branch"]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"SPEC.md", "greet.py", "TEST_REPORT.md"} <= set(tip)
