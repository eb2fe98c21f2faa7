"""Admission inside the claim's transaction: count what is running, ask the gate what to pass
over, and pick the claim statement that does (see :mod:`agentgrove.admission`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, exists, func, select, text

from agentgrove.admission import Exclusions, RunningCounts
from agentgrove.models import AgentStatus
from agentgrove.store._core import StoreCore
from agentgrove.store._schema import agents

ADVISORY_LOCK_KEY = 7316
"""Shared with the budget reservation: claims that count or reserve run one at a time."""
ADVISORY_LOCK = text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")

_NOTHING = ""  # stands in for an empty list in NOT IN: no role or model has an empty name


class Gate(Protocol):
    """Admission for a claim (implemented by :class:`agentgrove.admission.AdmissionGate`)."""

    def exclusions(self, running: Callable[[], RunningCounts]) -> Exclusions: ...

    def started(self, model: str) -> None: ...


_child = agents.alias("child")


class AdmissionQueries(StoreCore):
    _claim_statements: dict[str, Any]
    _gated_claim_statements: dict[str, Any]

    def _admissible(
        self, conn: Connection, gate: Gate, kind: str, params: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]] | None:
        """The claim statement of ``kind`` and its parameters with the gate's exclusions
        applied, or ``None`` when nothing may start."""
        excluded = gate.exclusions(lambda: _count_running(conn))
        if excluded.full is not None:
            return None
        if not excluded.roles and not excluded.models:
            return self._claim_statements[kind], params
        return self._gated_claim_statements[kind], params | {
            "p_skip_roles": sorted(excluded.roles) or [_NOTHING],
            "p_skip_models": sorted(excluded.models) or [_NOTHING],
        }

    def running_counts(self) -> RunningCounts:
        """Agents executing now, as admission counts them (a read: for display)."""
        with self._read() as conn:
            return _count_running(conn, lock=False)


def _count_running(conn: Connection, *, lock: bool = True) -> RunningCounts:
    if lock and conn.dialect.name == "postgresql":
        # Two claims must not both see the last free slot.
        conn.execute(ADVISORY_LOCK)
    # A parent waiting for children it delegated to gives its slot back (as in the worker),
    # so a role limit of 1 cannot deadlock a parent and a child of the same role.
    waiting_parent = exists().where(
        _child.c.parent_id == agents.c.id,
        _child.c.after_parent.is_(False),
        _child.c.status.in_([AgentStatus.PENDING.value, AgentStatus.EXECUTING.value]),
    )
    rows = conn.execute(
        select(agents.c.role, agents.c.model, func.count())
        .where(agents.c.status == AgentStatus.EXECUTING.value, ~waiting_parent)
        .group_by(agents.c.role, agents.c.model)
    ).all()
    by_role: Counter[str] = Counter()
    by_model: Counter[str] = Counter()
    for role, model, count in rows:
        by_role[role] += count
        by_model[model] += count
    return RunningCounts(total=sum(by_role.values()), by_role=by_role, by_model=by_model)
