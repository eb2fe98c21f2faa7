"""Budgets: reservations at claim time keep spend under every limit, whatever the concurrency."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgrove.budgets import MIN_GRANT_USD, Scope, grant, usd
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker
from tests.conftest import GROVE, run_cli


async def spend_everything(spec: RunSpec) -> RunResult:
    """A greedy agent: spends exactly the cap it was given (the SDK's max_budget_usd)."""
    await anyio.sleep(0.05)  # overlap with the other agents
    return RunResult(success=True, output="spent", cost_usd=spec.max_budget_usd)


def _drain(grove: Grove, concurrency: int) -> None:
    anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=concurrency).run)


@given(
    cap=st.floats(min_value=0.01, max_value=10),
    scopes=st.lists(
        st.tuples(st.floats(min_value=0.01, max_value=10), st.floats(min_value=0, max_value=12)),
        max_size=3,
    ),
)
def test_a_grant_never_exceeds_the_cap_or_any_scope(
    cap: float, scopes: list[tuple[float, float]]
) -> None:
    limits = [Scope(f"s{i}", lim, used) for i, (lim, used) in enumerate(scopes)]
    decision = grant(cap, limits)
    if decision.granted:
        assert MIN_GRANT_USD <= decision.amount_usd <= cap + 1e-9
        assert all(decision.amount_usd <= s.left_usd + 1e-6 for s in limits)
    else:
        assert decision.amount_usd == 0 and "waiting for budget" in (decision.refusal or "")


def test_daily_limit_holds_under_concurrency_and_excess_agents_fail(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        '[budget]\ndaily_usd = 1.0\non_exhausted = "fail"\n[roles.tester]\nmax_budget_usd = 0.4\n'
    )
    with Grove.init(repo, runtime=ScriptedRuntime(spend_everything)) as grove:
        ids = [grove.spawn("tester", f"spend {i}").id for i in range(6)]
        _drain(grove, concurrency=6)
        agents = [grove.get(i) for i in ids]
    spent = sum(a.cost_usd for a in agents)
    assert spent == pytest.approx(1.0)
    assert sorted(round(a.cost_usd, 6) for a in agents if a.cost_usd) == [0.2, 0.4, 0.4]
    refused = [a for a in agents if a.status is AgentStatus.FAILED]
    assert len(refused) == 3
    assert all(a.error_kind is ErrorKind.BUDGET_EXCEEDED for a in refused)
    assert all(a.reserved_usd == 0 for a in agents)


@pytest.mark.usefixtures("database")
def test_daily_limit_holds_across_worker_processes(repo: Path) -> None:
    # Four worker processes race to claim twelve greedy agents (each spends its whole grant):
    # the reservations, serialised in the database, admit exactly $1.00 of spend.
    (repo / "grove.toml").write_text(
        '[budget]\ndaily_usd = 1.0\non_exhausted = "fail"\n'
        "[roles.tester]\nmax_budget_usd = 0.4\n"
        '[runtime]\nkind = "scripted"\nscripted_delay_s = 0.3\nscripted_cost_usd = "grant"\n'
        "[worker]\npoll_s = 0.05\n"
    )
    with Grove.init(repo) as grove:
        ids = [grove.spawn("tester", f"spend {i}").id for i in range(12)]
    workers = [
        subprocess.Popen(
            [*GROVE, "worker", "--drain", "--concurrency", "3"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    with Grove.open(repo) as grove:
        agents = [grove.get(i) for i in ids]
    assert sum(a.cost_usd for a in agents) == pytest.approx(1.0)
    assert sorted(round(a.cost_usd, 6) for a in agents if a.cost_usd) == [0.2, 0.4, 0.4]
    refused = [a for a in agents if a.status is AgentStatus.FAILED]
    assert len(refused) == 9
    assert all(a.error_kind is ErrorKind.BUDGET_EXCEEDED for a in refused)


def test_tree_budget_covers_children_and_waiting_is_shown(repo: Path) -> None:
    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.3\n")

    async def parent_and_children(spec: RunSpec) -> RunResult:
        if spec.agent_id == root_id[0]:
            assert spec.delegate is not None
            for i in range(3):
                await spec.delegate.spawn_agent("tester", f"child {i}")
        return RunResult(success=True, output="spent", cost_usd=spec.max_budget_usd)

    root_id: list[str] = []
    with Grove.init(repo, runtime=ScriptedRuntime(parent_and_children)) as grove:
        root = grove.spawn("tester", "root", budget_usd=0.5)
        root_id.append(root.id)
        grove.configure_worker(poll_s=0.05)

        async def until_settled() -> None:
            worker = Worker(grove.service, grove.config.worker, concurrency=4)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                with anyio.fail_after(30):
                    while True:
                        tree = grove.store.tree(root.id)
                        if len(tree) == 4 and all(a.status.finished or a.wait_reason for a in tree):
                            break
                        await anyio.sleep(0.02)
                worker.request_stop()

        anyio.run(until_settled)
        tree = grove.store.tree(root.id)
        listing = run_cli("ls", cwd=repo, env={"COLUMNS": "250"}).stdout
        report = json.loads(run_cli("budget", "--json", cwd=repo).stdout)
    spent = sum(a.cost_usd for a in tree)
    assert spent == pytest.approx(0.5)
    waiting = [a for a in tree if a.status is AgentStatus.PENDING]
    assert waiting and all("waiting for budget: tree" in (a.wait_reason or "") for a in waiting)
    assert "waiting for budget" in listing
    [scope] = report
    assert scope["scope"] == f"tree {root.id}" and scope["limit_usd"] == 0.5
    assert scope["spent_usd"] == pytest.approx(0.5) and scope["reserved_usd"] == 0


def test_run_budget_fails_nodes_that_do_not_fit(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        '[budget]\non_exhausted = "fail"\n[roles.tester]\nmax_budget_usd = 0.3\n'
    )
    chain = {
        "name": "c",
        "nodes": [
            {"key": "a", "role": "tester", "task": "a"},
            {"key": "b", "role": "tester", "task": "b", "depends_on": ["a"]},
            {"key": "c", "role": "tester", "task": "c", "depends_on": ["b"]},
        ],
    }
    with Grove.init(repo, runtime=ScriptedRuntime(spend_everything)) as grove:
        run = grove.start_workflow(chain, budget_usd=0.5)
        final = anyio.run(grove.execute_run_async, run.id)
    states = [n.state for n in final.nodes]
    assert final.status.value == "failed"
    assert states == ["completed", "completed", "failed"]
    assert sum(n.agent.cost_usd for n in final.nodes if n.agent) == pytest.approx(0.5)


def test_a_reservation_whose_cost_is_unknown_counts_as_spent(repo: Path) -> None:
    # A swept attempt (its worker presumed dead) or a cancelled one may have spent all it was
    # given, and nobody will report what it really spent: the reservation is kept as spent.
    from datetime import timedelta

    from agentgrove.store._core import utcnow

    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.4\n")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "vanishes twice", budget_usd=1.0)
        first = grove.store.claim("worker-a", 30, agent_id=agent.id)
        assert first is not None and first.reserved_usd == pytest.approx(0.4)
        assert grove.store.sweep_expired(at=utcnow() + timedelta(seconds=60)) == [agent.id]
        swept = grove.get(agent.id)
        second = grove.store.claim("worker-b", 30, agent_id=agent.id)
        assert second is not None and second.reserved_usd == pytest.approx(0.4)
        grove.service.cancel(agent.id)
        cancelled = grove.get(agent.id)
        report = {
            name: (limit, reserved, spent)
            for name, limit, reserved, spent in grove.store.budget_report(utcnow())
        }
    assert swept.status is AgentStatus.PENDING
    assert swept.cost_usd == pytest.approx(0.4) and swept.reserved_usd == 0
    assert cancelled.status is AgentStatus.CANCELLED
    assert cancelled.cost_usd == pytest.approx(0.8) and cancelled.reserved_usd == 0
    assert report[f"tree {agent.id}"] == pytest.approx((1.0, 0.0, 0.8))


def test_an_attempt_cut_short_by_shutdown_keeps_its_reservation_as_spent(repo: Path) -> None:
    # Shut down past the grace period, the attempt goes back to pending (the attempt refunded)
    # but whatever it spent before it was stopped is unknown: the reservation stays spent.
    started = []

    async def hang(spec: RunSpec) -> RunResult:
        started.append(spec.agent_id)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    (repo / "grove.toml").write_text(
        "[roles.tester]\nmax_budget_usd = 0.4\n[worker]\ngrace_s = 0\n"
    )
    with Grove.init(repo, runtime=ScriptedRuntime(hang)) as grove:
        agent = grove.spawn("tester", "stopped mid-run", budget_usd=1.0)

        async def main() -> None:
            worker = Worker(grove.service, grove.config.worker)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                with anyio.fail_after(30):
                    while not started:
                        await anyio.sleep(0.01)
                worker.request_stop()

        anyio.run(main)
        released = grove.get(agent.id)
    assert released.status is AgentStatus.PENDING and released.attempt == 0
    assert released.cost_usd == pytest.approx(0.4) and released.reserved_usd == 0


def test_a_retry_after_midnight_counts_against_the_new_day(repo: Path) -> None:
    # The agent was first claimed yesterday; its attempt today must still count today, while
    # it runs (its reservation) and once it has ended (its spend).
    from datetime import timedelta

    from sqlalchemy import update

    from agentgrove.store._core import utcnow
    from agentgrove.store._schema import agents

    (repo / "grove.toml").write_text(
        "[budget]\ndaily_usd = 1.0\n[roles.tester]\nmax_budget_usd = 0.4\n"
    )
    with Grove.init(repo, runtime=ScriptedRuntime(spend_everything)) as grove:
        agent = grove.spawn("tester", "retried after midnight")
        claimed = grove.store.claim("w", 60, agent_id=agent.id)
        assert claimed is not None and claimed.reserved_usd == pytest.approx(0.4)
        yesterday = utcnow() - timedelta(days=1)
        with grove.store.engine.begin() as conn:
            conn.execute(update(agents).where(agents.c.id == agent.id).values(started_at=yesterday))
        report = {row[0]: row[1:] for row in grove.store.budget_report(utcnow())}
        assert report["daily"] == pytest.approx((1.0, 0.4, 0.0))  # limit, reserved, spent
        grove.service.cancel(agent.id)  # its reservation now counts as spent, today
        report = {row[0]: row[1:] for row in grove.store.budget_report(utcnow())}
    assert report["daily"] == pytest.approx((1.0, 0.0, 0.4))


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(0.005, "$0.005"), (1.0, "$1.00"), (3.0003, "$3.0003"), (0.0, "$0.00"), (12.5, "$12.50")],
)
def test_amounts_are_shown_to_the_micro_dollar_never_rounded_to_cents(
    amount: float, shown: str
) -> None:
    assert usd(amount) == shown


def test_a_refusal_names_a_sub_cent_limit_as_it_is() -> None:
    refusal = grant(1.0, [Scope("daily", 0.005, 0.0)]).refusal
    assert refusal == "waiting for budget: daily limit $0.005 ($0.00 spent or reserved)"


def test_a_budget_wait_is_logged_when_it_begins_not_at_every_retry(repo: Path) -> None:
    """Each retry of a claim refused for budget (~5 s apart) must not add an event: one
    ``agent.waiting_for_budget`` per wait, and a new one only when the reason changes."""
    (repo / "grove.toml").write_text("[budget]\ndaily_usd = 0.005\n")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "wait")
        at = datetime.now(UTC)
        for retry in range(5):  # each retry past the last one's not_before
            assert grove.store.claim("w", 30, at=at + timedelta(seconds=10 * retry)) is None
        waits = [e for e in grove.store.events(agent_id=agent.id) if e.kind.endswith("budget")]
        record = grove.store.get_agent(agent.id)
    assert record.wait_reason and record.wait_reason.startswith("waiting for budget: daily")
    assert len(waits) == 1, waits
    assert waits[0].data["reason"] == record.wait_reason


def test_a_cancelled_agent_shows_no_wait_reason(repo: Path) -> None:
    (repo / "grove.toml").write_text("[budget]\ndaily_usd = 0.005\n")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "wait")
        assert grove.store.claim("w", 30) is None
        assert (grove.store.get_agent(agent.id).wait_reason or "").startswith("waiting")
        assert grove.store.cancel(agent.id)
    shown = json.loads(run_cli("show", agent.id, "--json", cwd=repo).stdout)
    listed = run_cli("ls", cwd=repo).stdout
    assert shown["status"] == "cancelled" and shown["wait_reason"] is None
    assert "waiting" not in listed, listed
