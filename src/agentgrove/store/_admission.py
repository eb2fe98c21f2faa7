"""Admission inside the claim's transaction: count what is running, ask the gate what to pass
over, and pick the claim statement that does (see :mod:`agentgrove.admission`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, func, or_, select, text, update

from agentgrove.admission import Exclusions, ModelPacer, RunningCounts
from agentgrove.models import AgentStatus
from agentgrove.store import _leases
from agentgrove.store._core import StoreCore
from agentgrove.store._pace import PaceState, load_pace
from agentgrove.store._schema import agents

if TYPE_CHECKING:
    from agentgrove.settings import AdmissionSettings  # pydantic: loaded where validated

WAITING_FOR_CHILDREN = "waiting for its children"
"""``wait_reason`` of an executing parent inside ``wait_agents``: it holds no slot meanwhile."""

ADVISORY_LOCK_KEY = 7316
"""Shared with the budget reservation: claims that count or reserve run one at a time."""
ADVISORY_LOCK = text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")

_NOTHING = ""  # stands in for an empty list in NOT IN: no role or model has an empty name


class Gate(Protocol):
    """Admission for a claim (implemented by :class:`agentgrove.admission.AdmissionGate`)."""

    settings: AdmissionSettings
    pacer: ModelPacer

    def exclusions(self, running: Callable[[], RunningCounts]) -> Exclusions: ...

    def started(self, model: str) -> None: ...


class AdmissionQueries(StoreCore):
    _claim_statements: dict[str, Any]
    _gated_claim_statements: dict[str, Any]

    def _admissible(
        self, conn: Connection, gate: Gate, kind: str, params: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], PaceState] | None:
        """The claim statement of ``kind`` and its parameters with the gate's exclusions
        applied, and the shared pace as loaded (for :func:`save_pace` after the start); or
        ``None`` when nothing may start."""
        pace = load_pace(conn, gate.pacer)
        if conn.dialect.name == "postgresql" and (pace or gate.settings.rpm_per_model):
            # Two claims must not both take the pace's last token: read it again, serialised.
            conn.execute(ADVISORY_LOCK)
            pace = load_pace(conn, gate.pacer)
        excluded = gate.exclusions(lambda: _count_running(conn))
        if excluded.full is not None:
            return None
        if not excluded.roles and not excluded.models:
            return self._claim_statements[kind], params, pace
        return (
            self._gated_claim_statements[kind],
            params
            | {
                "p_skip_roles": sorted(excluded.roles) or [_NOTHING],
                "p_skip_models": sorted(excluded.models) or [_NOTHING],
            },
            pace,
        )

    def mark_waiting_for_children(
        self, agent_id: str, owner: str, attempt: int, waiting: bool
    ) -> bool:
        """Record (fenced by the lease) that an executing parent waits for its children, or no
        longer does; admission does not count it meanwhile and ``grove ls`` shows it."""
        with self._write(wake=waiting) as conn:  # a slot freed may let another agent start
            result = conn.execute(
                update(agents)
                .where(_leases.fence(agent_id, owner, attempt))
                .values(wait_reason=WAITING_FOR_CHILDREN if waiting else None)
            )
            return result.rowcount == 1

    def running_counts(self) -> RunningCounts:
        """Agents executing now, as admission counts them (a read: for display)."""
        with self._read() as conn:
            return _count_running(conn, lock=False)


def _count_running(conn: Connection, *, lock: bool = True) -> RunningCounts:
    if lock and conn.dialect.name == "postgresql":
        # Two claims must not both see the last free slot.
        conn.execute(ADVISORY_LOCK)
    # A parent waiting for the children it delegated to gives its slot back (as in the
    # worker), so a role limit of 1 cannot deadlock a parent and a child of the same role. Only
    # while it waits (recorded by :meth:`AdmissionQueries.mark_waiting_for_children`): a parent
    # that spawned a child and works on beside it still counts.
    rows = conn.execute(
        select(agents.c.role, agents.c.model, func.count())
        .where(
            agents.c.status == AgentStatus.EXECUTING.value,
            or_(agents.c.wait_reason.is_(None), agents.c.wait_reason != WAITING_FOR_CHILDREN),
        )
        .group_by(agents.c.role, agents.c.model)
    ).all()
    by_role: Counter[str] = Counter()
    by_model: Counter[str] = Counter()
    for role, model, count in rows:
        by_role[role] += count
        by_model[model] += count
    return RunningCounts(total=sum(by_role.values()), by_role=by_role, by_model=by_model)
