"""Delegation from inside a running agent: the service side of the orchestrator tools.

Contracts:

* ``spawn_agent`` commits the parent's worktree first and starts the child from that commit, so
  the child sees the parent's work so far. Role, task, fan-out (``max_children`` of the parent's
  role), depth (``max_depth``) and the parent's ``may_spawn`` are checked first; a refusal is a
  tool error, not a crash.
* A child never gets more than its parent: what an agent may do is its role clamped by every
  ancestor's (:func:`effective_role`, computed from the chain of parents whenever it runs, so
  no stored copy can drift or be widened).
* ``wait_agents`` parks the caller's concurrency slot while it waits (so a parent waiting for
  its children never deadlocks a worker, even at concurrency 1) and takes it back after.
* Children's work flows back (:mod:`agentgrove.child_merges` decides, per child): when
  ``wait_agents`` returns, each completed child it named is merged into the caller's worktree,
  in spawn order, after the caller's own work is committed; ``merge_agent`` does the same for
  one child; :meth:`AgentDelegate.merge_at_end` merges the completed children the caller never
  merged when its run ends. A conflict stays in progress for the caller to resolve; later
  children wait for that (:data:`~agentgrove.child_merges.BLOCKED`).
* ``wait_agents`` and ``merge_agent`` accept only the caller's own direct children: any other
  id refuses the whole call (nothing waited for, nothing merged). A parent must not pull another
  tree's work into its branch, nor hold its slot parked on agents it does not own.
* ``ask_human`` takes one question per attempt (bounded, storable text); it writes nothing
  itself: the runtime ends the run after the call, and the service records the question as the
  attempt's ending (:meth:`agentgrove.store.Store.await_answer`), so a question is never
  recorded for an attempt that goes on running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from agentgrove.child_merges import (
    BLOCKED,
    OUTSIDE_GIT,
    ChildMerge,
    Outcome,
    Report,
    decide,
    in_spawn_order,
    not_children,
    summary,
)
from agentgrove.errors import GroveError, StoreUnavailable
from agentgrove.gitexec import GitError
from agentgrove.models import (
    AgentRecord,
    AgentStatus,
    ErrorKind,
    SpawnRequest,
    WorkspaceRecord,
    unstorable,
)
from agentgrove.roles import Role, clamp, spawn_refusal
from agentgrove.runtime import DelegationRefused, RunResult
from agentgrove.workspaces import ConflictMarkersLeft, branch_name

T = TypeVar("T")

if TYPE_CHECKING:
    from agentgrove.service import AgentService, Lease
    from agentgrove.store import Store

WAIT_POLL_S = 0.2
MAX_QUESTION = 10_000
"""Characters of a question, at most (a person reads it in a notification and a terminal)."""
MAX_CHOICES = 20
MAX_CHOICE = 500


@dataclass(frozen=True)
class Question:
    """A question an attempt asked (``ask_human``), not recorded yet."""

    text: str
    choices: tuple[str, ...] = ()


def question_refusal(text: str, choices: Sequence[str]) -> str | None:
    """Why grove will not take this question to a person, or ``None``. Pure."""
    if not text.strip():
        return "the question is empty: say what you need to know"
    if len(text) > MAX_QUESTION:
        return f"the question is {len(text)} characters long; ask in at most {MAX_QUESTION}"
    if len(choices) > MAX_CHOICES:
        return f"{len(choices)} choices; offer at most {MAX_CHOICES}"
    for value in (text, *choices):
        problem = unstorable(value)
        if problem is not None:
            return f"the question {problem}"
    for choice in choices:
        if not choice.strip() or len(choice) > MAX_CHOICE:
            return f"each choice must be 1 to {MAX_CHOICE} characters"
    return None


class Slots(Protocol):
    """The worker's concurrency accounting for one running agent."""

    def park(self) -> None: ...

    def unpark(self) -> None: ...


class NoSlots:
    def park(self) -> None:
        pass

    def unpark(self) -> None:
        pass


def effective_role(roles: Mapping[str, Role], store: Store, agent: AgentRecord) -> Role | None:
    """``agent``'s role clamped by each ancestor's, root first (see :func:`roles.clamp`);
    ``None`` when its role or an ancestor's is no longer configured (fail closed)."""
    chain = [agent]
    while chain[-1].parent_id is not None:
        chain.append(store.get_agent(chain[-1].parent_id))
    effective: Role | None = None
    for member in reversed(chain):
        role = roles.get(member.role)
        if role is None:
            return None
        effective = role if effective is None else clamp(role, effective)
    return effective


@dataclass
class AgentDelegate:
    """Implements :class:`agentgrove.runtime.Delegate` for one claimed attempt."""

    service: AgentService
    agent: AgentRecord
    lease: Lease
    commit: Callable[[str], Awaitable[WorkspaceRecord]]
    slots: Slots
    question: Question | None = field(default=None, init=False)
    """What the attempt asked a person (``ask_human``), once it has."""
    fixing: str | None = field(default=None, init=False)
    """The check command, once the attempt is in a fix round: ``ask_human`` refuses then."""
    _worktree_git: anyio.Lock = field(default_factory=anyio.Lock, init=False, repr=False)
    """Held while grove runs git in the caller's worktree for a tool call: the model may call
    tools concurrently, and two commits or merges at once would collide on git's index lock."""

    async def spawn_agent(self, role: str, task: str) -> str:
        roles = self.service.config.roles
        own = effective_role(roles, self.service.store, self.agent)
        if role not in roles:
            raise DelegationRefused(f"unknown role {role!r}; roles: {', '.join(sorted(roles))}")
        if not task.strip():
            raise DelegationRefused("the task is empty: say what the child should do")
        if own is None:
            raise DelegationRefused(f"role {self.agent.role!r} is no longer configured")
        refusal = spawn_refusal(own, roles[role])
        if refusal is not None:
            raise DelegationRefused(refusal)
        if self.agent.depth >= own.max_depth:
            raise DelegationRefused(
                f"depth limit: a {self.agent.role} at depth {self.agent.depth} may not spawn "
                f"(max_depth {own.max_depth}); do the work yourself"
            )
        children = self.service.store.count_children(self.agent.id)
        if children >= own.max_children:
            raise DelegationRefused(
                f"fan-out limit: this {self.agent.role} already has {children} children "
                f"(max_children {own.max_children})"
            )
        try:
            async with self._worktree_git:
                ws = await self.commit(
                    f"{self.agent.role}: work in progress before spawning {role}"
                )
        except ConflictMarkersLeft as exc:
            # Committing now would commit the markers: the child would start from them.
            raise DelegationRefused(f"{exc}; then spawn") from None
        try:
            child = self.service.spawn(
                SpawnRequest(role, task, parent_id=self.agent.id, base=ws.head_commit)
            )
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
        return child.id

    async def wait_agents(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        store = self.service.store
        full = await self._own_children(ids, "wait_agents")
        self.slots.park()
        try:
            self._mark_waiting(True)
            with anyio.move_on_after(max(0.0, timeout_s)):
                while not all(store.get_agent(i).status.finished for i in full):
                    await anyio.sleep(WAIT_POLL_S)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    self._mark_waiting(False)
            finally:
                self.slots.unpark()
        children = in_spawn_order(await self._children(), full)
        return (await self.merge_children(children)).summaries()

    async def merge_agent(self, agent_id: str) -> dict[str, Any]:
        [child_id] = await self._own_children([agent_id], "merge_agent")
        [child] = in_spawn_order(await self._children(), [child_id])
        [entry] = (await self.merge_children([child])).summaries()
        return entry

    async def _children(self) -> list[AgentRecord]:
        """The caller's direct children, in spawn order."""
        return await self.service.children(self.agent.id)

    async def _own_children(self, ids: Sequence[str], tool: str) -> list[str]:
        """``ids`` resolved to full ids, each one of the caller's direct children; otherwise
        :class:`DelegationRefused` (unknown, or someone else's), and nothing is done."""
        store = self.service.store
        try:
            full = [await self.service.db(store.resolve_id, i) for i in ids]
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
        strangers = not_children(await self._children(), full)
        if strangers:
            raise DelegationRefused(
                f"{', '.join(strangers)} {'is' if len(strangers) == 1 else 'are'} not your "
                f"child: {tool} takes only agents you spawned with spawn_agent"
            )
        return full

    async def merge_children(self, children: Sequence[AgentRecord]) -> Report:
        """Merge each of ``children`` (the caller's, in spawn order) that completed and is not
        yet in the caller's history into its worktree, after committing the caller's own work
        (which concludes a merge it resolved); one entry per child (see
        :mod:`agentgrove.child_merges`). No merge starts while one is in progress: the first
        conflict stays, markers in the files, and the children after it wait for it."""
        async with self._worktree_git:
            return await self._merge_children(children)

    async def _merge_children(self, children: Sequence[AgentRecord]) -> Report:
        report = Report()
        ws, blocked = await self._commit_before_merging(children)
        workspaces = self.service.workspaces
        for child in children:
            head = child.workspace.head_commit if child.workspace else None
            isolated = ws is not None and ws.repo_path is not None
            contained = (
                ws is not None
                and isolated
                and head is not None
                and await self._git(workspaces.contains, ws, head)
            )
            skip = decide(child, contained=contained, blocked=blocked)
            if skip is None and (ws is None or not isolated or head is None):
                skip = ChildMerge(child, Outcome.NOT_MERGED, detail=OUTSIDE_GIT)
            if skip is not None:
                report.entries.append(skip)
                continue
            assert ws is not None and head is not None
            message = f"grove: merge {child.role} {child.id}"
            try:
                merged = await self._git(workspaces.merge_child, ws, head, message)
            except GitError as exc:
                entry = ChildMerge(child, Outcome.NOT_MERGED, detail=f"not merged: {exc}")
            else:
                blocked = bool(merged.conflicted)
                entry = (
                    ChildMerge(child, Outcome.CONFLICTED, merged.conflicted, commit=head)
                    if blocked
                    else ChildMerge(child, Outcome.MERGED, merged.files, commit=head)
                )
            report.entries.append(entry)
        if ws is not None and any(e.outcome is Outcome.MERGED for e in report.entries):
            await self._save(await self._git(workspaces.refreshed, ws))
        if report.entries:
            await self._record(report)
        return report

    async def _commit_before_merging(
        self, children: Sequence[AgentRecord]
    ) -> tuple[WorkspaceRecord | None, bool]:
        """Commit the caller's work when a child may be merged; its workspace, and whether a
        merge is (still) in progress there (an earlier conflict it has not resolved)."""
        if not any(c.status is AgentStatus.COMPLETED for c in children):
            return None, False
        try:
            ws = await self.commit(f"{self.agent.role}: work in progress before merging children")
        except ConflictMarkersLeft:
            return await self._workspace(), True
        except GroveError as exc:
            raise DelegationRefused(
                f"your work could not be committed before merging: {exc}"
            ) from exc
        # A caller that cannot write commits nothing: ask git.
        return ws, await self._git(self.service.workspaces.merge_in_progress, ws)

    async def _save(self, ws: WorkspaceRecord) -> None:
        await self.service.save_workspace(ws, self.lease)

    async def merge_at_end(self, result: RunResult) -> RunResult:
        """When the caller's run ended well: merge its completed children it has not merged
        yet (children still running are not merged: their work stays on their branches). A
        conflict cannot be resolved any more: the merge is undone (the caller's work, committed
        just before, stays on its branch) and the result fails ``merge_conflict`` naming the
        paths. Otherwise ``result`` unchanged."""
        if not result.success:
            return result
        done = [c for c in await self._children() if c.status is AgentStatus.COMPLETED]
        if not done:
            return result
        report = await self.merge_children(done)
        conflicts = [e for e in report.entries if e.outcome is Outcome.CONFLICTED]
        refused = [e for e in report.entries if e.outcome is Outcome.NOT_MERGED]
        if refused and not conflicts:
            lines = "; ".join(f"{e.child.id}: {e.detail}" for e in refused)
            with contextlib.suppress(StoreUnavailable):
                await self.service.db(
                    self.service.store.append_event,
                    self.agent.id,
                    "agent.warning",
                    {"message": f"children not merged at the end of the run: {lines}"},
                )
        if not conflicts:
            return result
        ws = await self._workspace()
        if ws is not None:
            await self._git(self.service.workspaces.abort_merge, ws)
        [entry] = conflicts
        unmerged = [entry.child.id, *(e.child.id for e in report.entries if e.detail == BLOCKED)]
        error = (
            f"merging child {entry.child.id} ({entry.child.role}) at the end of the run "
            f"conflicts in: {', '.join(entry.files)}; the merge was undone, the work is "
            f"committed on {ws.branch if ws else 'your branch'}, and the work not merged stays "
            f"on {', '.join(branch_name(i) for i in unmerged)}"
        )
        return replace(result, success=False, error=error, error_kind=ErrorKind.MERGE_CONFLICT)

    async def _workspace(self) -> WorkspaceRecord | None:
        record = await self.service.db(self.service.store.get_agent, self.agent.id)
        return record.workspace

    async def _git(self, fn: Callable[..., T], /, *args: Any) -> T:
        """A git call of :class:`~agentgrove.workspaces.Workspaces`, off the event loop."""
        return await anyio.to_thread.run_sync(fn, *args)

    async def _record(self, report: Report) -> None:
        """One event for the pass: what came back from each child (advice, not owed)."""
        data = {
            "children": [
                {"id": e.child.id, "result": e.outcome.value, "files": list(e.files)}
                for e in report.entries
            ]
        }
        with contextlib.suppress(StoreUnavailable):
            await self.service.db(
                self.service.store.append_event, self.agent.id, "agent.children_merged", data
            )

    def _mark_waiting(self, waiting: bool) -> None:
        """Record on the parent's row whether it waits (admission does not count it then),
        again after a transient database error: a mark left set would keep a working parent
        out of the counts."""
        self.service.fenced(
            self.agent.id,
            lambda: self.service.store.mark_waiting_for_children(
                self.agent.id, self.lease.owner, self.lease.attempt, waiting
            ),
        )

    async def ask_human(self, question: str, choices: list[str]) -> str:
        if self.fixing is not None:
            # A question ends the attempt, and the answer's attempt would start the check and
            # its fix rounds afresh (with a question_default, without end): refused instead.
            raise DelegationRefused(
                f"no questions in a fix round: the check `{self.fixing}` failed after your "
                "work, and this round is for making it pass. Fix what it reports; if you "
                "cannot, end your turn saying what you would need (a person reads it if the "
                "check stays red)"
            )
        if self.question is not None:
            raise DelegationRefused(
                "you already asked a question in this run: wait for its answer, which comes "
                "as your next message"
            )
        refusal = question_refusal(question, choices)
        if refusal is not None:
            raise DelegationRefused(refusal)
        self.question = Question(question.strip(), tuple(c.strip() for c in choices))
        return (
            "Your question is recorded and goes to a person. Stop here: do not call any more "
            "tools. Your work so far is committed; the answer comes as your next message, in "
            "this same conversation."
        )

    def asked(self) -> bool:
        return self.question is not None

    async def agent_result(self, agent_id: str) -> dict[str, Any]:
        try:
            record = self.service.store.get_agent(self.service.store.resolve_id(agent_id))
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
        result = summary(record)
        ws = record.workspace
        result |= {
            "branch": ws.branch if ws else None,
            "head_commit": ws.head_commit if ws else None,
            "files_changed": list(ws.files_changed) if ws else [],
        }
        return result


__all__ = [
    "AgentDelegate",
    "NoSlots",
    "Question",
    "Slots",
    "effective_role",
    "question_refusal",
]
