"""The worker: claims pending agents and runs them, up to ``concurrency`` at a time.

Contracts:

* Claims are atomic (see :meth:`Store.claim`); each claimed agent runs under a lease that a
  per-agent task renews every ``heartbeat_s``. When a renewal fails (the agent was cancelled, or
  another worker took the lease over) the run is stopped at once.
* In-process spawns wake the worker immediately (:class:`Wakeup`); other processes' spawns are
  seen within ``poll_s``. Expired leases of any worker are swept back to pending.
* One agent's failure — even an exception inside grove — never stops the worker.
* :meth:`request_stop` (SIGINT/SIGTERM in ``grove worker``): stop claiming, keep heartbeating
  while in-flight agents finish for up to ``grace_s``, then cancel them, which returns them to
  pending without counting the attempt. A clean shutdown never leaves an agent executing.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from agentgrove.admission import CLI_WARMUP_S, AdmissionGate, memory_refusal
from agentgrove.cleanup import collect
from agentgrove.config import WorkerSettings
from agentgrove.models import AgentRecord, AgentStatus
from agentgrove.processes import available_memory_mb
from agentgrove.service import AgentService, Lease
from agentgrove.store._core import utcnow


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerStats:
    claimed: int = 0
    finished: int = 0
    released_on_shutdown: int = 0

    def summary(self) -> str:
        """``stopped (3 agents run, 1 returned to pending)``, for the operator."""
        text = f"stopped ({_count(self.finished, 'agent')} run"
        if self.released_on_shutdown:
            text += f", {self.released_on_shutdown} returned to pending"
        return text + ")"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Worker:
    def __init__(
        self,
        service: AgentService,
        settings: WorkerSettings,
        *,
        concurrency: int | None = None,
        drain: bool = False,
        owner: str | None = None,
        only: set[str] | None = None,
        run_id: str | None = None,
        memory_probe: Callable[[], int | None] = available_memory_mb,
    ) -> None:
        """``drain``: return once no agent is pending or executing (by any worker).
        ``only``: claim just these ids (``grove run``) and their children, returning when all
        of them have finished.
        ``run_id``: claim just that workflow run's agents, returning when the run is over.
        ``memory_probe``: available memory in MB (``[admission] min_available_mb``)."""
        self.service = service
        self.store = service.store
        self.settings = settings
        self.concurrency = concurrency or settings.concurrency
        self.drain = drain
        self.owner = owner or new_owner_id()
        self.only = set(only) if only is not None else None
        self.run_id = run_id
        self.stats = WorkerStats()
        self.admission = service.config.admission
        # Unix time: the pace is shared through the database with other processes.
        self._gate = AdmissionGate(self.admission, service.pacer, time.time)
        self._memory_probe = memory_probe
        self._memory_wait: str | None = None
        self._stopping = anyio.Event()
        self._running: dict[str, anyio.CancelScope] = {}
        self._started: dict[str, float] = {}  # monotonic start of each running agent
        self._parked: set[str] = set()
        self._slot_freed = anyio.Event()

    def stopping_note(self) -> str:
        """What a stop request means now: ``no new claims; 2 agents in flight get 30s to
        finish`` (or ``nothing in flight``)."""
        flying = len(self.in_flight)
        if not flying:
            return "no new claims; nothing in flight"
        return (
            f"no new claims; {_count(flying, 'agent')} in flight "
            f"{'gets' if flying == 1 else 'get'} {self.settings.grace_s:g}s to finish"
        )

    def request_stop(self) -> None:
        """Stop claiming; in-flight agents get ``grace_s`` to finish (see module doc)."""
        self._stopping.set()
        self.service.wakeup.notify()

    @property
    def long_lived(self) -> bool:
        """A worker for everything (``grove worker``, ``grove up``), not a one-shot run of
        some agents or one workflow run."""
        return self.only is None and self.run_id is None

    @property
    def in_flight(self) -> list[str]:
        return list(self._running)

    async def run(self) -> WorkerStats:
        # A crash may have happened anywhere: a long-lived worker clears what it left
        # (processes, orphaned worktrees) before claiming; a one-shot `grove run` or
        # `workflow run --wait` leaves that to workers and `grove gc`, and starts at once.
        # Every worker moves workflow runs forward first.
        if self.long_lived:
            leftovers = collect(self.store, self.service.workspaces, finished_worktrees=False)
            for line in leftovers.lines()[1:]:
                if line.split()[1] != "0":
                    print(f"grove worker: start-up clean-up: {line}", file=sys.stderr)
        self.store.reconcile_runs(utcnow())
        # Work committed by other processes wakes a long-lived worker at once (PostgreSQL's
        # NOTIFY); the poll stays as the fallback. A one-shot run's work comes from its own
        # process, whose wake-ups need no database.
        stop_listening = threading.Event()
        listener = threading.Thread(
            target=self.store.listen_for_work,
            args=(self.service.wakeup.notify, stop_listening),
            name="grove-listen",
            daemon=True,
        )
        if self.settings.listen and self.long_lived:
            listener.start()
        try:
            async with anyio.create_task_group() as tg:
                await self._claim_loop(tg)
                if self._running:
                    await self._shutdown()
        finally:
            stop_listening.set()
            if listener.is_alive():
                # It notices within half a second, or a connect attempt times out (5 s); a
                # daemon thread, it cannot keep the process alive past that anyway.
                await anyio.to_thread.run_sync(lambda: listener.join(timeout=6))
        return self.stats

    async def _claim_loop(self, tg: TaskGroup) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            try:
                now = anyio.current_time()
                if now >= next_sweep:
                    self.store.sweep_expired()
                    next_sweep = now + self.settings.sweep_interval_s
                if await self._claim_once(tg):
                    return
            except Exception as exc:
                # A dropped connection or a briefly unavailable database must not take the
                # worker down: what did not commit is tried again; a claim that committed
                # unheard is a lease nobody renews, which a sweep returns to pending.
                if not self.store.transient(exc):
                    raise
                _log_database_error("claiming", exc)
                await self.service.wakeup.wait(self.settings.poll_s)

    async def _claim_once(self, tg: TaskGroup) -> bool:
        """Claim and start one agent, or wait for a slot or for work; ``True`` when done."""
        if len(self._running) - len(self._parked) < self.concurrency:
            if not self._memory_allows_start():
                await self.service.wakeup.wait(self.settings.poll_s)
                return False
            agent = self._claim()
            if agent is not None:
                self.stats.claimed += 1
                scope = anyio.CancelScope()
                self._running[agent.id] = scope
                self._started[agent.id] = time.monotonic()
                tg.start_soon(self._run_one, agent, scope)
                return False
            if self._done():
                return True
            await self.service.wakeup.wait(self.settings.poll_s)
        else:
            self._slot_freed = anyio.Event()
            with anyio.move_on_after(self.settings.poll_s):
                await self._slot_freed.wait()
        return False

    def _memory_allows_start(self) -> bool:
        """No start while memory is short; said once per episode, on stderr."""
        now = time.monotonic()
        starting = sum(1 for at in self._started.values() if now - at < CLI_WARMUP_S)
        refusal = memory_refusal(self.admission, self._memory_probe(), starting)
        if refusal is not None and self._memory_wait is None:
            print(f"grove worker: {refusal}", file=sys.stderr)
        self._memory_wait = refusal
        return refusal is None

    def _claim(self) -> AgentRecord | None:
        lease_s, gate = self.settings.lease_s, self._gate
        if self.run_id is not None:
            # Nodes, and the children they delegate to, carry the run's id.
            return self.store.claim(self.owner, lease_s, run_id=self.run_id, gate=gate)
        if self.only is None:
            return self.store.claim(self.owner, lease_s, gate=gate)
        for agent_id in sorted(self.only):
            claimed = self.store.claim(self.owner, lease_s, agent_id=agent_id, gate=gate)
            if claimed is not None:
                return claimed
        # Children the tracked agents spawn are run here too, and tracked in turn.
        child = self.store.claim(self.owner, lease_s, parent_ids=self.only, gate=gate)
        if child is not None:
            self.only.add(child.id)
        return child

    def _done(self) -> bool:
        if self._running:
            return False
        if self.run_id is not None:
            return self.store.run_status(self.run_id).finished
        if self.only is not None:
            return all(self.store.get_agent(i).status.finished for i in self.only)
        if not self.drain:
            return False
        # Drained when nothing is queued or running anywhere: an agent still executing under
        # another worker may come back (its lease expiring) and must not be left behind.
        counts = self.store.count_by_status()
        return counts.get(AgentStatus.PENDING, 0) + counts.get(AgentStatus.EXECUTING, 0) == 0

    async def _run_one(self, agent: AgentRecord, scope: anyio.CancelScope) -> None:
        lease = Lease(self.owner, agent.attempt)
        try:
            with scope:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(self._heartbeat, agent.id, lease, scope)
                    try:
                        await self.service.execute(agent, lease, _WorkerSlots(self, agent.id))
                    finally:
                        inner.cancel_scope.cancel()
        except Exception as exc:  # never let one agent take the worker down
            print(f"grove worker: agent {agent.id} crashed inside grove: {exc!r}", file=sys.stderr)
            self.store.append_event(agent.id, "agent.worker_error", {"error": repr(exc)})
        finally:
            self._running.pop(agent.id, None)
            self._started.pop(agent.id, None)
            self._parked.discard(agent.id)
            self.stats.finished += 1
            self._slot_freed.set()
            self.service.wakeup.notify()

    def _park(self, agent_id: str) -> None:
        self._parked.add(agent_id)
        self._slot_freed.set()
        self.service.wakeup.notify()

    def _unpark(self, agent_id: str) -> None:
        self._parked.discard(agent_id)

    async def _heartbeat(self, agent_id: str, lease: Lease, scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            try:
                renewed = self.store.heartbeat(
                    agent_id, lease.owner, lease.attempt, self.settings.lease_s
                )
            except Exception as exc:
                if not self.store.transient(exc):
                    raise
                # The lease runs until it expires: the next beat tries again, and should the
                # lease expire meanwhile, the fence keeps this run's writes out.
                _log_database_error(f"renewing the lease of {agent_id}", exc)
                continue
            if not renewed:
                # Cancelled, or our lease was taken over: stop the run; the fence keeps
                # anything it might still try to write out of the database.
                print(
                    f"grove worker: {agent_id} attempt {lease.attempt}: lease not renewed "
                    "(cancelled, or another worker took over): stopping its run",
                    file=sys.stderr,
                )
                scope.cancel()
                return

    async def _shutdown(self) -> None:
        with anyio.move_on_after(self.settings.grace_s):
            while self._running:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()
        for agent_id, scope in list(self._running.items()):
            self.stats.released_on_shutdown += 1
            print(f"grove worker: grace over, returning {agent_id} to pending", file=sys.stderr)
            scope.cancel()


class _WorkerSlots:
    """Lets a waiting parent hand its slot back (see :mod:`agentgrove.delegation`). Taking it
    back never blocks: the worker may run over its limit until the parent finishes, which is
    what keeps a parent and its children from deadlocking."""

    def __init__(self, worker: Worker, agent_id: str) -> None:
        self._worker = worker
        self._agent_id = agent_id

    def park(self) -> None:
        self._worker._park(self._agent_id)

    def unpark(self) -> None:
        self._worker._unpark(self._agent_id)


def _log_database_error(doing: str, exc: BaseException) -> None:
    cause = getattr(exc, "orig", None) or exc
    print(f"grove worker: database error while {doing} (carrying on): {cause}", file=sys.stderr)
