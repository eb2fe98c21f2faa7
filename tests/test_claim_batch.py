"""Claiming several agents in one transaction (:meth:`Store.claim_many`, what a worker with
free slots does): never more than asked, in claim order, each agent claimed as if alone
(lease, attempt, reservation, event); a batch whose worker dies goes back to pending like any
claimed agent; budgets and admission limits stay exact inside a batch; and a worker never holds
more agents than its concurrency. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from agentgrove.admission import AdmissionGate, ModelPacer
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.settings import AdmissionSettings
from agentgrove.store import NewAgent
from agentgrove.store._core import utcnow
from agentgrove.worker import Worker

pytestmark = pytest.mark.usefixtures("database")

DEAD = "gone-host:1:x:y"  # a worker of another host: only its lease says when it is gone


def _spawn(grove: Grove, n: int, **fields: object) -> list[str]:
    """``n`` pending agents (``fields`` of :class:`NewAgent`), each capped at $0.3."""
    return [
        grove.store.insert_agent(
            NewAgent(role="tester", task=f"task {i}", model="m", max_budget_usd=0.3, **fields)  # type: ignore[arg-type]
        ).id
        for i in range(n)
    ]


def test_a_batch_takes_at_most_its_limit_in_claim_order(repo: Path) -> None:
    with Grove.init(repo) as grove:
        ids = _spawn(grove, 5)
        [urgent] = _spawn(grove, 1, priority=-1)
        first = grove.store.claim_many("w1:1:x:y", 60, 3)
        assert [a.id for a in first] == [urgent, *ids[:2]]
        second = grove.store.claim_many("w2:1:x:y", 60, 3)
        assert [a.id for a in second] == ids[2:5]
        assert grove.store.claim_many("w3:1:x:y", 60, 3) == []
        for agent in first:
            row = grove.get(agent.id)
            assert row.status is AgentStatus.EXECUTING and row.attempt == 1
            assert row.lease_owner == "w1:1:x:y" and row.lease_expires_at is not None
            assert agent.reserved_usd == row.reserved_usd > 0  # the role's cap, reserved
            kinds = [e.kind for e in grove.store.events(agent_id=agent.id)]
            assert kinds == ["agent.spawned", "agent.claimed"]


def test_concurrent_batches_never_share_an_agent(repo: Path) -> None:
    with Grove.init(repo) as grove:
        ids = set(_spawn(grove, 60))
        got: dict[str, list[str]] = {}

        def claimer(owner: str) -> None:
            mine = got.setdefault(owner, [])
            while batch := grove.store.claim_many(owner, 60, 4):
                assert len(batch) <= 4
                mine.extend(a.id for a in batch)

        threads = [threading.Thread(target=claimer, args=(f"w{i}:1:x:y",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    claimed = [i for mine in got.values() for i in mine]
    assert sorted(claimed) == sorted(ids)  # every agent once, none twice


def test_a_batch_whose_worker_died_is_swept_back_and_claimed_again(repo: Path) -> None:
    with Grove.init(repo) as grove:
        ids = _spawn(grove, 3)
        batch = grove.store.claim_many(DEAD, 5, 3)
        assert sorted(a.id for a in batch) == sorted(ids)
        # Its worker never started them (it died): nobody renews the leases.
        later = utcnow() + timedelta(seconds=6)
        assert sorted(grove.store.sweep_expired(at=later)) == sorted(ids)
        for agent_id in ids:
            row = grove.get(agent_id)
            assert row.status is AgentStatus.PENDING and row.lease_owner is None
        again = grove.store.claim_many("w2:1:x:y", 60, 3, at=later)
        assert sorted(a.id for a in again) == sorted(ids)
        assert all(a.attempt == 2 for a in again)


def test_a_tree_budget_holds_inside_one_batch(repo: Path) -> None:
    with Grove.init(repo) as grove:
        [root] = _spawn(grove, 1, budget_usd=1.0)
        assert grove.store.claim("w0:1:x:y", 60, agent_id=root) is not None
        children = _spawn(grove, 5, parent_id=root)
        batch = grove.store.claim_many("w1:1:x:y", 60, 5)
        # 0.3 for the root and 0.3 for each child claimed: the limit of 1.0 leaves room for
        # two more at their full cap, then a grant of what is left, then none.
        reserved = [a.reserved_usd for a in batch]
        assert reserved == pytest.approx([0.3, 0.3, 0.1])
        assert sum(reserved) + 0.3 <= 1.0 + 1e-9
        waiting = [grove.get(i) for i in children if i not in {a.id for a in batch}]
        assert len(waiting) == 2
        assert all(a.status is AgentStatus.PENDING and a.attempt == 0 for a in waiting)
        assert all("waiting for budget" in (a.wait_reason or "") for a in waiting)


def test_a_concurrency_limit_claims_one_at_a_time(repo: Path) -> None:
    with Grove.init(repo) as grove:
        _spawn(grove, 4)
        settings = AdmissionSettings(max_running=2)
        gate = AdmissionGate(settings, ModelPacer({}), lambda: 0.0)
        assert len(grove.store.claim_many("w1:1:x:y", 60, 4, gate=gate)) == 1
        assert len(grove.store.claim_many("w1:1:x:y", 60, 4, gate=gate)) == 1
        assert grove.store.claim_many("w1:1:x:y", 60, 4, gate=gate) == []  # 2 running


def test_a_worker_holds_no_more_agents_than_its_concurrency(repo: Path) -> None:
    seen: list[int] = []
    released = threading.Event()

    async def hold(spec: RunSpec) -> RunResult:
        # Every agent executing (one worker: all of them its own), started or not.
        seen.append(grove.store.count_by_status().get(AgentStatus.EXECUTING, 0))
        if len(seen) >= 3:
            released.set()
        while not released.is_set():  # the first three run side by side
            await anyio.sleep(0.01)
        return RunResult(success=True, output="ok")

    with Grove.init(repo, runtime=ScriptedRuntime(hold)) as grove:
        _spawn(grove, 12)
        grove.configure_worker(poll_s=0.05)
        worker = Worker(grove.service, grove.config.worker, concurrency=3, drain=True)

        async def drained() -> None:
            with anyio.fail_after(60):
                await worker.run()

        anyio.run(drained)
        rows = grove.store.list_agents()
    assert all(a.status is AgentStatus.COMPLETED for a in rows) and len(rows) == 12
    assert len(seen) == 12 and max(seen) <= 3
