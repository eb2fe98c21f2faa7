"""The workflow engine on the scripted runtime, in real git repositories."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from sqlalchemy import update

from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind, RunRecord, RunStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.store._core import utcnow
from agentgrove.store._schema import agents
from agentgrove.worker import Worker
from tests.conftest import git

CHAIN = """
name: dit
inputs: [feature]
nodes:
  - key: design
    role: spec-writer
    task: "Design {{ inputs.feature }}"
  - key: implement
    role: implementer
    depends_on: [design]
    task: "Implement. Design said: {{ design.output }}"
  - key: test
    role: tester
    depends_on: [implement]
    task: "Test {{ implement.files_changed | join(',') }} on {{ implement.branch }}"
"""

DIAMOND = """
name: diamond
nodes:
  - {key: a, role: planner, task: "plan"}
  - {key: b, role: implementer, task: "left", depends_on: [a]}
  - {key: c, role: implementer, task: "right", depends_on: [a]}
  - {key: d, role: tester, task: "join {{ b.output }} {{ c.output }}", depends_on: [b, c]}
"""


def writes_its_node(spec: RunSpec) -> RunResult:
    """Each agent writes <first word of its task>.txt and reports its prompt."""
    name = spec.prompt.split()[0].lower()
    (spec.cwd / f"{name}.txt").write_text(spec.prompt + "\n")
    return RunResult(success=True, output=f"{name} done", tokens_in=3, tokens_out=1, cost_usd=0.001)


def test_chain_runs_in_order_with_templates_and_branches(repo: Path) -> None:
    runtime = ScriptedRuntime(writes_its_node)
    with Grove.init(repo, runtime=runtime) as grove:
        run = grove.run_workflow(CHAIN, {"feature": "greeting"})
    assert run.status is RunStatus.COMPLETED
    assert [s.prompt.split()[0] for s in runtime.runs] == ["Design", "Implement.", "Test"]
    assert runtime.runs[0].prompt == "Design greeting"
    assert runtime.runs[1].prompt == "Implement. Design said: design done"
    nodes = {n.key: n for n in run.nodes}
    impl_ws = nodes["implement"].agent.workspace  # type: ignore[union-attr]
    assert runtime.runs[2].prompt == f"Test implement..txt on {impl_ws.branch}"  # type: ignore[union-attr]
    # Each node starts from its dependency's result; the last branch holds all three commits.
    test_ws = nodes["test"].agent.workspace  # type: ignore[union-attr]
    assert test_ws.base_ref == impl_ws.head_commit  # type: ignore[union-attr]
    log = git(repo, "log", "--format=%s", test_ws.branch)  # type: ignore[union-attr]
    assert [line.split(":")[0] for line in log.splitlines()[:3]] == [
        "tester",
        "implementer",
        "spec-writer",
    ]
    assert run.to_json()["cost_usd"] == pytest.approx(0.003)


def test_diamond_merges_both_branches(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_its_node)) as grove:
        run = grove.run_workflow(DIAMOND)
    assert run.status is RunStatus.COMPLETED, [(n.key, n.state) for n in run.nodes]
    d = next(n for n in run.nodes if n.key == "d").agent
    assert d is not None and d.workspace is not None
    tree = Path(d.workspace.worktree_path)
    assert (tree / "left.txt").exists() and (tree / "right.txt").exists()
    assert d.task == "join left done right done"


def test_merge_conflict_fails_the_node_naming_the_path(repo: Path) -> None:
    def same_file(spec: RunSpec) -> RunResult:
        (spec.cwd / "shared.txt").write_text(spec.prompt + "\n")
        return RunResult(success=True, output="ok")

    with Grove.init(repo, runtime=ScriptedRuntime(same_file)) as grove:
        run = grove.run_workflow(DIAMOND)
    d = next(n for n in run.nodes if n.key == "d").agent
    assert run.status is RunStatus.FAILED
    assert d is not None and d.error_kind is ErrorKind.PERMANENT
    assert "conflicts in: shared.txt" in (d.error or "")


def test_failed_node_fails_the_run_and_its_dependents(repo: Path) -> None:
    def fail_left(spec: RunSpec) -> RunResult:
        if spec.prompt == "left":
            return RunResult(success=False, error="broken", error_kind=ErrorKind.PERMANENT)
        return RunResult(success=True, output="ok")

    with Grove.init(repo, runtime=ScriptedRuntime(fail_left)) as grove:
        run = grove.run_workflow(DIAMOND)
    states = {n.key: n.state for n in run.nodes}
    assert run.status is RunStatus.FAILED
    assert states == {"a": "completed", "b": "failed", "c": "completed", "d": "dependency_failed"}
    assert "b" in (run.error or "")


def test_rerun_from_a_node_keeps_upstream_results(repo: Path) -> None:
    runtime = ScriptedRuntime(writes_its_node)
    with Grove.init(repo, runtime=runtime) as grove:
        first = grove.run_workflow(CHAIN, {"feature": "x"})
        before = {n.key: n.agent.id for n in first.nodes if n.agent}
        again = grove.workflows.rerun(first.id, "implement")
        second = anyio.run(grove.execute_run_async, first.id)
    after = {n.key: n.agent.id for n in second.nodes if n.agent}
    assert again == ["implement", "test"]
    assert second.status is RunStatus.COMPLETED
    assert after["design"] == before["design"]
    assert after["implement"] != before["implement"] and after["test"] != before["test"]
    assert [s.prompt.split()[0] for s in runtime.runs][3:] == ["Implement.", "Test"]


def test_a_rerun_runs_cost_is_what_its_budget_counts(repo: Path) -> None:
    # After a rerun, `workflow ls`/`show`/--json and `grove budget` name one figure: what
    # every agent of the run spent, the superseded nodes' agents included.
    with Grove.init(repo, runtime=ScriptedRuntime(writes_its_node)) as grove:
        first = grove.run_workflow(CHAIN, {"feature": "x"}, budget_usd=10.0)
        grove.workflows.rerun(first.id, "implement")
        second = anyio.run(grove.execute_run_async, first.id)
        report = {name: spent for name, _, _, spent in grove.store.budget_report(utcnow())}
        listed = {r.id: r for r in grove.store.list_runs()}[first.id]
    spent = report[f"run {first.id}"]
    current = sum(n.agent.cost_usd for n in second.nodes if n.agent)
    assert spent > current  # the superseded implement and test agents cost something
    assert second.to_json()["cost_usd"] == pytest.approx(spent)
    assert listed.cost_usd == pytest.approx(spent)


def test_worker_start_up_reconciles_a_run_whose_continuation_was_lost(repo: Path) -> None:
    runtime = ScriptedRuntime(writes_its_node)
    with Grove.init(repo, runtime=runtime) as grove:
        run = grove.start_workflow(CHAIN, {"feature": "x"})
        [design] = [n.agent for n in run.nodes if n.agent]
        assert design is not None
        # Simulate a completion written without its continuation (as an older grove might).
        with grove.store.engine.begin() as conn:
            conn.execute(
                update(agents)
                .where(agents.c.id == design.id)
                .values(status="completed", output="by hand")
            )
        assert [n.state for n in grove.store.get_run(run.id).nodes] == [
            "completed",
            "waiting",
            "waiting",
        ]
        final = anyio.run(grove.execute_run_async, run.id)
    assert final.status is RunStatus.COMPLETED
    assert [s.prompt.split()[0] for s in runtime.runs] == ["Implement.", "Test"]
    assert runtime.runs[0].prompt.endswith("by hand")


def test_cancel_run_stops_pending_nodes(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_its_node)) as grove:
        run = grove.start_workflow(CHAIN, {"feature": "x"})
        grove.workflows.cancel(run.id)
        record = grove.store.get_run(run.id)
        anyio.run(Worker(grove.service, grove.config.worker, drain=True).run)
    assert record.status is RunStatus.CANCELLED
    # The nodes it never started are cancelled with it, not left "waiting" forever.
    assert [n.state for n in record.nodes] == ["cancelled", "cancelled", "cancelled"]
    assert grove.store.count_by_status().get(AgentStatus.PENDING, 0) == 0


@pytest.mark.parametrize(
    "source, inputs, message",
    [
        (CHAIN, {}, "missing required input 'feature'"),
        (CHAIN, {"feature": "x", "colour": "red"}, "unknown input 'colour'"),
        (CHAIN.replace("role: tester", "role: poet"), {"feature": "x"}, "unknown role 'poet'"),
        (
            CHAIN.replace("depends_on: [implement]", "depends_on: [deploy]"),
            {"feature": "x"},
            "unknown node 'deploy'",
        ),
        (
            CHAIN.replace("key: design", "key: design\n    depends_on: [test]"),
            {"feature": "x"},
            "cycle",
        ),
        (CHAIN.replace("key: test", "key: design"), {"feature": "x"}, "duplicate"),
        (
            CHAIN.replace("{{ design.output }}", "{{ design.colour }}"),
            {"feature": "x"},
            "design.colour",
        ),
    ],
)
def test_bad_workflows_write_nothing(
    repo: Path, source: str, inputs: dict[str, str], message: str
) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        with pytest.raises(BadInput, match=message) as info:
            grove.start_workflow(source, inputs)
        assert "\n" not in str(info.value)
        assert grove.store.list_runs() == [] and grove.store.list_agents() == []


@pytest.mark.usefixtures("database")
def test_runs_survive_the_migrations_down_and_up(repo: Path) -> None:
    # Migration 0004 moved each run's spec out of workflow_runs; rows that agents and nodes
    # reference must survive it both ways (SQLite's batch rebuild would have failed here).
    from agentgrove.store._migrate import downgrade, upgrade

    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.run_workflow(DIAMOND)
        before = grove.workflows.get(run.id)
        downgrade(grove.store.engine, "0003")
        upgrade(grove.store.engine)
    with Grove.open(repo) as grove:  # a new process's view: nothing cached
        after = grove.workflows.get(run.id)
        rerun = grove.workflows.rerun(run.id, "b")
    assert before.status is RunStatus.COMPLETED and after == _without_hosts(before)
    assert rerun  # the spec read back from its new table drives a rerun


def _without_hosts(run: RunRecord) -> RunRecord:
    """``run`` as it reads after a downgrade past 0007, which drops ``agents.host``: the
    one thing such a round trip loses, by design (the column goes)."""
    nodes = tuple(
        replace(n, agent=replace(n.agent, host=None) if n.agent else None) for n in run.nodes
    )
    return replace(run, nodes=nodes)
