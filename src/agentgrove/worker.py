"""The worker: claims pending agents and runs them, up to ``concurrency`` at a time.

Contracts:

* Claims are atomic (see :meth:`Store.claim`); each claimed agent runs under a lease that a
  per-agent task renews every ``heartbeat_s``. When a renewal fails (the agent was cancelled, or
  another worker took the lease over) the run is stopped at once.
* In-process spawns wake the worker immediately (:class:`Wakeup`); other processes' spawns are
  seen within ``poll_s``. Expired leases of any worker are swept back to pending, and approval
  gates past their ``approval_timeout_s`` and questions past their deadline are decided (see
  :mod:`agentgrove.approvals`), at every sweep. A sweep also comes at the earliest such
  deadline (within ``poll_s``) that the worker knows of: read at each sweep and whenever one
  of its agents ends, so a gate or question opened by another process with a deadline before
  the next sweep may wait for that sweep.
* One agent's failure — even an exception inside grove — never stops the worker.
* :meth:`request_stop` (SIGINT/SIGTERM in ``grove worker``): stop claiming, keep heartbeating
  while in-flight agents finish for up to ``grace_s``, then cancel them, which returns them to
  pending without counting the attempt. A clean shutdown never leaves an agent executing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup

from agentgrove.admission import CLI_WARMUP_S, AdmissionGate, memory_allows, memory_refusal
from agentgrove.cleanup import collect
from agentgrove.clone_check import check_clone
from agentgrove.config import GroveConfig
from agentgrove.errors import StoreUnavailable
from agentgrove.logs import say
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.notify import Notifier
from agentgrove.processes import available_memory_mb
from agentgrove.remotes import resolve_remote
from agentgrove.secrets import redact
from agentgrove.service import AgentService, Lease
from agentgrove.settings import WorkerSettings
from agentgrove.store import RunOutcome, Store
from agentgrove.store._core import utcnow
from agentgrove.text import visible

T = TypeVar("T")

log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """``host:pid:identity:nonce``. ``identity`` (``boot.pidns.start``: the boot id, the pid
    namespace and the process's start time) tells this process apart from a later one that
    reuses its pid, so another worker on this host can see that the owner is gone
    (:func:`owner_gone`) instead of waiting for its lease to expire."""
    identity = _process_identity(os.getpid()) or "-"
    return f"{socket.gethostname()}:{os.getpid()}:{identity}:{uuid.uuid4().hex[:6]}"


def owner_gone(owner: str) -> bool:
    """Whether the lease ``owner`` is a worker process of this host that no longer runs: its
    pid is gone or is now another process (a different start time), or the host has rebooted
    since. ``False`` whenever that cannot be known: another host name, another pid namespace,
    an owner id without an identity (older workers), or no ``/proc``; the lease rule applies."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    boot, pid_ns, start = [*parts[2].split("."), "", "", ""][:3]
    mine = _process_identity(os.getpid())
    if not start or mine is None:
        return False
    my_boot, my_ns, _ = mine.split(".")
    if boot != my_boot:
        return True  # started before this host's last boot: it cannot be running
    if pid_ns != my_ns:
        return False  # another container's pids: not ours to judge
    return _process_identity(int(parts[1])) != f"{boot}.{pid_ns}.{start}"


def _process_identity(pid: int) -> str | None:
    """``boot.pidns.start`` of process ``pid`` on this host (Linux), ``None`` if it does not
    exist or this cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:12]
        pid_ns = os.readlink("/proc/self/ns/pid").strip("pid:[]")
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22, the start time in clock ticks since boot; fields are counted after the
    # command name, which is in parentheses and may itself hold spaces.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or not boot:
        return None
    return f"{boot}.{pid_ns}.{fields[19]}"


def check_repository(config: GroveConfig, store: Store) -> list[str]:
    """The start-up checks of a long-lived worker's clone, before any claim: the ``[git]
    remote`` answers (:func:`agentgrove.remotes.resolve_remote`) and the clone is of the
    repository the database's unfinished work comes from (:func:`check_clone`). Raises
    :class:`BadInput` (one line: the CLI exits 2); returns the notes for the operator (bases
    found nowhere). Outside git nothing is checked; a database that does not answer yet skips
    the second check (the claim path refuses a base it cannot find anyway)."""
    if not config.is_git:
        return []
    remote = config.git.remote
    if remote:
        resolve_remote(config.root, remote)
    try:
        verdict = check_clone(store, config.root, remote)
    except StoreUnavailable as exc:
        shown = visible(redact(str(exc)), newlines=False)
        return [f"base commits not checked (database unavailable: {shown})"]
    where = f"on remote {remote!r}" if remote else "here"
    return [
        f"{whose}'s base {commit[:12]} is neither in {config.root} nor {where}: it will fail "
        "unless it is pushed"
        for commit, whose in verdict.missing
    ]


_OVER_HERE = frozenset(
    {
        AgentStatus.COMPLETED,
        AgentStatus.FAILED,
        AgentStatus.CANCELLED,
        AgentStatus.AWAITING_INPUT,
    }
)
"""Where a one-shot run (``only``) leaves an agent: finished, or waiting for a person."""


class Backoff:
    """Capped exponential back-off with jitter for retrying while the database is
    unavailable: ``0.2 s`` doubling to ``5 s``, each delay drawn from its upper half."""

    def __init__(self, first_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.failures = 0

    def next(self) -> float:
        ceiling: float = min(self.cap_s, self.first_s * 2.0**self.failures)
        self.failures += 1
        return ceiling * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.failures = 0


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
        roles: Collection[str] | None = None,
        memory_probe: Callable[[], int | None] = available_memory_mb,
    ) -> None:
        """``drain``: return once no agent is pending or executing (by any worker).
        ``only``: claim just these ids (``grove run``) and their children, returning when all
        of them have finished.
        ``run_id``: claim just that workflow run's agents, returning when the run is over.
        ``roles`` (non-empty): claim only agents of these roles (``grove worker --roles``);
        with ``drain``, return once none of *those* is pending or executing.
        ``memory_probe``: available memory in MB (``[admission] min_available_mb``)."""
        self.service = service
        self.store = service.store
        self.settings = settings
        self.concurrency = concurrency or settings.concurrency
        self.drain = drain
        self.owner = owner or new_owner_id()
        self.only = set(only) if only is not None else None
        self.run_id = run_id
        self.roles = frozenset(roles) if roles else None
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
        # Set when a gate or question may have opened (a sweep; this process's store having
        # committed one, seen as a new ``deadline_version``): the claim loop then reads the
        # earliest deadline and sweeps by it.
        self._deadlines_moved = True
        self._deadline_version = self.store.deadline_version
        self._slot_freed = anyio.Event()
        self.lost_leases: set[str] = set()
        """Agents given up because the database stayed unavailable past their lease."""

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
        # The database may be down as we start: each step is tried until it can be made.
        if self.long_lived:
            leftovers = await self._until_available(
                "cleaning up at start-up",
                lambda: self.service.db(
                    collect, self.store, self.service.workspaces, finished_worktrees=False
                ),
            )
            for line in leftovers.lines()[1:]:
                if line.split()[1] != "0":
                    say(log, "worker.cleanup", f"start-up clean-up: {line}", level=logging.INFO)
        await self._until_available(
            "moving workflow runs forward",
            lambda: self.service.db(self.store.reconcile_runs, utcnow()),
        )
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
        notifier = self._notifier()
        notifier_stop = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                if notifier is not None:
                    tg.start_soon(_guarded, notifier.run, notifier_stop)
                try:
                    await self._claim_loop(tg)
                    if self._running:
                        await self._shutdown()
                finally:
                    # After the drain: what the last agents' endings notify is sent too.
                    notifier_stop.set()
        finally:
            stop_listening.set()
            if listener.is_alive():
                # It notices within half a second, or a connect attempt times out (5 s); a
                # daemon thread, it cannot keep the process alive past that anyway.
                await anyio.to_thread.run_sync(lambda: listener.join(timeout=6))
        return self.stats

    def _notifier(self) -> Notifier | None:
        """A long-lived worker delivers ``[notify]``'s notifications on the side; one-shot runs
        leave theirs in the database for one."""
        settings = self.service.config.notify
        if settings is None or not self.long_lived:
            return None
        return Notifier(self.store, settings, owner=self.owner, cwd=str(self.service.config.root))

    async def _until_available(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` again (backing off) until the database answers."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                _log_database_error(doing, exc, backoff.failures)
                await anyio.sleep(backoff.next())

    async def _claim_loop(self, tg: TaskGroup) -> None:
        # The first sweep comes at once: a worker (re)started after a crash on this host finds
        # the agents its dead predecessor held (their owner is gone) and runs them again now.
        next_sweep, swept_at = 0.0, utcnow()
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                now = anyio.current_time()
                if now >= next_sweep:
                    # Not our own agents: their renewals may be held up by the database
                    # (a lock, an outage); we give them up ourselves when the lease runs out.
                    held = {a for a in self._running if a not in self.lost_leases}
                    await self.service.db(self.store.sweep_expired, gone=owner_gone, held=held)
                    # Approval gates past their approval_timeout_s decide by themselves.
                    swept_at = utcnow()
                    await self.service.db(self.store.expire_approvals, swept_at)
                    # Questions past their role's question_timeout_s: the default answer,
                    # or no_answer. Any worker does it; each is one guarded transaction.
                    await self.service.db(self.store.expire_questions, at=swept_at)
                    next_sweep = now + self.settings.sweep_interval_s
                    self._deadlines_moved = True
                if self.store.deadline_version != self._deadline_version:
                    self._deadline_version = self.store.deadline_version
                    self._deadlines_moved = True
                if self._deadlines_moved:  # the next sweep comes by the earliest deadline
                    due = await self.service.db(self._next_deadline_s, swept_at)
                    next_sweep, self._deadlines_moved = min(next_sweep, now + due), False
                if await self._claim_once(tg):
                    return
                backoff.reset()
            except StoreUnavailable as exc:
                # A dropped connection or an unavailable database must not take the worker
                # down: what did not commit is tried again after a back-off; a claim that
                # committed unheard is a lease nobody renews, which a sweep returns to pending.
                _log_database_error("claiming", exc, backoff.failures)
                await self.service.wakeup.wait(backoff.next())

    def _next_deadline_s(self, swept_at: datetime) -> float:
        """Seconds until the earliest deadline of a gate or question not due at the last sweep
        (``swept_at``): 0 when past, infinite when there is none. Those due at that sweep
        and left undecided (their run is over) are not counted: they would sweep forever."""
        found = [
            d
            for d in (
                self.store.next_approval_deadline(swept_at),
                self.store.next_question_deadline(swept_at),
            )
            if d is not None
        ]
        return max(0.0, (min(found) - utcnow()).total_seconds()) if found else float("inf")

    async def _claim_once(self, tg: TaskGroup) -> bool:
        """Claim and start as many agents as there are free slots (in one claim), or wait for
        a slot or for work; ``True`` when done. Every agent claimed is started at once: a
        worker holds no claimed agent it does not run."""
        free = self.concurrency - (len(self._running) - len(self._parked))
        if free > 0:
            allowed = min(free, self._memory_allows_starts())
            if allowed == 0:
                await self.service.wakeup.wait(self.settings.poll_s)
                return False
            claimed = await self.service.db(self._claim, allowed)
            for agent in claimed:
                self.stats.claimed += 1
                scope = anyio.CancelScope()
                self._running[agent.id] = scope
                self._started[agent.id] = time.monotonic()
                tg.start_soon(self._run_one, agent, scope)
            if claimed:
                return False
            if await self.service.db(self._done):
                return True
            await self.service.wakeup.wait(self.settings.poll_s)
        else:
            self._slot_freed = anyio.Event()
            with anyio.move_on_after(self.settings.poll_s):
                await self._slot_freed.wait()
        return False

    def _memory_allows_starts(self) -> int:
        """How many agents may start now for memory (0: none while memory is short, said
        once per episode, on stderr)."""
        now = time.monotonic()
        starting = sum(1 for at in self._started.values() if now - at < CLI_WARMUP_S)
        available = self._memory_probe()
        refusal = memory_refusal(self.admission, available, starting)
        if refusal is not None and self._memory_wait is None:
            say(log, "worker.memory_short", refusal)
        self._memory_wait = refusal
        return memory_allows(self.admission, available, starting)

    def _claim(self, limit: int) -> list[AgentRecord]:
        """Up to ``limit`` agents, claimed in one transaction where the claim allows it."""
        lease_s, gate = self.settings.lease_s, self._gate
        if self.run_id is not None:
            # Nodes, and the children they delegate to, carry the run's id.
            return self.store.claim_many(
                self.owner, lease_s, limit, run_id=self.run_id, gate=gate, roles=self.roles
            )
        if self.only is None:
            return self.store.claim_many(self.owner, lease_s, limit, gate=gate, roles=self.roles)
        for agent_id in sorted(self.only):
            claimed = self.store.claim(
                self.owner, lease_s, agent_id=agent_id, gate=gate, roles=self.roles
            )
            if claimed is not None:
                return [claimed]
        # Children the tracked agents spawn are run here too, and tracked in turn.
        children = self.store.claim_many(
            self.owner, lease_s, limit, parent_ids=self.only, gate=gate, roles=self.roles
        )
        self.only.update(child.id for child in children)
        return children

    def _done(self) -> bool:
        if self._running:
            return False
        # A one-shot run also ends when what is left waits for a person (awaiting_input): no
        # process or slot is held for it; the answer hands it to whichever worker runs next.
        if self.run_id is not None:
            return self.store.run_status(self.run_id).finished or self.store.only_people_wait(
                run_id=self.run_id
            )
        if self.only is not None:
            return all(self.store.get_agent(i).status in _OVER_HERE for i in self.only)
        if not self.drain:
            return False
        # Drained when nothing is queued or running anywhere: an agent still executing under
        # another worker may come back (its lease expiring) and must not be left behind.
        counts = self.store.count_by_status(self.roles)
        return counts.get(AgentStatus.PENDING, 0) + counts.get(AgentStatus.EXECUTING, 0) == 0

    async def _run_one(self, agent: AgentRecord, scope: anyio.CancelScope) -> None:
        lease = Lease(self.owner, agent.attempt)
        try:
            with scope:
                async with anyio.create_task_group() as inner:
                    # The heartbeat task starts when its first renewal is due: an agent that
                    # ends sooner (most, in a busy worker of short agents) costs no task.
                    first_renewal = asyncio.get_running_loop().call_later(
                        self.settings.heartbeat_s,
                        inner.start_soon,
                        self._heartbeat,
                        agent.id,
                        lease,
                        scope,
                        time.monotonic(),
                    )
                    try:
                        await self.service.execute(
                            agent,
                            lease,
                            _WorkerSlots(self, agent.id),
                            lease_lost=lambda: agent.id in self.lost_leases,
                        )
                    finally:
                        first_renewal.cancel()
                        inner.cancel_scope.cancel()
        except StoreUnavailable as exc:
            # What the attempt still owed could not be written; its lease runs out and a sweep
            # returns it to pending (or the fence keeps a late write out).
            _log_database_error(f"ending {agent.id}", exc)
        except Exception as exc:  # never let one agent take the worker down
            # Redacted and escaped: a driver's error quotes the statement's parameters.
            shown = visible(redact(repr(exc)), newlines=False)
            say(
                log,
                "agent.crashed",
                f"agent {agent.id} crashed inside grove: {shown}",
                level=logging.ERROR,
                agent=agent.id,
            )
            with contextlib.suppress(Exception):
                await self.service.db(
                    self.store.append_event, agent.id, "agent.worker_error", {"error": repr(exc)}
                )
            # Failed at once (what it spent is unknown: its reservation counts), not left
            # executing until a sweep.
            failed = RunOutcome(
                status=AgentStatus.FAILED,
                error=f"grove error: {' '.join(repr(exc).split())[:500]}",
                error_kind=ErrorKind.INTERNAL,
                cost_usd=agent.reserved_usd,
            )
            with contextlib.suppress(Exception):
                await self.service.db(
                    self.store.finish, agent.id, lease.owner, lease.attempt, failed
                )
        finally:
            self._running.pop(agent.id, None)
            self._started.pop(agent.id, None)
            self._parked.discard(agent.id)
            self.lost_leases.discard(agent.id)
            self.stats.finished += 1
            self._slot_freed.set()
            self.service.wakeup.notify()

    def _park(self, agent_id: str) -> None:
        self._parked.add(agent_id)
        self._slot_freed.set()
        self.service.wakeup.notify()

    def _unpark(self, agent_id: str) -> None:
        self._parked.discard(agent_id)

    async def _heartbeat(
        self, agent_id: str, lease: Lease, scope: anyio.CancelScope, held_since: float
    ) -> None:
        """Renew ``agent_id``'s lease now and every ``heartbeat_s`` after, until cancelled or
        the lease is lost (the run is then stopped through ``scope``). ``held_since``: when
        the claim was made (monotonic)."""
        # By our own clock, the lease runs at least until lease_s after the last renewal we
        # sent (the claim, at first): the database stamps it later than we sent it.
        failures = 0
        first = True
        while True:
            if not first:
                await anyio.sleep(self.settings.heartbeat_s)
            first = False
            sent = time.monotonic()
            try:
                renewed = await self.service.db(
                    self.store.heartbeat,
                    agent_id,
                    lease.owner,
                    lease.attempt,
                    self.settings.lease_s,
                )
            except StoreUnavailable as exc:
                # The run goes on while the lease may still be ours; past that another worker
                # may have taken the agent over, so this run is given up: its CLI is stopped
                # and nothing more is written for it (the fence would keep it out anyway).
                if time.monotonic() - held_since >= self.settings.lease_s:
                    say(
                        log,
                        "worker.lease_expired",
                        f"{agent_id} attempt {lease.attempt}: lease could not be renewed "
                        "before it expired (database unavailable): stopping its run",
                        agent=agent_id,
                    )
                    self.lost_leases.add(agent_id)
                    scope.cancel()
                    return
                _log_database_error(f"renewing the lease of {agent_id}", exc, failures)
                failures += 1
                continue
            failures = 0
            held_since = sent
            if not renewed:
                if await self._ended_by_us(agent_id, lease):
                    return  # the run wrote its ending while this renewal was on its way
                # Cancelled, or our lease was taken over: stop the run; the fence keeps
                # anything it might still try to write out of the database.
                say(
                    log,
                    "worker.lease_lost",
                    f"{agent_id} attempt {lease.attempt}: lease not renewed "
                    "(cancelled, or another worker took over): stopping its run",
                    agent=agent_id,
                )
                scope.cancel()
                return

    async def _ended_by_us(self, agent_id: str, lease: Lease) -> bool:
        try:
            row = await self.service.db(self.store.get_agent, agent_id)
        except StoreUnavailable:
            return False
        # Not a cancel (that must stop the run): a completion or failure of this attempt.
        ended = row.status in (AgentStatus.COMPLETED, AgentStatus.FAILED)
        return ended and row.attempt == lease.attempt and row.lease_owner is None

    async def _shutdown(self) -> None:
        with anyio.move_on_after(self.settings.grace_s):
            while self._running:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()
        for agent_id, scope in list(self._running.items()):
            self.stats.released_on_shutdown += 1
            say(
                log,
                "worker.grace_over",
                f"grace over, returning {agent_id} to pending",
                level=logging.INFO,
                agent=agent_id,
            )
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


async def _guarded(run: Callable[[anyio.Event], Awaitable[None]], stop: anyio.Event) -> None:
    """Run a side job of the worker; its failure is said, and never stops the worker."""
    try:
        await run(stop)
    except Exception as exc:
        shown = visible(redact(repr(exc)), newlines=False)
        say(
            log,
            "worker.notifications_stopped",
            f"notifications stopped by an error inside grove: {shown}",
            level=logging.ERROR,
        )


def _log_database_error(doing: str, exc: BaseException, failures: int = 0) -> None:
    """Said on the first failure of an episode and then every 10th, not at every retry."""
    if failures % 10 == 0:
        shown = visible(redact(str(exc)), newlines=False)
        say(log, "database.unavailable", f"{shown} (while {doing}; retrying)")
