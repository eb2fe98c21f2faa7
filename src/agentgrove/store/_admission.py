"""Admission inside the claim's transaction: count what is running, ask the gate, and undo
the claim of an agent that may not start yet (see :mod:`agentgrove.admission`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, and_, case, exists, func, select, text, update

from agentgrove.admission import Refusal, Running
from agentgrove.models import AgentStatus
from agentgrove.store._core import StoreCore
from agentgrove.store._schema import agents

ADVISORY_LOCK_KEY = 7316
"""Shared with the budget reservation: claims that count or reserve run one at a time."""


class Gate(Protocol):
    """Decides whether a claimed agent may start. ``running`` counts, on demand, the agents
    executing besides it; the gate calls it only when a concurrency limit applies."""

    def __call__(self, role: str, model: str, running: Callable[[], Running]) -> Refusal | None: ...


_child = agents.alias("child")


class AdmissionQueries(StoreCore):
    def _admit(
        self,
        conn: Connection,
        agent_id: str,
        attempt: int,
        role: str,
        model: str,
        gate: Gate,
        now: datetime,
    ) -> bool:
        """Ask ``gate`` about the agent just claimed in ``conn``; refused, put it back to
        pending (attempt not counted) with the reason shown, to be looked at again later."""

        def running() -> Running:
            return _count_running(conn, agent_id, role, model)

        refusal = gate(role, model, running)
        if refusal is None:
            return True
        shown = conn.execute(select(agents.c.wait_reason).where(agents.c.id == agent_id))
        if shown.scalar_one() != refusal.reason:  # one event per reason, not per recheck
            self._event(conn, agent_id, "agent.waiting", {"reason": refusal.reason}, now)
        conn.execute(
            update(agents)
            .where(agents.c.id == agent_id)
            .values(
                status=AgentStatus.PENDING.value,
                attempt=attempt - 1,
                # Never started before this claim: it has not started now either.
                started_at=agents.c.started_at if attempt > 1 else None,
                lease_owner=None,
                lease_expires_at=None,
                wait_reason=refusal.reason,
                not_before=now + timedelta(seconds=refusal.retry_s),
            )
        )
        return False


def _count_running(conn: Connection, agent_id: str, role: str, model: str) -> Running:
    if conn.dialect.name == "postgresql":
        # Two claims must not both see the last free slot.
        conn.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})"))
    # A parent waiting for children it delegated to gives its slot back (as in the worker),
    # so a role limit of 1 cannot deadlock a parent and a child of the same role.
    waiting_parent = exists().where(
        _child.c.parent_id == agents.c.id,
        _child.c.after_parent.is_(False),
        _child.c.status.in_([AgentStatus.PENDING.value, AgentStatus.EXECUTING.value]),
    )
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((agents.c.role == role, 1), else_=0)), 0),
            func.coalesce(func.sum(case((agents.c.model == model, 1), else_=0)), 0),
        ).where(
            and_(
                agents.c.status == AgentStatus.EXECUTING.value,
                agents.c.id != agent_id,
                ~waiting_parent,
            )
        )
    ).one()
    return Running(total=int(row[0]), role=int(row[1]), model=int(row[2]))
