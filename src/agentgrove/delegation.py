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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from agentgrove.errors import GroveError
from agentgrove.models import AgentRecord, SpawnRequest, WorkspaceRecord
from agentgrove.roles import Role, clamp, spawn_refusal
from agentgrove.runtime import DelegationRefused

if TYPE_CHECKING:
    from agentgrove.service import AgentService, Lease
    from agentgrove.store import Store

WAIT_POLL_S = 0.2


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
        ws = await self.commit(f"{self.agent.role}: work in progress before spawning {role}")
        try:
            child = self.service.spawn(
                SpawnRequest(role, task, parent_id=self.agent.id, base=ws.head_commit)
            )
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
        return child.id

    async def wait_agents(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        store = self.service.store
        try:
            full = [store.resolve_id(i) for i in ids]
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
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
        return [_summary(store.get_agent(i)) for i in full]

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

    async def agent_result(self, agent_id: str) -> dict[str, Any]:
        try:
            record = self.service.store.get_agent(self.service.store.resolve_id(agent_id))
        except GroveError as exc:
            raise DelegationRefused(str(exc)) from exc
        summary = _summary(record)
        ws = record.workspace
        summary |= {
            "branch": ws.branch if ws else None,
            "head_commit": ws.head_commit if ws else None,
            "files_changed": list(ws.files_changed) if ws else [],
        }
        return summary


def _summary(agent: AgentRecord) -> dict[str, Any]:
    return {
        "id": agent.id,
        "role": agent.role,
        "status": agent.status.value,
        "output": agent.output,
        "error": agent.error,
    }


__all__ = ["AgentDelegate", "NoSlots", "Slots", "effective_role"]
