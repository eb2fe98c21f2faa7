"""Delegation: children spawned from inside a running agent (orchestrator tools) and from the
CLI with --parent. Scripted runtime here; the real CLI in tests/test_dogfood.py."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.runtime import DelegationRefused, RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker
from tests.conftest import run_cli


async def parent_delegates(spec: RunSpec) -> RunResult:
    """Behaviour of both roles: the spec-writer writes SPEC.md and delegates; the child checks."""
    assert spec.delegate is not None
    if spec.role.name == "implementer":
        spec_text = (spec.cwd / "SPEC.md").read_text()
        (spec.cwd / "impl.py").write_text("print('implemented')\n")
        return RunResult(
            success=True,
            output=f"implemented: {spec_text.strip()}",
            tokens_in=20,
            tokens_out=4,
            cost_usd=0.002,
        )
    (spec.cwd / "SPEC.md").write_text("the spec\n")
    child = await spec.delegate.spawn_agent("implementer", "Implement SPEC.md")
    [done] = await spec.delegate.wait_agents([child], timeout_s=60)
    return RunResult(
        success=True, output=json.dumps(done), tokens_in=10, tokens_out=2, cost_usd=0.001
    )


def test_child_starts_from_parents_work_and_parent_waits_without_a_slot(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(parent_delegates)) as grove:
        # grove.run executes at concurrency 1: only a parked slot lets the child run.
        parent = grove.run("spec-writer", "Write SPEC.md and delegate")
        [child] = grove.store.list_agents(parent_id=parent.id)
        totals = grove.tree_totals(parent.id)
    assert parent.status is AgentStatus.COMPLETED, parent.error
    assert child.status is AgentStatus.COMPLETED and child.depth == 1
    assert json.loads(parent.output or "{}")["status"] == "completed"
    assert child.output == "implemented: the spec"
    assert child.workspace is not None and "impl.py" in child.workspace.files_changed
    assert (Path(child.workspace.worktree_path) / "SPEC.md").exists()
    assert (totals.agents, totals.tokens_in, totals.tokens_out) == (2, 30, 6)
    assert totals.cost_usd == pytest.approx(0.003)


def _refusal_runtime(attempts: list[str]) -> ScriptedRuntime:
    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.role.name != "planner":
            return RunResult(success=True, output="child done")
        for role in ("no-such-role", "implementer", "implementer", "implementer"):
            try:
                await spec.delegate.spawn_agent(role, "go")
                attempts.append("ok")
            except DelegationRefused as exc:
                attempts.append(str(exc))
        return RunResult(success=True, output="done")

    return ScriptedRuntime(behave)


def test_unknown_role_and_fan_out_limit_are_tool_errors(repo: Path) -> None:
    (repo / "grove.toml").write_text("[roles.planner]\nmax_children = 2\n")
    attempts: list[str] = []
    with Grove.init(repo, runtime=_refusal_runtime(attempts)) as grove:
        parent = grove.run("planner", "plan")
        children = grove.store.list_agents(parent_id=parent.id)
    assert "unknown role 'no-such-role'" in attempts[0]
    assert attempts[1:3] == ["ok", "ok"]
    assert "fan-out limit" in attempts[3]
    assert [c.status for c in children] == [AgentStatus.COMPLETED] * 2


def test_depth_limit(repo: Path) -> None:
    (repo / "grove.toml").write_text("[roles.planner]\nmax_depth = 0\n")
    attempts: list[str] = []
    with Grove.init(repo, runtime=_refusal_runtime(attempts)) as grove:
        grove.run("planner", "plan")
    assert all("depth limit" in a for a in attempts[1:])


def test_cli_parent_child_waits_for_parent_and_gets_its_output(repo: Path) -> None:
    def behave(spec: RunSpec) -> RunResult:
        if spec.role.name == "spec-writer":
            (spec.cwd / "SPEC.md").write_text("spec\n")
            return RunResult(success=True, output="SPEC.md says: greet people")
        return RunResult(success=True, output=spec.prompt)

    runtime = ScriptedRuntime(behave)
    with Grove.init(repo, runtime=runtime) as grove:
        parent = grove.spawn("spec-writer", "write it")
        child = grove.spawn("implementer", "implement it", parent_id=parent.id)
        # The child is not claimable while its parent has not completed.
        assert grove.store.claim("probe", 60, agent_id=child.id) is None
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=2).run)
        parent, child = grove.get(parent.id), grove.get(child.id)
    assert [s.role.name for s in runtime.runs] == ["spec-writer", "implementer"]
    assert child.status is AgentStatus.COMPLETED
    assert "SPEC.md says: greet people" in (child.output or "")
    assert parent.workspace is not None and child.workspace is not None
    assert child.workspace.base_ref == parent.workspace.head_commit
    assert (Path(child.workspace.worktree_path) / "SPEC.md").exists()


def test_cli_parent_that_fails_fails_its_waiting_children(repo: Path) -> None:
    runtime = ScriptedRuntime(
        lambda spec: RunResult(success=False, error="no", error_kind=ErrorKind.PERMANENT)
    )
    with Grove.init(repo, runtime=runtime) as grove:
        parent = grove.spawn("spec-writer", "fail")
        child = grove.spawn("implementer", "never runs", parent_id=parent.id)
        grandchild = grove.spawn("tester", "never runs either", parent_id=child.id)
        anyio.run(Worker(grove.service, grove.config.worker, drain=True).run)
        statuses = [grove.get(a.id) for a in (parent, child, grandchild)]
    assert [a.status for a in statuses] == [AgentStatus.FAILED] * 3
    assert [a.error_kind for a in statuses[1:]] == [ErrorKind.DEPENDENCY_FAILED] * 2
    assert len(runtime.runs) == 1


def test_cli_spawn_with_parent_records_it(repo: Path) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    parent = run_cli("spawn", "spec-writer", "write", cwd=repo).stdout.strip()
    child = run_cli("spawn", "implementer", "build", "--parent", parent[:6], cwd=repo)
    assert child.returncode == 0, child.stderr
    shown = json.loads(run_cli("show", child.stdout.strip(), "--json", cwd=repo).stdout)
    assert shown["parent_id"] == parent and shown["depth"] == 1
    parent_view = json.loads(run_cli("show", parent, "--json", cwd=repo).stdout)
    assert parent_view["children"] == [shown["id"]] and parent_view["tree"]["agents"] == 2
