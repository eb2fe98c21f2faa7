"""A child never gets more than its parent: its tools, Bash policy, per-attempt budget, fan-out
and depth are at most the parent's (clamped down the whole chain), and a role spawns only the
roles its ``may_spawn`` allows (unset: roles within its own powers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgrove.delegation import effective_role
from agentgrove.grove import Grove
from agentgrove.models import SpawnRequest
from agentgrove.roles import BUILTIN_ROLES, clamp, spawn_refusal
from agentgrove.runtime import ScriptedRuntime
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, bash, say, tool_use
from agentgrove.workspaces import run_git
from tests.conftest import run_cli

REVIEWER = BUILTIN_ROLES["reviewer"]
IMPLEMENTER = BUILTIN_ROLES["implementer"]


def test_clamp_takes_the_narrower_of_every_power() -> None:
    child = clamp(IMPLEMENTER, REVIEWER)
    assert child.tools == ("Read", "Glob", "Grep", "Bash")
    assert child.bash == "read-only"
    assert child.max_budget_usd == REVIEWER.max_budget_usd
    assert child.max_depth <= REVIEWER.max_depth and child.max_children <= REVIEWER.max_children
    no_bash = REVIEWER.model_copy(update={"bash": "none"})
    assert clamp(IMPLEMENTER, no_bash).bash == "none"
    assert clamp(REVIEWER, IMPLEMENTER) == REVIEWER  # a narrower child keeps what it has


def test_spawn_refusal_by_default_and_by_may_spawn() -> None:
    assert spawn_refusal(IMPLEMENTER, REVIEWER) is None  # within the implementer's powers
    wider = spawn_refusal(REVIEWER, IMPLEMENTER)
    assert wider is not None and "Write" in wider and "may_spawn" in wider
    listed = REVIEWER.model_copy(update={"may_spawn": ("implementer",)})
    assert spawn_refusal(listed, IMPLEMENTER) is None  # allowed, and clamped
    only_tester = IMPLEMENTER.model_copy(update={"may_spawn": ("tester",)})
    refused = spawn_refusal(only_tester, BUILTIN_ROLES["reviewer"])
    assert refused is not None and "may_spawn: tester" in refused


def test_a_childs_powers_are_clamped_down_the_chain_and_its_budget_capped(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        "[roles.reviewer]\nmax_budget_usd = 0.5\n"
        'may_spawn = ["implementer"]\n'
        '[roles.implementer]\nmay_spawn = ["tester"]\n'
    )
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        root = grove.service.spawn(SpawnRequest("reviewer", "review"))
        child = grove.service.spawn(SpawnRequest("implementer", "do", parent_id=root.id))
        grandchild = grove.service.spawn(SpawnRequest("tester", "test", parent_id=child.id))
        roles = grove.config.roles
        assert roles["reviewer"].may_spawn == ("implementer",)
        for agent in (child, grandchild):
            power = effective_role(roles, grove.store, agent)
            assert power is not None
            assert set(power.tools) <= set(REVIEWER.tools) and power.bash == "read-only"
            assert power.max_budget_usd <= 0.5
        # A grandchild is clamped by its parent's effective powers, and by their may_spawn.
        assert effective_role(roles, grove.store, grandchild).may_spawn == ()  # type: ignore[union-attr]
        assert child.max_budget_usd == 0.5 and grandchild.max_budget_usd == 0.5


def _spawn(role: str, task: str) -> Turn:
    return Turn([tool_use("mcp__grove__spawn_agent", {"role": role, "task": task})])


def _wait_for_child(request: ModelRequest) -> Turn:
    result = request.tool_results[0]
    try:
        child_id = json.loads(result)["id"]
    except (ValueError, KeyError):
        return say(f"spawn refused: {result}")
    return Turn([tool_use("mcp__grove__wait_agents", {"ids": [child_id], "timeout_s": 120})])


def _all_branches_files(repo: Path) -> set[str]:
    root = run_git(["rev-list", "--max-parents=0", "HEAD"], repo).split()[0]
    files: set[str] = set()
    for branch in run_git(["branch", "--format=%(refname:short)"], repo).split():
        files |= set(run_git(["diff", "--name-only", root, branch], repo).split())
    return files


@pytest.mark.e2e
def test_a_reviewer_cannot_widen_its_powers_through_an_implementer(repo: Path) -> None:
    """Listed in may_spawn, the implementer runs, but with the reviewer's powers: its Bash is
    read-only and it has no Write, so nothing it tries lands on any branch."""
    (repo / "grove.toml").write_text('[roles.reviewer]\nmay_spawn = ["implementer"]\n')
    script = (
        Script()
        .on(
            role="reviewer",
            turns=[
                _spawn("implementer", "write hacked.txt"),
                _wait_for_child,
                lambda req: say(f"child said: {req.tool_results[0]}"),
            ],
        )
        .on(
            role="implementer",
            turns=[
                bash("echo pwned > hacked.txt"),
                Turn([tool_use("Write", {"file_path": "written.txt", "content": "x"})]),
                lambda req: say("RESULT " + req.tool_results[0]),
            ],
        )
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "reviewer", "review", "--json", cwd=repo, env=server.env())
        server.assert_done()
    parent = json.loads(result.stdout)
    assert parent["status"] == "completed", result.stderr
    assert "completed" in parent["output"], parent["output"]
    files = _all_branches_files(repo)
    assert "hacked.txt" not in files and "written.txt" not in files, files


@pytest.mark.e2e
def test_spawning_a_role_outside_may_spawn_is_a_tool_error(repo: Path) -> None:
    (repo / "grove.toml").write_text('[roles.spec-writer]\nmay_spawn = ["tester"]\n')
    script = Script().on(
        role="spec-writer",
        turns=[_spawn("implementer", "implement"), _wait_for_child],
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "spec-writer", "delegate", "--json", cwd=repo, env=server.env())
        server.assert_done()
    parent = json.loads(result.stdout)
    assert parent["status"] == "completed", result.stderr
    assert "spawn refused" in parent["output"] and "may_spawn: tester" in parent["output"]
    shown = json.loads(run_cli("show", parent["id"], "--json", cwd=repo).stdout)
    assert shown["children"] == []


@pytest.mark.e2e
def test_by_default_a_reviewer_may_not_spawn_a_wider_role(repo: Path) -> None:
    script = Script().on(role="reviewer", turns=[_spawn("implementer", "x"), _wait_for_child])
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "reviewer", "delegate", "--json", cwd=repo, env=server.env())
        server.assert_done()
    parent = json.loads(result.stdout)
    assert "spawn refused" in parent["output"] and "never gets more" in parent["output"]
