"""Group commit (agentgrove.group_commit): concurrent callers' items made together, each caller
told its own outcome, whatever cancels whom."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from agentgrove.group_commit import GroupCommit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flusher:
    """A flush whose calls are recorded and which, while ``gate`` is set, waits for it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = anyio.Event()
        self.gate: anyio.Event | None = None
        self.next_gate: anyio.Event | None = None
        self.bad: set[int] = set()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        if self.gate is not None:
            gate, self.gate, self.next_gate = self.gate, self.next_gate, None
            await gate.wait()
        if self.bad & set(items):
            raise ValueError(f"bad {sorted(self.bad & set(items))}")
        return [i * 10 for i in items]


async def _settle() -> None:
    """Let every ready task run until it blocks (no wall-clock wait)."""
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


async def test_a_lone_caller_is_made_at_once_in_a_batch_of_its_own() -> None:
    flush = Flusher()
    commit = GroupCommit(flush)
    assert await commit.submit(7) == 70
    assert flush.batches == [[7]]


async def test_items_queued_during_a_flush_go_together_in_the_next() -> None:
    flush = Flusher()
    flush.gate = gate = anyio.Event()
    commit = GroupCommit(flush)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await commit.submit(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()  # 1 is being made; 2, 3, 4 queue meanwhile
        for i in (2, 3, 4):
            tg.start_soon(submit, i)
        await _settle()
        gate.set()
    assert flush.batches == [[1], [2, 3, 4]]
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    assert (commit.batches, commit.items) == (2, 4)


async def test_one_bad_item_fails_only_its_own_caller() -> None:
    flush = Flusher()
    flush.gate = gate = anyio.Event()
    flush.bad = {3}
    commit = GroupCommit(flush)
    outcomes: dict[int, object] = {}

    async def submit(i: int) -> None:
        try:
            outcomes[i] = await commit.submit(i)
        except ValueError as exc:
            outcomes[i] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()
        for i in (2, 3, 4):
            tg.start_soon(submit, i)
        await _settle()
        gate.set()
    assert outcomes == {1: 10, 2: 20, 3: "bad [3]", 4: 40}
    assert flush.batches == [[1], [2, 3, 4], [2], [3], [4]]


async def test_an_error_not_isolated_reaches_every_caller_of_the_batch() -> None:
    flush = Flusher()
    flush.gate = gate = anyio.Event()
    flush.bad = {3}
    commit = GroupCommit(flush, isolate=lambda exc: False)
    outcomes: dict[int, object] = {}

    async def submit(i: int) -> None:
        try:
            outcomes[i] = await commit.submit(i)
        except ValueError as exc:
            outcomes[i] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()
        for i in (2, 3):
            tg.start_soon(submit, i)
        await _settle()
        gate.set()
    assert outcomes == {1: 10, 2: "bad [3]", 3: "bad [3]"}
    assert flush.batches == [[1], [2, 3]]


async def test_a_caller_cancelled_while_queued_takes_its_item_back() -> None:
    flush = Flusher()
    flush.gate = gate = anyio.Event()
    commit = GroupCommit(flush)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await commit.submit(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()
        with anyio.CancelScope() as doomed:
            doomed.cancel()  # cancelled at its first wait: while queued
            await commit.submit(2)
        tg.start_soon(submit, 3)
        await _settle()
        gate.set()
    assert flush.batches == [[1], [3]], "2 was never made"
    assert results == {1: 10, 3: 30}


async def test_a_leader_cancelled_mid_flush_still_tells_the_others_of_its_batch() -> None:
    flush = Flusher()
    flush.gate = first = anyio.Event()
    flush.next_gate = second = anyio.Event()
    commit = GroupCommit(flush)
    results: dict[int, int] = {}
    leader_scope = anyio.CancelScope()

    async def lead(i: int) -> None:
        with leader_scope:
            results[i] = await commit.submit(i)

    async def submit(i: int) -> None:
        results[i] = await commit.submit(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()
        tg.start_soon(lead, 2)  # first in line: it leads the next batch, [2, 3]
        await _settle()
        tg.start_soon(submit, 3)
        await _settle()
        first.set()
        await _settle()
        assert flush.batches == [[1], [2, 3]]
        leader_scope.cancel()  # in the middle of its flush, which runs to its end regardless
        await _settle()
        second.set()
    assert results[1] == 10 and results[3] == 30, "3 learnt its result from its batch"


async def test_the_lead_handed_to_a_caller_being_cancelled_moves_on() -> None:
    flush = Flusher()
    flush.gate = gate = anyio.Event()
    commit = GroupCommit(flush)
    results: dict[int, int] = {}
    doomed = anyio.CancelScope()

    async def submit(i: int, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            results[i] = await commit.submit(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, 1)
        await flush.entered.wait()
        tg.start_soon(submit, 2, doomed)  # first in line: the lead goes to it
        await _settle()
        tg.start_soon(submit, 3)
        await _settle()
        # 1's flush ends and hands the lead to 2, which is being cancelled at that moment.
        gate.set()
        doomed.cancel()
    made = [i for batch in flush.batches for i in batch]
    assert sorted(made) == sorted(set(made)), "nothing made twice"
    assert results[1] == 10 and results[3] == 30, "3 was made although 2 never led"
    assert made in ([1, 3], [1, 2, 3])
