"""Attacks on the group commit of endings and workspace rows (Store.finish_many,
save_workspaces, GroupCommit): each write of a batch must pass its own lease's fence, a batch
that fails leaves nothing behind, and a GroupCommit outlives the event loop it was used in."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from agentgrove.models import AgentStatus, ErrorKind, WorkspaceRecord
from agentgrove.store import RunOutcome, Store
from agentgrove.store._core import utcnow
from agentgrove.store._records import Ending, WorkspaceSave
from tests.test_store import _new, store  # noqa: F401 - the fixture, on SQLite and PostgreSQL

DONE = RunOutcome(status=AgentStatus.COMPLETED, output="second", tokens_in=5)
FAILED = RunOutcome(status=AgentStatus.FAILED, error="stale", error_kind=ErrorKind.PERMANENT)


def _reclaimed(store: Store) -> str:  # noqa: F811
    """An agent claimed by ``w`` (attempt 1), released, and claimed again (attempt 2)."""
    agent_id = _new(store)
    assert store.claim("w", 60) is not None
    assert store.release(agent_id, "w", 1, refund_attempt=False, reason="retry")
    again = store.claim("w", 60)
    assert again is not None and again.attempt == 2
    return agent_id


def _tail(text: str) -> list[tuple[int, str, dict[str, object], None, object]]:
    return [(0, "ScriptedText", {"text": text}, None, utcnow())]


def test_a_stale_ending_before_the_valid_one_of_the_same_agent_is_fenced_out(
    store: Store,  # noqa: F811
) -> None:
    agent_id = _reclaimed(store)
    made = store.finish_many(
        [
            Ending(agent_id, "w", 1, FAILED, _tail("old")),  # attempt 1: its lease is gone
            Ending(agent_id, "w", 2, DONE, _tail("new")),  # attempt 2 holds the lease
        ]
    )
    row = store.get_agent(agent_id)
    kinds = [e.kind for e in store.events(agent_id=agent_id)]
    assert made == [False, True], "each ending judged by its own lease"
    assert row.status is AgentStatus.COMPLETED and row.output == "second"
    assert "agent.failed" not in kinds
    assert [m["message"] for m in store.transcript(agent_id)] == [{"text": "new"}]


def test_a_valid_ending_before_a_stale_one_of_the_same_agent(store: Store) -> None:  # noqa: F811
    agent_id = _reclaimed(store)
    made = store.finish_many(
        [Ending(agent_id, "w", 2, DONE, _tail("new")), Ending(agent_id, "w", 1, FAILED)]
    )
    assert made == [True, False]
    assert store.get_agent(agent_id).status is AgentStatus.COMPLETED


def test_a_cancelled_agents_ending_changes_nothing_beside_valid_ones(
    store: Store,  # noqa: F811
) -> None:
    a, b = _new(store), _new(store)
    store.claim_many("w", 60, 2)
    assert store.cancel(a)
    made = store.finish_many(
        [Ending(a, "w", 1, DONE, _tail("late")), Ending(b, "w", 1, DONE, _tail("b"))]
    )
    assert made == [False, True]
    assert store.get_agent(a).status is AgentStatus.CANCELLED
    assert store.transcript(a) == []
    assert "agent.completed" not in [e.kind for e in store.events(agent_id=a)]
    assert store.get_agent(b).status is AgentStatus.COMPLETED


def test_a_batch_failing_after_its_update_rolls_back_every_ending(
    store: Store,  # noqa: F811
) -> None:
    good, bad = _new(store), _new(store)
    store.claim_many("w", 60, 2)
    poisoned = [(0, "ScriptedText", {"x": object()}, None, utcnow())]  # not JSON: fails late
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        store.finish_many(
            [Ending(good, "w", 1, DONE, _tail("g")), Ending(bad, "w", 1, DONE, poisoned)]
        )
    assert {store.get_agent(i).status for i in (good, bad)} == {AgentStatus.EXECUTING}
    assert store.transcript(good) == []
    assert [e.kind for e in store.events(agent_id=good)] == ["agent.spawned", "agent.claimed"]
    assert store.finish_many([Ending(good, "w", 1, DONE, _tail("g"))]) == [True]


def test_a_stale_workspace_row_before_the_valid_one_of_the_same_agent(
    store: Store,  # noqa: F811
) -> None:
    agent_id = _reclaimed(store)
    old = WorkspaceRecord(agent_id, "/repo", "/repo/a", "grove/a", "abc", state="active")
    new = WorkspaceRecord(agent_id, "/repo", "/repo/a", "grove/a", "def", state="active")
    written = store.save_workspaces([WorkspaceSave(old, ("w", 1)), WorkspaceSave(new, ("w", 2))])
    assert written == [False, True]
    assert store.get_agent(agent_id).workspace == new


def test_a_group_commit_serves_one_event_loop_after_another() -> None:
    from agentgrove.group_commit import GroupCommit

    async def flush(items: Sequence[int]) -> list[int]:
        await anyio.sleep(0)
        return [i + 1 for i in items]

    commit: GroupCommit[int, int] = GroupCommit(flush)

    async def many() -> list[int]:
        out: dict[int, int] = {}

        async def one(i: int) -> None:
            out[i] = await commit.submit(i)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, i)
        return [out[i] for i in range(5)]

    for _ in range(3):  # as Grove.run does: a new anyio.run each time, one service
        assert anyio.run(many) == [1, 2, 3, 4, 5]
