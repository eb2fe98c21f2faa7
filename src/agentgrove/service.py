"""AgentService: spawn agents (validated) and carry one claimed attempt through to its end.

Contracts:

* :meth:`spawn` validates everything first (role, task, parent, base ref) and then writes the
  agent and its spawn event in one transaction: bad input leaves nothing behind.
* :meth:`execute` takes an agent the caller has claimed (status executing, lease held) and ends
  with exactly one fenced transition: completed, failed, or back to pending (retry, or
  cancellation of this process). If the fence no longer matches (the agent was cancelled or the
  lease taken over) it writes nothing more.
* The worktree is committed before the final transition, so a completed agent's head commit is
  always on its branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio

from agentgrove.admission import ModelPacer
from agentgrove.budgets import MIN_GRANT_USD, check_budget
from agentgrove.checks import CheckRun, fix_prompt, run_check
from agentgrove.config import GroveConfig
from agentgrove.delegation import AgentDelegate, NoSlots, Question, Slots, effective_role
from agentgrove.errors import BadInput, StoreUnavailable, UnknownRole
from agentgrove.gitexec import common_dir
from agentgrove.group_commit import GroupCommit
from agentgrove.logs import say
from agentgrove.models import (
    AgentRecord,
    AgentStatus,
    CheckRecord,
    CheckStatus,
    ErrorKind,
    QuestionRecord,
    SpawnRequest,
    WorkspaceRecord,
    unstorable,
)
from agentgrove.processes import kill_agent_processes
from agentgrove.remotes import PushFailed
from agentgrove.retry import decide
from agentgrove.roles import Role, check_command_refusal
from agentgrove.run_branches import after_node_completed
from agentgrove.runtime import RunResult, RunSpec, Runtime, SessionLookup
from agentgrove.runtime._policy import can_write
from agentgrove.secrets import Redactor
from agentgrove.sessions import Child, EarlierWork, SessionPlan, answer_message, plan_session
from agentgrove.store import NewAgent, RunOutcome, Store
from agentgrove.store._core import utcnow
from agentgrove.store._log import TranscriptMessage
from agentgrove.store._questions import DEFAULT_BY
from agentgrove.store._records import Ending, WorkspaceSave
from agentgrove.workspaces import ConflictMarkersLeft, MergeConflict, Workspaces
from agentgrove.worktree_env import (
    agent_env,
    copy_files,
    hold_ports,
    mark_setup_done,
    setup_marker,
)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - a group commit's item

UNISOLATED = "not a git repository: running unisolated, in the directory itself"
"""The warning every agent run outside git gets."""
DB_THREADS = 4
"""Database calls of one worker process that may run at once, each on a thread of its own: the
event loop never waits for the database (a lock held elsewhere, a server restarting)."""
TRANSCRIPT_BATCH = 200
"""Transcript messages written per transaction, at most."""
TRANSCRIPT_CLOSE_S = 5.0
"""How long an interrupted attempt's queued transcript may take to be written."""
TRANSCRIPT_PENDING = 5000
"""Messages of one attempt held in memory while the database is slow or unavailable; past
that, further messages are counted and the gap recorded instead (the run goes on)."""

MAX_ANSWER = 100_000
"""Characters of an answer to an agent's question, at most."""

_NOT_OURS = "the lease is no longer ours (cancelled, or another worker took over)"

EventObserver = Callable[[str, str, dict[str, Any]], None]
"""Called with (agent_id, event kind, data) for every event an attempt produces, in-process."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    owner: str
    attempt: int


class Wakeup:
    """Tells an in-process worker that work arrived, so it claims without waiting for a poll.

    ``notify`` may be called from any thread: off the worker's loop it is handed to the loop
    with ``call_soon_threadsafe`` (an anyio Event is not thread-safe).
    """

    def __init__(self) -> None:
        self._pending = False
        self._event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def notify(self) -> None:
        # Latched: a notice that comes while nobody waits (the worker is mid-claim, its query
        # ran just before the other commit) makes the next wait return at once, not lost.
        self._pending = True
        event, loop = self._event, self._loop
        if event is None:
            return
        if loop is not None and threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(event.set)
            return
        event.set()

    async def wait(self, timeout_s: float) -> None:
        """Until notified (or already notified since the last wait), or ``timeout_s``."""
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._event = anyio.Event()
        if self._pending:
            self._pending = False
            return
        with anyio.move_on_after(timeout_s):
            await self._event.wait()
        self._pending = False


class AgentService:
    def __init__(
        self,
        store: Store,
        config: GroveConfig,
        runtime: Runtime,
        *,
        workspaces: Workspaces | None = None,
        wakeup: Wakeup | None = None,
        observer: EventObserver | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.runtime = runtime
        self.workspaces = workspaces or Workspaces(
            config.root if config.is_git else None,
            config.worktrees_dir,
            config.root,
            remote=config.git.remote,
            push_retry_s=config.git.push_retry_s,
        )
        self.wakeup = wakeup or Wakeup()
        if config.telemetry.otel:  # imported only when enabled: OpenTelemetry is optional
            from agentgrove.telemetry import with_agent_spans

            observer = with_agent_spans(store, observer)
        self.observer = observer
        # Paces agent starts per model and backs off on 429s (see agentgrove.admission).
        self.pacer = ModelPacer(config.admission.rpm_per_model)
        # Secrets in the environment never reach the database (transcripts, events, results).
        self.redact = Redactor.from_environ(os.environ)
        self._db_limiter: anyio.CapacityLimiter | None = None
        # Concurrent attempts' endings, workspace rows and reads of children go to the
        # database together, one transaction for many (see agentgrove.group_commit).
        self._endings = GroupCommit(self._on_thread(self.store.finish_many), isolate=_not_outage)
        self._workspace_saves = GroupCommit(
            self._on_thread(self.store.save_workspaces), isolate=_not_outage
        )
        self._children_reads = GroupCommit(
            self._on_thread(self.store.children_of), isolate=_not_outage
        )

    # -- the database, off the event loop ------------------------------------------------

    def _on_thread(
        self, fn: Callable[[Sequence[I]], list[T]]
    ) -> Callable[[Sequence[I]], Awaitable[list[T]]]:
        """``fn``, a store call taking many items, made through :meth:`db`."""

        async def call(items: Sequence[I]) -> list[T]:
            return await self.db(fn, items)

        return call

    async def db(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a store call) on a worker thread, at most
        :data:`DB_THREADS` at once, so the event loop (agents' streams, heartbeats) never
        waits for the database."""
        if self._db_limiter is None:
            self._db_limiter = anyio.CapacityLimiter(DB_THREADS)
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._db_limiter)

    async def owed(self, agent_id: str, write: Callable[[], T]) -> T:
        """Make a write fenced by the lease that the attempt owes (its ending, its
        workspace), again and again while the database is unavailable, until it is made;
        ``False``: the lease is no longer ours. Such a write is idempotent (made twice, the
        second matches nothing or changes nothing); so is a read the attempt needs. It stops
        only when cancelled: by the heartbeat, once the lease has expired by the worker's own
        clock."""
        return await self._owed_call(agent_id, lambda: self.db(write))

    async def _owed_call(self, agent_id: str, call: Callable[[], Awaitable[T]]) -> T:
        """:meth:`owed` for a write made by ``await call()`` (one submitted to a group commit)."""
        from agentgrove.worker import Backoff  # the worker imports this module

        backoff = Backoff()
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                if backoff.failures % 10 == 0:
                    say(
                        log,
                        "database.unavailable",
                        f"agent {agent_id}: {exc} (writing again)",
                        agent=agent_id,
                    )
                await anyio.sleep(backoff.next())

    async def children(self, agent_id: str) -> list[AgentRecord]:
        """``agent_id``'s direct children in spawn order, read with other attempts' reads of
        theirs (one query for all: see :mod:`agentgrove.group_commit`)."""
        return await self._children_reads.submit(agent_id)

    # -- spawning --------------------------------------------------------------------------

    def spawn(self, request: SpawnRequest) -> AgentRecord:
        """Validate and insert a pending agent; wakes an in-process worker.

        With ``after_parent`` the agent is not claimable until its parent completed; it then
        starts from the parent's head commit with the parent's output in its prompt (and fails
        ``dependency_failed`` if the parent does not complete).
        """
        return self.insert(self.prepare(request))

    def insert(self, new: NewAgent) -> AgentRecord:
        """Insert an agent :meth:`prepare` validated; wakes an in-process worker."""
        record = self.store.insert_agent(new)
        self.wakeup.notify()
        return record

    def prepare(self, request: SpawnRequest) -> NewAgent:
        """Validate a spawn request completely, writing nothing (see :meth:`spawn`)."""
        spec = self.config.roles.get(request.role)
        if spec is None:
            raise UnknownRole(request.role, list(self.config.roles))
        if not request.task.strip():
            raise BadInput("the task is empty: say what the agent should do")
        for what, text in (
            ("the task", request.task),
            ("--model", request.model),
            ("--base", request.base),
            ("--parent", request.parent_id),
        ):
            problem = None if text is None else unstorable(text)
            if problem is not None:
                raise BadInput(f"{what} {problem}")
        if request.model is not None and not request.model.strip():
            raise BadInput("--model is empty: give a model name or leave it out")
        check_budget(request.budget_usd)
        if request.check is not None:
            refusal = check_command_refusal(request.check)
            if refusal is not None:
                raise BadInput(f"--check: {refusal}")
        parent_id = None
        depth = 0
        parent_cap = float("inf")
        run_id = None
        if request.parent_id is not None:
            parent_id = self.store.resolve_id(request.parent_id)
            parent = self.store.get_agent(parent_id)
            depth = parent.depth + 1
            if parent.max_budget_usd is not None:
                parent_cap = parent.max_budget_usd
            run_id = parent.workflow_run_id  # a node's helpers belong to its run (not nodes)
        elif request.after_parent:
            raise BadInput("after_parent needs a parent id")
        base_commit = self.workspaces.resolve_base(request.base)
        return NewAgent(
            role=request.role,
            task=request.task.strip(),
            model=request.model or spec.model,
            parent_id=parent_id,
            base_ref=base_commit,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            budget_usd=request.budget_usd,
            # Never more per attempt than the parent may spend on one.
            max_budget_usd=min(spec.max_budget_usd, parent_cap),
            depth=depth,
            after_parent=request.after_parent,
            workflow_run_id=run_id,
            check_command=request.check if request.check is not None else spec.check,
        )

    def cancel(self, agent_id: str, *, tree: bool = False) -> list[str]:
        """Cancel a pending or executing agent (and, with ``tree``, all its descendants,
        deepest first); the ids actually cancelled. A running agent's worker stops it at its
        next heartbeat; cancelled agents are never retried."""
        root = self.store.resolve_id(agent_id)
        targets = [a.id for a in reversed(self.store.tree(root))] if tree else [root]
        return [a for a in targets if self.store.cancel(a)]

    def answer(self, agent_id: str, text: str, *, by: str) -> QuestionRecord:
        """Answer the question agent ``agent_id`` (an id or unique prefix) awaits: it goes back
        to pending, and its next attempt resumes its session with ``text``. :class:`BadInput`
        (nothing changed) for an empty or unstorable answer, or an agent that awaits none."""
        full = self.store.resolve_id(agent_id)
        if not text.strip():
            raise BadInput("the answer is empty: say what the agent should know")
        problem = unstorable(text)
        if problem is not None:
            raise BadInput(f"the answer {problem}")
        if len(text) > MAX_ANSWER:
            raise BadInput(f"the answer is {len(text)} characters long; give at most {MAX_ANSWER}")
        answered = self.store.answer(full, self.redact(text.strip()), by=by)
        if answered is None:
            status = self.store.get_agent(full).status.value
            raise BadInput(
                f"agent {full} is {status} and asked nothing: only an agent that awaits input "
                "(grove ls --status awaiting_input) can be answered"
            )
        self.wakeup.notify()
        return answered

    # -- executing -------------------------------------------------------------------------

    async def execute(
        self,
        agent: AgentRecord,
        lease: Lease,
        slots: Slots | None = None,
        lease_lost: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run one claimed attempt of ``agent`` to its single final transition (see module doc).

        Cancelled from outside (shutdown past its grace, or a cancel noticed by the heartbeat),
        the agent goes back to pending and the attempt is not counted; when the agent was
        cancelled, or already finished, the fenced release simply matches nothing.
        ``lease_lost()``: the caller gave the run up because its lease expired while the
        database was unavailable; then nothing is written (one release is tried otherwise, and
        if the database cannot take it, the lease runs out instead).
        """
        progress = _Progress()
        try:
            with progress.held:  # the attempt's port block, released at its end
                await self._execute(agent, lease, slots or NoSlots(), lease_lost, progress)
        except Exception as exc:
            # An error inside grove tied to this one agent (its prompt, its workspace, the
            # runtime, a full disk) fails the agent at once, not the worker; database outages
            # are the caller's to retry, and a lost lease means nothing more is written.
            if lease_lost() or any(self.store.transient(e) for e in _leaves(exc)):
                raise
            tail = progress.transcript.take_tail() if progress.transcript else []
            await self._finish(agent, lease, progress.failure(agent, exc), tail)
        except anyio.get_cancelled_exc_class():
            if lease_lost():
                raise
            with anyio.CancelScope(shield=True):
                if progress.transcript is not None:  # a tail kept for the ending: written first
                    with anyio.move_on_after(TRANSCRIPT_CLOSE_S):
                        await progress.transcript.write_tail()
                try:
                    released = await self.db(
                        self.store.release,
                        agent.id,
                        lease.owner,
                        lease.attempt,
                        refund_attempt=True,
                        reason="interrupted",
                    )
                except StoreUnavailable as exc:
                    say(
                        log,
                        "agent.not_released",
                        f"agent {agent.id}: not released: {exc}",
                        agent=agent.id,
                    )
                    released = False
                if released:
                    self._emit(agent.id, "agent.released", {"reason": "interrupted"})
                else:
                    say(
                        log,
                        "agent.not_released",
                        f"agent {agent.id} attempt {lease.attempt}: not released: {_NOT_OURS}",
                        agent=agent.id,
                    )
            raise

    async def _execute(
        self,
        agent: AgentRecord,
        lease: Lease,
        slots: Slots,
        lease_lost: Callable[[], bool],
        progress: _Progress,
    ) -> None:
        claimed = time.monotonic()  # timeout_s counts from here: the worktree's preparation too
        # Its role clamped by every ancestor's: a child never gets more than its parent. A
        # root agent's role and prompt need no database: no thread hop for them.
        root = agent.parent_id is None
        role = (
            effective_role(self.config.roles, self.store, agent)
            if root
            else await self.owed(
                agent.id, lambda: effective_role(self.config.roles, self.store, agent)
            )
        )
        if role is None:
            await self._finish(
                agent,
                lease,
                _failure(
                    ErrorKind.PERMANENT,
                    f"role {agent.role!r} (or an ancestor's) is no longer configured",
                ),
            )
            return
        prompt, base = (
            self._prompt_and_base(agent)
            if root
            else await self.owed(agent.id, lambda: self._prompt_and_base(agent))
        )
        if lease.attempt > 1:
            # An earlier attempt's worker was presumed dead; if it ran here, its CLI may still
            # be editing the worktree this attempt is about to reuse. Stop it first.
            killed = kill_agent_processes(agent.id, before_attempt=lease.attempt)
            if killed:
                await self._warn(
                    agent.id,
                    f"stopped {len(killed)} process(es) left by an earlier attempt: "
                    + " ".join(map(str, killed)),
                )
        try:
            create = functools.partial(
                self.workspaces.create, agent.id, base, agent.merge_refs or ()
            )
            # Outside git the workspace is the directory itself: nothing to run off the loop.
            outside_git = self.workspaces.repo is None
            ws = create() if outside_git else await anyio.to_thread.run_sync(create)
        except MergeConflict as exc:
            await self._finish(agent, lease, _failure(ErrorKind.PERMANENT, str(exc)))
            return
        except Exception as exc:  # git failing is an environment problem of this agent only
            await self._finish(agent, lease, _failure(ErrorKind.INTERNAL, f"workspace: {exc}"))
            return
        # Outside git, the warning is written with the workspace: one transaction, not two.
        unisolated = [("agent.warning", {"message": UNISOLATED})] if ws.repo_path is None else []
        await self.save_workspace(ws, lease, events=unisolated)
        for kind, data in unisolated:
            self._emit(agent.id, kind, data)
        agent_vars = await self._prepare_worktree(agent, lease, ws, progress)
        if agent_vars is None:
            return
        current = [ws]
        # A role that cannot write (no file tool, Bash read-only or none) has nothing of its
        # own to commit: whatever its worktree holds did not come from it.
        writes = can_write(role.tools, role.bash)

        async def commit_progress(message: str) -> WorkspaceRecord:
            if writes:
                current[0] = await self._commit_work(current[0], message, agent, lease)
            return current[0]

        plan = await self._session_plan(agent, prompt, ws)
        spec = RunSpec(
            agent_id=agent.id,
            role=role,
            prompt=plan.prompt,
            model=agent.model,
            cwd=Path(ws.worktree_path),
            max_turns=role.max_turns,
            # The reservation taken at claim time is the attempt's hard cap.
            max_budget_usd=agent.reserved_usd or role.max_budget_usd,
            timeout_s=attempt_time_left(
                agent.timeout_s or role.timeout_s, time.monotonic() - claimed
            ),
            attempt=lease.attempt,
            resume_session_id=plan.resume,
            env=agent_vars,
            delegate=AgentDelegate(
                service=self,
                agent=agent,
                lease=lease,
                commit=commit_progress,
                slots=slots,
            ),
            home=self.config.home,
            git_dir=None if ws.repo_path is None else await anyio.to_thread.run_sync(_git_dir, ws),
        )
        transcript = progress.transcript = _TranscriptWriter(self, agent, lease)
        async with anyio.create_task_group() as writing:
            writing.start_soon(transcript.run)
            try:
                progress.ran = True
                result = progress.result = await self.runtime.run(spec, transcript.sink)
            except anyio.get_cancelled_exc_class():
                # Interrupted (shutdown, a cancel, a lost lease): what is queued gets a few
                # seconds to reach the database before the release.
                if not lease_lost():
                    with anyio.CancelScope(shield=True), anyio.move_on_after(TRANSCRIPT_CLOSE_S):
                        await transcript.flush()
                raise
            # What the run said is in the database before its ending: written now when a
            # check follows (it may take long), else with the ending, in its transaction.
            if agent.check.command is None:
                await transcript.hand_over()
            else:
                await transcript.flush()
            writing.cancel_scope.cancel()
        delegate = spec.delegate
        if isinstance(delegate, AgentDelegate) and delegate.question is not None:
            # It asked a person: this attempt ends here, its CLI gone; no check, no merge.
            await self._await_answer(agent, lease, role, delegate.question, result, commit_progress)
            return
        full_timeout_s = agent.timeout_s or role.timeout_s
        if result.error_kind is ErrorKind.TIMEOUT and spec.timeout_s < full_timeout_s:
            # The CLI had what was left after the preparation: say the role's figure.
            result = replace(result, error=f"timed out after {full_timeout_s:g} s (from its claim)")
        result = await self._merge_unmerged_children(spec, result)
        result = progress.result = await self._check(agent, lease, spec, result, transcript)
        result = replace(result, output=self.redact(result.output), error=self.redact(result.error))
        if writes:
            result = await self._commit(agent, current[0], result, lease)
        else:  # nothing committed, but dependents on other machines start from its head
            result = await self._push(agent, current[0], result, lease)
        await self._settle(agent, lease, result, transcript)

    async def _await_answer(
        self,
        agent: AgentRecord,
        lease: Lease,
        role: Role,
        question: Question,
        result: RunResult,
        commit_progress: Callable[[str], Awaitable[WorkspaceRecord]],
    ) -> None:
        """End an attempt that asked a person ``question``: its work so far committed (and
        pushed), then ``executing -> awaiting_input`` with the question, its deadline
        (``question_timeout_s``) and default, and the attempt's usage, in one fenced write."""
        try:
            await commit_progress(f"{agent.role}: work in progress before asking a person")
        except ConflictMarkersLeft as exc:  # the answer resumes with the merge in progress
            await self._warn(agent.id, f"not committed before the question: {exc}")
        timeout = role.question_timeout_s
        deadline = None if timeout is None else utcnow() + timedelta(seconds=timeout)
        spent = replace(_outcome(result), output=None, error=None)
        text = self.redact(question.text)
        choices = tuple(self.redact(c) for c in question.choices)
        if await self.owed(
            agent.id,
            lambda: self.store.await_answer(
                agent.id,
                lease.owner,
                lease.attempt,
                question=text,
                choices=choices,
                deadline_at=deadline,
                default=role.question_default,
                spent=spent,
            ),
        ):
            self._emit(agent.id, "agent.question", {"question": text, "choices": list(choices)})
        else:
            say(
                log,
                "agent.question_not_recorded",
                f"agent {agent.id} attempt {lease.attempt}: question not recorded: {_NOT_OURS}",
                agent=agent.id,
            )

    async def _check(
        self,
        agent: AgentRecord,
        lease: Lease,
        spec: RunSpec,
        result: RunResult,
        transcript: _TranscriptWriter,
    ) -> RunResult:
        """Run the agent's check after a successful run, and while it fails give the agent
        ``fix_rounds`` more tries in the same session (each told the check's exit code and
        output tail), each followed by the check again. The result: the last run's, with the
        tokens, cost and duration of every round and check added up; failed ``check_failed``
        when the check stayed red (or could not run). Each round is recorded on the agent and
        as an ``agent.check`` event, fenced by the lease. A failed run is not checked. The
        rounds share the attempt's budget cap and timeout: none starts without what is left."""
        command = agent.check.command
        if command is None:
            return result
        if not result.success:
            if agent.check.status is not CheckStatus.NONE:
                # An earlier attempt's verdict is not this attempt's: its run was not checked.
                await self._record_check(agent, lease, command, 0, None)
            return result
        role = spec.role
        total = result
        rounds = 0
        while True:
            rounds += 1
            run = await self._run_check(command, spec, role.check_timeout_s)
            total = replace(total, duration_ms=total.duration_ms + run.duration_ms)
            await self._record_check(agent, lease, command, rounds, run)
            if run.passed:
                return total
            failed = f"the check failed ({_check_ending(run)}) after {rounds} round(s): {command}"
            if run.error is not None:
                return _check_failure(total, f"{run.error}: {command}")
            budget_left = spec.max_budget_usd - total.cost_usd
            time_left = spec.timeout_s - total.duration_ms / 1000
            if rounds > role.fix_rounds:
                return _check_failure(total, failed)
            if budget_left < MIN_GRANT_USD or time_left <= 0:
                spent = "budget" if budget_left < MIN_GRANT_USD else "time"
                return _check_failure(total, f"{failed}; no {spent} left for a fix round")
            message = fix_prompt(command, run, tries_left=role.fix_rounds - rounds)
            fix = await self._fix_round(
                transcript,
                replace(
                    spec,
                    prompt=self.redact(message)
                    if total.session_id
                    else f"{spec.prompt}\n\n---\n{self.redact(message)}",
                    resume_session_id=total.session_id,
                    max_budget_usd=budget_left,
                    timeout_s=time_left,
                ),
                command,
            )
            total = replace(
                fix,
                tokens_in=total.tokens_in + fix.tokens_in,
                tokens_out=total.tokens_out + fix.tokens_out,
                cost_usd=total.cost_usd + fix.cost_usd,
                duration_ms=total.duration_ms + fix.duration_ms,
                session_id=fix.session_id or total.session_id,
            )
            if not fix.success:
                return total
            # Children the fix round spawned and never merged: in before the check runs again.
            total = await self._merge_unmerged_children(spec, total)
            if not total.success:
                return total

    async def _fix_round(
        self, transcript: _TranscriptWriter, spec: RunSpec, command: str
    ) -> RunResult:
        """One more run of the agent, its transcript written before it returns (interrupted,
        what is queued gets a few seconds, as for the first run). ``ask_human`` is refused in
        it, naming the check ``command`` (see :meth:`AgentDelegate.ask_human`)."""
        if isinstance(spec.delegate, AgentDelegate):
            spec.delegate.fixing = command
        try:
            fix = await self.runtime.run(spec, transcript.sink)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(TRANSCRIPT_CLOSE_S):
                await transcript.flush()
            raise
        await transcript.flush()
        return fix

    async def _prepare_worktree(
        self, agent: AgentRecord, lease: Lease, ws: WorkspaceRecord, progress: _Progress
    ) -> dict[str, str] | None:
        """``[workspace]`` (see :mod:`agentgrove.worktree_env`): a port block held for the
        attempt, ignored files copied in, setup run once per worktree; the agent's variables,
        or ``None`` when setup failed (the agent is then finished ``setup_failed``, its
        worktree kept)."""
        settings = self.config.workspace
        block = progress.held.enter_context(hold_ports(settings.ports, settings.port_range_start))
        agent_vars = agent_env(agent.id, block)
        if ws.repo_path is None:
            return agent_vars
        cwd = Path(ws.worktree_path)
        copied = functools.partial(copy_files, self.config.root, cwd, list(settings.copy_files))
        for warning in await anyio.to_thread.run_sync(copied):
            await self._warn(agent.id, warning)
        if settings.setup is None or setup_marker(self.config.home, agent.id).exists():
            return agent_vars
        git_dir = await anyio.to_thread.run_sync(_git_dir, ws)
        run = await self._run_confined(
            settings.setup, cwd, git_dir, agent_vars, settings.setup_timeout_s
        )
        if run.passed:
            await anyio.to_thread.run_sync(mark_setup_done, self.config.home, agent.id)
            return agent_vars
        why = run.error or (
            f"killed at its timeout ({settings.setup_timeout_s:g} s)"
            if run.timed_out
            else f"exit code {run.exit_code}"
        )
        message = (
            f"[workspace] setup failed ({why}): {settings.setup}; the worktree is kept at "
            f"{cwd}\n--- setup output ---\n{run.output_tail.rstrip()}"
        )
        await self._finish(agent, lease, _failure(ErrorKind.SETUP_FAILED, self.redact(message)))
        return None

    async def _run_check(self, command: str, spec: RunSpec, timeout_s: float) -> CheckRun:
        """One run of the check on a thread; cancelled, it is killed at once."""
        return await self._run_confined(command, spec.cwd, spec.git_dir, spec.env, timeout_s)

    async def _run_confined(
        self,
        command: str,
        cwd: Path,
        git_dir: Path | None,
        env: Mapping[str, str],
        timeout_s: float,
    ) -> CheckRun:
        """``command`` run like a check (a check, ``[workspace] setup``) on a thread, with
        ``env`` added; cancelled, it is killed at once."""
        stop = threading.Event()
        call = functools.partial(
            run_check,
            command,
            cwd,
            timeout_s=timeout_s,
            home=self.config.home,
            git_dir=git_dir,
            sandbox=self.config.runtime.sandbox,
            env_allow=self.config.runtime.env_allow,
            cancel=stop,
            extra_env=dict(env),
        )
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            stop.set()
            raise

    async def _record_check(
        self, agent: AgentRecord, lease: Lease, command: str, rounds: int, run: CheckRun | None
    ) -> None:
        """Write round ``rounds`` of the check (``run=None``: not checked, status ``none``)."""
        record = CheckRecord(command=command)
        if run is not None:
            record = CheckRecord(
                command=command,
                status=CheckStatus.PASSED if run.passed else CheckStatus.FAILED,
                rounds=rounds,
                exit_code=run.exit_code,
                duration_ms=run.duration_ms,
                output_tail=self.redact(run.output_tail),
            )
        data = {
            "round": rounds,
            "status": record.status.value,
            "exit_code": record.exit_code,
            "duration_ms": record.duration_ms,
            "timed_out": run is not None and run.timed_out,
            "error": run.error if run is not None else "the run failed: not checked",
        }
        await self.owed(
            agent.id,
            lambda: self.store.record_check(agent.id, lease.owner, lease.attempt, record, data),
        )
        self._emit(agent.id, "agent.check", data)

    async def _session_plan(
        self, agent: AgentRecord, prompt: str, ws: WorkspaceRecord
    ) -> SessionPlan:
        """Which session this attempt runs in (see :mod:`agentgrove.sessions`): the earlier
        one only where this machine's runtime has it, else a fresh one told what the earlier
        attempts committed (``ws``: this attempt's worktree, on the branch they pushed) and
        which children they spawned."""
        earlier = None
        if agent.attempt > 1 and agent.workspace is not None:
            children = await self.db(self.store.list_agents, parent_id=agent.id)
            current = await anyio.to_thread.run_sync(self.workspaces.refreshed, ws)
            earlier = EarlierWork(
                branch=current.branch,
                head_commit=current.head_commit,
                files=current.files_changed,
                children=tuple(Child(c.id, c.role, c.status.value) for c in children),
            )
        answer = None
        if earlier is not None:
            taken = await self.owed(
                agent.id, lambda: self.store.take_answer(agent.id, agent.attempt)
            )
            if taken is not None and taken.answer is not None:
                answer = answer_message(
                    taken.question, taken.answer, by_default=taken.answered_by == DEFAULT_BY
                )
        session_id = agent.session_id
        here = False
        if earlier is not None and session_id:
            runtime = self.runtime
            here = not isinstance(runtime, SessionLookup) or await anyio.to_thread.run_sync(
                runtime.has_session, session_id
            )
        plan = plan_session(
            prompt,
            attempt=agent.attempt,
            session_id=session_id,
            session_here=here,
            earlier=earlier,
            answer=answer,
        )
        if earlier is not None:
            data = {"resume": plan.resume, "reason": plan.reason}
            with contextlib.suppress(StoreUnavailable):  # a record for people, not owed
                await self.db(self.store.append_event, agent.id, "agent.session", data)
            self._emit(agent.id, "agent.session", data)
        return plan

    def _prompt_and_base(self, agent: AgentRecord) -> tuple[str, str | None]:
        """The task as the model sees it, and the commit to start from."""
        if not (agent.after_parent and agent.parent_id):
            return agent.task, agent.base_ref
        parent = self.store.get_agent(agent.parent_id)
        head = parent.workspace.head_commit if parent.workspace else None
        prompt = (
            f"{agent.task}\n\n---\nYour parent agent {parent.id} ({parent.role}) finished "
            f"before you; you start from its work. Its final report:\n{parent.output or '(none)'}"
        )
        return prompt, head or agent.base_ref

    async def _commit_work(
        self, ws: WorkspaceRecord, message: str, agent: AgentRecord, lease: Lease
    ) -> WorkspaceRecord:
        trailers = {"Grove-Agent": agent.id, "Grove-Role": agent.role}
        committed = await anyio.to_thread.run_sync(self.workspaces.commit, ws, message, trailers)
        await self.save_workspace(committed, lease)
        # On the remote before a child (maybe on another machine) starts from it.
        pushed = await anyio.to_thread.run_sync(self.workspaces.push, committed)
        if pushed != committed:
            await self.save_workspace(pushed, lease)
        return pushed

    async def _push(
        self, agent: AgentRecord, ws: WorkspaceRecord, result: RunResult, lease: Lease
    ) -> RunResult:
        """With ``[git] remote``, push the agent's branch and record ``pushed_commit`` (before
        the ending, so a completed agent's head is always on the remote). A push failing fails
        a successful run (``internal`` after the retries, ``permanent`` when the remote rejects
        it; the local branch keeps the work); a failed run's ending stands, with a warning."""
        try:
            pushed = await anyio.to_thread.run_sync(self.workspaces.push, ws)
        except PushFailed as exc:
            if not result.success:
                await self._warn(agent.id, str(exc))
                return result
            kind = ErrorKind.PERMANENT if exc.kind == "rejected" else ErrorKind.INTERNAL
            # The run's output, tokens and cost stay recorded: only its ending changes.
            return replace(
                result,
                success=False,
                error_kind=kind,
                error=self.redact(f"{exc} (the work is on the local branch {ws.branch})"),
            )
        if pushed != ws:
            await self.save_workspace(pushed, lease)
        return result

    async def save_workspace(
        self,
        ws: WorkspaceRecord,
        lease: Lease,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> bool:
        """Record ``ws`` (and ``events``) fenced by ``lease``, with other attempts' rows; owed:
        made again while the database is unavailable (``False``: the lease is not ours)."""
        save = WorkspaceSave(ws, (lease.owner, lease.attempt), events)
        return await self._owed_call(ws.agent_id, lambda: self._workspace_saves.submit(save))

    async def _merge_unmerged_children(self, spec: RunSpec, result: RunResult) -> RunResult:
        """The run ended: merge the completed children it never merged (see
        :meth:`AgentDelegate.merge_at_end`), before the final commit."""
        if not isinstance(spec.delegate, AgentDelegate):
            return result
        return await spec.delegate.merge_at_end(result)

    async def _commit(
        self, agent: AgentRecord, ws: WorkspaceRecord, result: RunResult, lease: Lease
    ) -> RunResult:
        """Commit the run's work on the agent's branch, if the lease is still ours: a worker
        that was presumed dead must not add commits behind the back of the one that took over.
        The result to settle: ``result``, or, when files a child's merge left conflicted still
        hold conflict markers, a failure ``merge_conflict`` naming them (nothing committed).
        """
        if ws.repo_path is None:
            return result  # outside git nothing is committed (nor pushed): nothing to guard
        if not await self.owed(
            agent.id,
            lambda: self.store.heartbeat(
                agent.id, lease.owner, lease.attempt, self.config.worker.lease_s
            ),
        ):
            return result
        trailers = {
            "Grove-Agent": agent.id,
            "Grove-Role": agent.role,
            "Grove-Tokens": f"{result.tokens_in} in, {result.tokens_out} out",
            "Grove-Cost-USD": f"{result.cost_usd:.6f}",
        }
        title = agent.task.splitlines()[0][:60]
        outcome = "completed" if result.success else "failed"
        message = f"{agent.role}: {title}\n\nAgent {agent.id} ({outcome})."
        try:
            committed = await anyio.to_thread.run_sync(
                self.workspaces.commit, ws, message, trailers
            )
        except ConflictMarkersLeft as exc:
            if not result.success:  # a retry resumes the session, the merge still in progress
                await self._warn(agent.id, f"not committed: {exc}")
                return result
            failed = _markers_left(result, ws, exc)
            return replace(failed, error=self.redact(failed.error))
        except Exception as exc:
            await self._warn(agent.id, f"commit failed: {exc}")
            return result
        if committed != ws:  # an unisolated workspace comes back unchanged: nothing to record
            await self.save_workspace(committed, lease)
        return await self._push(agent, committed, result, lease)

    async def _settle(
        self, agent: AgentRecord, lease: Lease, result: RunResult, transcript: _TranscriptWriter
    ) -> None:
        if result.success:
            await self._finish(agent, lease, result, transcript.take_tail())
            return
        if result.rate_limited:
            with contextlib.suppress(StoreUnavailable):  # the pace is advice, not owed
                await self.db(
                    self.store.record_rate_limit,
                    self.pacer,
                    agent.model,
                    time.time(),
                    result.retry_after_s,
                )
        decision = decide(
            result.error_kind,
            lease.attempt,
            agent.max_attempts,
            jitter=random.random(),
            retry_after_s=result.retry_after_s,
            base_s=self.config.worker.retry_base_s,
        )
        if decision.retry:
            await transcript.write_tail()
            not_before = utcnow() + timedelta(seconds=decision.delay_s)
            await self.owed(
                agent.id,
                lambda: self.store.release(
                    agent.id,
                    lease.owner,
                    lease.attempt,
                    refund_attempt=False,
                    reason=result.error or "retry",
                    not_before=not_before,
                    spent=_outcome(result),
                ),
            )
            self._emit(
                agent.id, "agent.retry", {"delay_s": decision.delay_s, "error": result.error}
            )
            return
        await self._finish(agent, lease, result, transcript.take_tail())

    async def _finish(
        self,
        agent: AgentRecord,
        lease: Lease,
        result: RunResult,
        tail: Sequence[TranscriptMessage] = (),
    ) -> None:
        """The attempt's ending, with ``tail`` (the transcript's last messages, handed over by
        :meth:`_TranscriptWriter.hand_over`) written in the same transaction."""
        outcome = _outcome(result)
        ending = Ending(agent.id, lease.owner, lease.attempt, outcome, tail)
        if await self._owed_call(agent.id, lambda: self._endings.submit(ending)) or await self.db(
            self._recorded, agent.id, lease, outcome
        ):
            self._emit(agent.id, f"agent.{outcome.status.value}", {"error": result.error})
            if (
                agent.workflow_run_id
                and agent.node_key is not None
                and outcome.status is AgentStatus.COMPLETED
            ):
                # The run's result branch, if this completed the run (never fails the agent).
                # Only a node's completion can complete a run: a node's delegated children
                # carry its run id but no node key.
                ws = self.workspaces
                await after_node_completed(
                    self.store,
                    ws.repo,
                    agent.workflow_run_id,
                    remote=ws.remote,
                    push_retry_s=ws.push_retry_s,
                )
        else:
            say(
                log,
                "agent.result_not_recorded",
                f"agent {agent.id} attempt {lease.attempt}: result not recorded: {_NOT_OURS}",
                agent=agent.id,
            )

    def _recorded(self, agent_id: str, lease: Lease, outcome: RunOutcome) -> bool:
        """Whether a fenced end-of-attempt write that answered "no match" had in fact committed
        (after a dropped connection, unheard): the row shows this attempt's ending."""
        try:
            row = self.store.get_agent(agent_id)
        except Exception:
            return False
        return (
            row.attempt == lease.attempt
            and row.status is outcome.status
            and row.lease_owner is None
            and row.finished_at is not None
        )

    def fenced(self, agent_id: str, write: Callable[[], bool], tries: int = 3) -> bool:
        """Make a write fenced by the lease, again after a transient database error: such a
        write is idempotent (made twice, the second matches nothing or changes nothing), so a
        dropped connection costs neither the attempt's result nor a second run. ``False``: the
        lease is no longer ours (or the write committed unheard, which is the same to us)."""
        for _ in range(tries - 1):
            try:
                return write()
            except Exception as exc:
                if not self.store.transient(exc):
                    raise
                cause = getattr(exc, "orig", None) or exc
                say(
                    log,
                    "database.unavailable",
                    f"agent {agent_id}: database error, writing again: {cause}",
                    agent=agent_id,
                )
        return write()

    async def _warn(self, agent_id: str, message: str) -> None:
        try:
            await self.db(self.store.append_event, agent_id, "agent.warning", {"message": message})
        except StoreUnavailable:
            say(log, "agent.warning", f"agent {agent_id}: {message}", agent=agent_id)
        self._emit(agent_id, "agent.warning", {"message": message})

    def _emit(self, agent_id: str, kind: str, data: dict[str, Any]) -> None:
        if self.observer is not None:
            self.observer(agent_id, kind, data)


def _outcome(result: RunResult) -> RunOutcome:
    return RunOutcome(
        status=AgentStatus.COMPLETED if result.success else AgentStatus.FAILED,
        output=result.output,
        error=result.error,
        error_kind=None if result.success else (result.error_kind or ErrorKind.INTERNAL),
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        cost_usd=result.cost_usd,
        duration_ms=result.duration_ms,
        session_id=result.session_id,
    )


@dataclass
class _Progress:
    """How far an attempt got, for the ending of one that an error inside grove cut short."""

    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    """What the attempt holds until its end (its port block)."""

    ran: bool = False  # the runtime was started: the model may have been paid
    transcript: _TranscriptWriter | None = None  # once the runtime is about to start
    result: RunResult | None = None  # what the runtime reported, if it returned

    def failure(self, agent: AgentRecord, exc: BaseException) -> RunResult:
        """The attempt failed ``internal``, with what it spent: the result's figures, or the
        whole reservation when the runtime ran and never reported (erring safe), else 0."""
        cause = _leaves(exc)[0]
        message = " ".join(f"{type(cause).__name__}: {cause}".split())[:500]
        known = self.result
        return RunResult(
            success=False,
            error=f"grove error: {message}",
            error_kind=ErrorKind.INTERNAL,
            tokens_in=known.tokens_in if known else 0,
            tokens_out=known.tokens_out if known else 0,
            cost_usd=known.cost_usd if known else (agent.reserved_usd if self.ran else 0.0),
            duration_ms=known.duration_ms if known else 0,
            session_id=known.session_id if known else None,
        )


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)] or [exc]
    return [exc]


def _session_named(kind: str, message: dict[str, Any]) -> str | None:
    """The session id the CLI announces in its ``init`` system message, if this is it."""
    if kind != "SystemMessage" or message.get("subtype") != "init":
        return None
    data = message.get("data")
    session = data.get("session_id") if isinstance(data, dict) else None
    return session if isinstance(session, str) and session else None


def _rate_limited(event: tuple[str, dict[str, Any]]) -> bool:
    """The CLI is retrying a 429: the model's pace must slow down now, not after the run."""
    return event[0] == "agent.api_retry" and event[1].get("status") == 429


def _check_ending(run: CheckRun) -> str:
    return "killed at its timeout" if run.timed_out else f"exit {run.exit_code}"


def _check_failure(result: RunResult, message: str) -> RunResult:
    """``result`` (its output and usage kept) failed ``check_failed`` with ``message``."""
    return replace(result, success=False, error=message, error_kind=ErrorKind.CHECK_FAILED)


def _markers_left(result: RunResult, ws: WorkspaceRecord, exc: ConflictMarkersLeft) -> RunResult:
    """The run fails ``merge_conflict``: a merge of a child it left unresolved. Its work is
    kept: up to the merge on its branch, since then in its worktree (merge still in progress)."""
    return replace(
        result,
        success=False,
        error_kind=ErrorKind.MERGE_CONFLICT,
        error=(
            f"{exc}. Nothing was committed: {ws.branch} holds the work committed before the "
            f"merge; the worktree {ws.worktree_path} keeps the rest, with the merge in progress"
        ),
    )


def _failure(kind: ErrorKind, message: str) -> RunResult:
    return RunResult(success=False, error=message, error_kind=kind)


class _TranscriptWriter:
    """One attempt's transcript, written off the event loop: :meth:`sink` (the runtime's,
    called on the loop) only queues; :meth:`run` writes what is queued in batches of up to
    :data:`TRANSCRIPT_BATCH`, one fenced transaction each, again after a back-off while the
    database is unavailable. The queue is bounded (:data:`TRANSCRIPT_PENDING`): beyond it,
    messages are counted, and the gap is recorded in their place. :meth:`flush` writes the rest.
    """

    def __init__(self, service: AgentService, agent: AgentRecord, lease: Lease) -> None:
        self._service = service
        self._agent = agent
        self._lease = lease
        self._pending: list[TranscriptMessage] = []
        self._tail: list[TranscriptMessage] = []  # handed over to the ending (hand_over)
        self._seq = 0
        self._dropped = 0
        self.lost = False  # the lease is no longer ours: nothing more is written
        self.session_id: str | None = None  # the CLI's session, once it named it
        self._session_saved = False
        self._queued = anyio.Event()
        self._lock = anyio.Lock()

    def sink(self, kind: str, message: dict[str, Any], event: Any) -> None:
        service, agent = self._service, self._agent
        message, event = service.redact(message), service.redact(event)
        if self.lost:
            pass
        elif len(self._pending) < TRANSCRIPT_PENDING:
            self._pending.append((self._seq, kind, message, event, utcnow()))
            self._queued.set()
        else:
            self._dropped += 1
        self._seq += 1
        session = _session_named(kind, message)
        if session is not None and self.session_id is None:
            self.session_id = session
            self._queued.set()
        if event is not None and _rate_limited(event):
            delay_ms = event[1].get("delay_ms")
            retry_after = delay_ms / 1000 if isinstance(delay_ms, int | float) else None
            # Rare (a 429): the pace every worker shares is told at once.
            with contextlib.suppress(StoreUnavailable):
                service.store.record_rate_limit(
                    service.pacer, agent.model, time.time(), retry_after
                )
        if event is not None and service.observer is not None:
            service.observer(agent.id, event[0], event[1])

    async def run(self) -> None:
        """Write batches as messages come, until cancelled (after :meth:`flush`)."""
        while True:
            await self._queued.wait()
            self._queued = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Until everything queued is written, or the lease is known lost."""
        from agentgrove.worker import Backoff  # the worker imports this module

        backoff = Backoff()
        async with self._lock:
            while (self._pending or self._dropped or self._session_unsaved()) and not self.lost:
                try:
                    await self._service.db(self._write_batch)
                except StoreUnavailable as exc:
                    if backoff.failures % 10 == 0:
                        say(
                            log,
                            "database.unavailable",
                            f"agent {self._agent.id}: transcript: {exc} (writing again)",
                            agent=self._agent.id,
                        )
                    await anyio.sleep(backoff.next())
                    continue
                backoff.reset()

    async def hand_over(self) -> None:
        """After the last run: keep what is still queued for the attempt's ending to write in
        its own transaction (:meth:`take_tail`) rather than write it now in another. Written
        now instead when it cannot wait: a gap to record, the session to save, more than one
        batch."""
        async with self._lock:
            if self.lost or not self._pending:
                return
            if not (
                self._dropped or self._session_unsaved() or len(self._pending) > TRANSCRIPT_BATCH
            ):
                self._tail, self._pending = self._pending, []
                return
        await self.flush()

    def take_tail(self) -> list[TranscriptMessage]:
        """The messages :meth:`hand_over` kept, now the caller's to write (once)."""
        tail, self._tail = self._tail, []
        return tail

    async def write_tail(self) -> None:
        """Write the handed-over messages after all, in a transaction of their own: for an
        ending that does not carry them (a release)."""
        if self._tail:
            self._pending[:0] = self.take_tail()
            await self.flush()

    def _session_unsaved(self) -> bool:
        return self.session_id is not None and not self._session_saved

    def _write_batch(self) -> None:
        """One transaction; on a worker thread. The queue is trimmed here, with the commit,
        so a flush cancelled while this runs does not write the batch again. The session id,
        once named, is recorded first (its own fenced write): a worker killed mid-run leaves
        it for the retry to resume where the session is."""
        lease = self._lease
        if self.session_id is not None and not self._session_saved:
            held = self._service.store.record_session(
                self._agent.id, lease.owner, lease.attempt, self.session_id
            )
            self._session_saved = True
            if not held:
                self.lost = True
            if self.lost or not (self._pending or self._dropped):
                return
        batch = self._pending[:TRANSCRIPT_BATCH]
        dropped = self._dropped
        if dropped and len(batch) < TRANSCRIPT_BATCH:
            gap = {"dropped": dropped, "reason": "the database was unavailable"}
            batch = [*batch, (self._seq, "TranscriptGap", gap, None, utcnow())]
        else:
            dropped = 0
        held = self._service.store.record_messages(
            self._agent.id, lease.owner, lease.attempt, batch
        )
        del self._pending[: len(batch) - (1 if dropped else 0)]
        self._dropped -= dropped
        if not held:
            self.lost = True


def _git_dir(ws: WorkspaceRecord) -> Path | None:
    """The main repository's git directory, as grove knows it (never from the worktree's own
    ``.git`` file, which the agent could have rewritten)."""
    return None if ws.repo_path is None else common_dir(Path(ws.repo_path))


def attempt_time_left(timeout_s: float, spent_s: float) -> float:
    """What is left of an attempt's ``timeout_s`` for the CLI once ``spent_s`` went on getting
    the worktree ready since the claim (a role's timeout bounds the attempt, not the CLI alone:
    a 3 s role failed 8 s after its claim). Never less than a tenth of a second (or the whole
    timeout, when shorter), so an attempt whose preparation took all its time still ends as a
    timeout the usual way."""
    return max(min(0.1, timeout_s), timeout_s - spent_s)


def _not_outage(exc: BaseException) -> bool:
    """A group commit's failure worth retrying item by item: not the database being away
    (each caller retries that itself)."""
    return not isinstance(exc, StoreUnavailable)
