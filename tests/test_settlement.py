"""Every way an attempt ends settles its reservation: nothing stays reserved once nothing runs.

A reservation left behind by an ended attempt would shrink every limit it counts against
(the day, its tree, its run) for good. Each test ends agents one way, in each state they can be
in (pending, executing, an executing parent waiting for its children), and then checks the
invariant on the rows and on the budget report (``grove budget``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, select

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind, SpawnRequest
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.store._core import utcnow
from agentgrove.store._schema import agents
from agentgrove.worker import Worker
from tests.conftest import run_cli

CAP = 0.25
CONFIG = (
    "[budget]\ndaily_usd = 100.0\n"
    f"[roles.tester]\nmax_budget_usd = {CAP}\nmax_attempts = 2\ntimeout_s = 600\n"
    "[worker]\ngrace_s = 0\nretry_base_s = 0\npoll_s = 0.05\nheartbeat_s = 0.1\n"
)
ONE_NODE = {"name": "one", "nodes": [{"key": "a", "role": "tester", "task": "node a"}]}


def assert_settled(grove: Grove) -> None:
    """Nothing executing holds no reservation, and the report shows none reserved."""
    with grove.store.engine.connect() as conn:
        held = conn.execute(
            select(func.coalesce(func.sum(agents.c.reserved_usd), 0.0)).where(
                agents.c.status != AgentStatus.EXECUTING.value
            )
        ).scalar_one()
        running = conn.execute(
            select(func.count()).where(agents.c.status == AgentStatus.EXECUTING.value)
        ).scalar_one()
    assert held == 0, "an ended or queued agent still holds a reservation"
    assert running == 0
    for name, _limit, reserved, _spent in grove.store.budget_report(utcnow()):
        assert reserved == 0, f"{name} still shows ${reserved} reserved with nothing running"


def _subject(grove: Grove, state: str) -> tuple[str, str, list[str]]:
    """A one-node workflow run whose node is in ``state``; (run id, node agent id, all ids
    claimed). "waiting": the node is executing, waiting for a child that is executing too."""
    run = grove.start_workflow(ONE_NODE)
    node = grove.store.get_run(run.id).nodes[0].agent
    assert node is not None
    if state == "pending":
        return run.id, node.id, []
    claimed = grove.store.claim("worker-a", 600, agent_id=node.id)
    assert claimed is not None and claimed.reserved_usd == pytest.approx(CAP)
    if state == "executing":
        return run.id, node.id, [node.id]
    child = grove.service.spawn(SpawnRequest("tester", "child work", parent_id=node.id))
    child_claim = grove.store.claim("worker-a", 600, agent_id=child.id)
    assert child_claim is not None and child_claim.reserved_usd == pytest.approx(CAP)
    assert grove.store.mark_waiting_for_children(node.id, "worker-a", claimed.attempt, True)
    return run.id, node.id, [node.id, child.id]


def _end_by(grove: Grove, how: str, run_id: str, node_id: str) -> None:
    later = utcnow() + timedelta(seconds=3600)
    if how == "agent cancel":
        for agent in grove.store.list_agents():
            grove.store.cancel(agent.id)
    elif how == "tree cancel":
        grove.service.cancel(node_id, tree=True)
    elif how == "workflow cancel":
        grove.workflows.cancel(run_id)
    elif how == "sweep, last attempt":
        _use_up_attempts(grove)
        grove.store.sweep_expired(at=later)
    elif how == "sweep, not last":
        grove.store.sweep_expired(at=later)
        # Back to pending with nothing reserved; end them so that nothing is left to run.
        for agent in grove.store.list_agents(status=AgentStatus.PENDING):
            grove.store.cancel(agent.id)
    else:
        raise AssertionError(how)


def _use_up_attempts(grove: Grove) -> None:
    from sqlalchemy import update

    with grove.store.engine.begin() as conn:
        conn.execute(update(agents).values(max_attempts=agents.c.attempt))


@pytest.mark.parametrize("state", ["pending", "executing", "waiting"])
@pytest.mark.parametrize(
    "how",
    ["agent cancel", "tree cancel", "workflow cancel", "sweep, last attempt", "sweep, not last"],
)
def test_ending_an_agent_in_any_state_leaves_nothing_reserved(
    repo: Path, state: str, how: str
) -> None:
    (repo / "grove.toml").write_text(CONFIG)
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run_id, node_id, claimed = _subject(grove, state)
        _end_by(grove, how, run_id, node_id)
        if how.startswith("sweep, last") and state == "pending":
            grove.store.cancel(node_id)  # a pending agent is never swept: end it another way
        assert_settled(grove)
        # What a cut-short attempt may have spent is unknown: its reservation counts as spent.
        spent = sum(a.cost_usd for a in grove.store.list_agents())
        assert spent == pytest.approx(CAP * len(claimed))
        assert grove.store.get_run(run_id).status.finished


def test_workflow_cancel_of_a_running_node_frees_the_daily_reservation(repo: Path) -> None:
    # The report from the field: `grove workflow cancel` left the node's $0.25 reserved for
    # good, and `grove budget` kept showing it with nothing running.
    (repo / "grove.toml").write_text(CONFIG)
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run_id, _node, _ = _subject(grove, "executing")
    assert run_cli("workflow", "cancel", run_id, cwd=repo).returncode == 0
    shown = run_cli("budget", "--json", cwd=repo)
    assert shown.returncode == 0, shown.stderr
    daily = next(s for s in json.loads(shown.stdout) if s["scope"] == "daily")
    assert daily["reserved_usd"] == 0
    assert daily["spent_usd"] == pytest.approx(CAP)


# -- attempts that run on a worker -------------------------------------------------------


async def _hang(spec: RunSpec) -> RunResult:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def _behaviours() -> dict[str, Callable[[RunSpec], object]]:
    attempts: dict[str, int] = {}

    def fails(spec: RunSpec) -> RunResult:
        return RunResult(success=False, error="no", error_kind=ErrorKind.PERMANENT, cost_usd=0.05)

    def retried_then_done(spec: RunSpec) -> RunResult:
        attempts[spec.agent_id] = attempts.get(spec.agent_id, 0) + 1
        if attempts[spec.agent_id] == 1:
            return RunResult(
                success=False, error="flaky", error_kind=ErrorKind.MODEL_ERROR, cost_usd=0.05
            )
        return RunResult(success=True, output="ok", cost_usd=0.05)

    def retried_then_failed(spec: RunSpec) -> RunResult:
        return RunResult(
            success=False, error="flaky", error_kind=ErrorKind.MODEL_ERROR, cost_usd=0.05
        )

    def raises(spec: RunSpec) -> RunResult:
        raise RuntimeError("the runtime broke")

    return {
        "completes": lambda spec: RunResult(success=True, output="ok", cost_usd=0.05),
        "fails": fails,
        "retried, then completes": retried_then_done,
        "retried, then fails": retried_then_failed,
        "runtime raises": raises,
    }


@pytest.mark.parametrize(
    "behaviour",
    ["completes", "fails", "retried, then completes", "retried, then fails", "runtime raises"],
)
def test_attempts_run_to_their_end_leave_nothing_reserved(repo: Path, behaviour: str) -> None:
    (repo / "grove.toml").write_text(CONFIG)
    runtime = ScriptedRuntime(_behaviours()[behaviour])  # type: ignore[arg-type]
    with Grove.init(repo, runtime=runtime) as grove:
        ids = [grove.spawn("tester", f"task {i}").id for i in range(3)]
        run = grove.start_workflow(ONE_NODE)
        worker = Worker(grove.service, grove.config.worker, drain=True, concurrency=4)
        anyio.run(worker.run)
        ended = [grove.get(i) for i in ids]
        assert all(a.status.finished for a in ended)
        assert grove.store.get_run(run.id).status.finished
        assert_settled(grove)
        if behaviour != "runtime raises":
            assert all(a.cost_usd == pytest.approx(0.05 * a.attempt) for a in ended)


def test_a_timed_out_attempt_leaves_nothing_reserved(repo: Path) -> None:
    (repo / "grove.toml").write_text(CONFIG.replace("timeout_s = 600", "timeout_s = 0.2"))
    with Grove.init(repo, runtime=ScriptedRuntime(_hang)) as grove:
        agent = grove.spawn("tester", "never answers")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True).run)
        ended = grove.get(agent.id)
        assert ended.status is AgentStatus.FAILED and ended.error_kind is ErrorKind.TIMEOUT
        assert_settled(grove)


def _run_until(grove: Grove, started: Callable[[], bool], stop: Callable[[Worker], None]) -> None:
    async def main() -> None:
        worker = Worker(grove.service, grove.config.worker, concurrency=4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(60):
                while not started():
                    await anyio.sleep(0.01)
            stop(worker)
            if not worker._stopping.is_set():
                tg.cancel_scope.cancel()

    anyio.run(main)


def _parent_waiting(grove: Grove) -> Callable[[], bool]:
    """True once some executing agent waits for its children, and they run."""

    def ready() -> bool:
        rows = grove.store.list_agents(status=AgentStatus.EXECUTING)
        return len(rows) >= 3 and any(r.wait_reason for r in rows)

    return ready


async def _delegating(spec: RunSpec) -> RunResult:
    """A parent delegates one child and waits for it; children hang."""
    if spec.prompt.startswith("parent"):
        assert spec.delegate is not None
        child = await spec.delegate.spawn_agent("tester", "child: hangs")
        await spec.delegate.wait_agents([child], 600)
        return RunResult(success=True, output="done")
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("stop", ["worker stop past grace", "interrupted in-process run"])
def test_shutting_down_leaves_nothing_reserved(repo: Path, stop: str) -> None:
    (repo / "grove.toml").write_text(CONFIG)
    with Grove.init(repo, runtime=ScriptedRuntime(_delegating)) as grove:
        grove.spawn("tester", "parent: delegates")
        grove.spawn("tester", "plain: hangs")
        grove.spawn("tester", "queued: hangs")  # may still be pending
        _run_until(
            grove,
            _parent_waiting(grove),
            (lambda w: w.request_stop()) if stop.startswith("worker") else (lambda w: None),
        )
        for agent in grove.store.list_agents():
            assert agent.status is AgentStatus.PENDING, agent
        assert_settled(grove)
