"""Budget queries: what each scope has committed, and the reservation taken at claim time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Row, bindparam, func, or_, select, update

from agentgrove.budgets import MIN_GRANT_USD, Grant, Scope, grant
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.store._admission import ADVISORY_LOCK
from agentgrove.store._core import StoreCore
from agentgrove.store._schema import agents, events, workflow_runs

BUDGET_RETRY_S = 5.0
"""A pending agent held back for budget is looked at again after this long."""


class BudgetQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    daily_limit_usd: float | None = None
    fail_when_exhausted: bool = False

    def scopes_for(self, conn: Connection, agent_id: str, now: datetime) -> list[Scope]:
        """Every limited scope the agent belongs to, with what each has committed."""
        return self._scopes(conn, conn.execute(_LIMITS, {"p_id": agent_id}).all(), now)

    def _scopes(
        self, conn: Connection, limits: Sequence[Row[*tuple[Any, ...]]], now: datetime
    ) -> list[Scope]:
        """The limited scopes among ``limits`` (rows of :data:`_LIMITS`) and the daily one.
        What a scope has committed is only summed when it has a limit, so an agent under no
        limit costs one query."""
        scopes: list[Scope] = []
        if self.daily_limit_usd is not None:
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            committed = conn.execute(_DAILY_COMMITTED, {"p_start": start}).scalar_one()
            scopes.append(Scope("daily", self.daily_limit_usd, float(committed)))
        run_limits: dict[str, float | None] = {}
        for row in limits:
            if row.budget_usd is not None:
                scopes.append(
                    Scope(f"tree {row.id}", row.budget_usd, self._tree_committed(conn, row.id))
                )
            if row.workflow_run_id:
                run_limits[row.workflow_run_id] = row.run_budget_usd
        for run_id, limit in run_limits.items():
            if limit is not None:
                committed = conn.execute(_RUN_COMMITTED, {"p_run": run_id}).scalar_one()
                scopes.append(Scope(f"run {run_id}", limit, float(committed)))
        return scopes

    def _tree_committed(self, conn: Connection, root_id: str) -> float:
        spent, reserved = self._tree_figures(conn, root_id)
        return spent + reserved

    def _tree_figures(self, conn: Connection, root_id: str) -> tuple[float, float]:
        spent, reserved = conn.execute(_TREE_SUMS, {"p_root": root_id}).one()
        return float(spent), float(reserved)

    def budget_report(
        self, now: datetime, daily_limit_usd: float | Literal["configured"] | None = "configured"
    ) -> list[tuple[str, float, float, float]]:
        """Each limited scope as (name, limit, reserved, spent); ``daily_limit_usd``: the
        daily limit to report instead of the one this store was opened with."""
        rows: list[tuple[str, float, float, float]] = []
        daily = self.daily_limit_usd if daily_limit_usd == "configured" else daily_limit_usd
        with self._read() as conn:
            if daily is not None:
                start = now.replace(hour=0, minute=0, second=0, microsecond=0)
                spent, reserved = _sums(conn, _TODAY, {"p_start": start})
                rows.append(("daily", daily, reserved, spent))
            for agent_id, limit in conn.execute(
                select(agents.c.id, agents.c.budget_usd).where(agents.c.budget_usd.is_not(None))
            ).all():
                spent, reserved = self._tree_figures(conn, agent_id)
                rows.append((f"tree {agent_id}", limit, reserved, spent))
            for run_id, limit in conn.execute(
                select(workflow_runs.c.id, workflow_runs.c.budget_usd).where(
                    workflow_runs.c.budget_usd.is_not(None)
                )
            ).all():
                spent, reserved = _sums(conn, agents.c.workflow_run_id == run_id)
                rows.append((f"run {run_id}", limit, reserved, spent))
        return rows

    def shares_a_limit(self, limits: Sequence[Row[*tuple[Any, ...]]]) -> bool:
        """Whether an agent with ``limits`` (rows of :data:`_LIMITS`) belongs to a limited
        scope others count against too: the daily limit, a tree's or a run's budget."""
        return self.daily_limit_usd is not None or any(
            row.budget_usd is not None or row.run_budget_usd is not None for row in limits
        )

    def standalone_grant(self, row: Row[Any]) -> Grant | None:
        """The reservation of a just-claimed agent in no limited scope, decided from its
        claimed ``row`` (``parent_id``, ``workflow_run_id``, ``budget_usd``,
        ``max_budget_usd``) without a query: no parent, no workflow run, no tree budget of its
        own and no daily limit leave its cap alone to reserve, always granted. ``None``: the
        agent takes :meth:`reserve`'s path. The caller records the grant
        (:meth:`record_grants`)."""
        if (
            self.daily_limit_usd is not None
            or row.parent_id is not None
            or row.workflow_run_id is not None
            or row.budget_usd is not None
        ):
            return None
        cap = row.max_budget_usd
        if cap is None:
            return Grant(0.0)
        return grant(cap, []) if cap >= MIN_GRANT_USD else None

    def record_grants(self, conn: Connection, grants: Sequence[tuple[str, Grant]]) -> None:
        """Write the reservations of :meth:`standalone_grant` (``(agent_id, grant)``), in one
        statement, inside the claim's transaction."""
        rows = [{"p_id": i, "p_reserved": g.amount_usd} for i, g in grants if g.amount_usd]
        if rows:
            conn.execute(_GRANTED, rows)

    def reserve(self, conn: Connection, agent_id: str, attempt: int, now: datetime) -> Grant:
        """Inside the claim's transaction: reserve the agent's grant, or undo the claim.

        Refused, the agent goes back to pending (attempt not counted) with the reason shown,
        to be looked at again later — or fails ``budget_exceeded`` when so configured.
        """
        # The agent's cap and every ancestor's limits in one query: an agent under no limit
        # (the common case) costs nothing more.
        limits = conn.execute(_LIMITS, {"p_id": agent_id}).all()
        if conn.dialect.name == "postgresql" and self.shares_a_limit(limits):
            # Serialise reservations that count shared money across the database: two claims
            # must not both see the same money left. An agent in no limited scope reserves
            # from nothing shared (its own cap at most) and adds to no limited scope's sum,
            # so its claim does not queue behind every other one. Limits are fixed at spawn:
            # reading them before the lock is safe.
            conn.execute(ADVISORY_LOCK)
        cap = next(row.max_budget_usd for row in limits if row.id == agent_id)
        scopes = self._scopes(conn, limits, now)
        if cap is None and not scopes:
            return Grant(0.0)  # no cap and no limit: nothing to reserve
        decision = grant(cap if cap is not None else min(s.left_usd for s in scopes), scopes)
        if decision.granted:
            conn.execute(_GRANTED, {"p_id": agent_id, "p_reserved": decision.amount_usd})
            return decision
        tight = decision.scope
        if tight is not None and self._first_exhaustion(conn, tight.name, now):
            kind, _, scope_id = tight.name.partition(" ")
            self._event(
                conn,
                agent_id,
                "budget.exhausted",
                {
                    "scope": tight.name,
                    "limit_usd": tight.limit_usd,
                    "committed_usd": tight.committed_usd,
                    "reason": decision.refusal,
                },
                now,
                scope_id if kind == "run" else None,
            )
        if self.fail_when_exhausted:
            conn.execute(
                update(agents)
                .where(agents.c.id == agent_id)
                .values(
                    status=AgentStatus.FAILED.value,
                    error_kind=ErrorKind.BUDGET_EXCEEDED.value,
                    error=decision.refusal,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                )
            )
            self._event(conn, agent_id, "agent.failed", {"error_kind": "budget_exceeded"}, now)
        else:
            # Logged when the wait begins or its reason changes, not at every retry (~5 s):
            # the claim has already cleared wait_reason, so the agent's last event says
            # whether this wait is news.
            last = conn.execute(_LAST_EVENT, {"p_id": agent_id}).first()
            if last is None or (last.kind, last.data.get("reason")) != (
                "agent.waiting_for_budget",
                decision.refusal,
            ):
                self._event(
                    conn, agent_id, "agent.waiting_for_budget", {"reason": decision.refusal}, now
                )
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
                    wait_reason=decision.refusal,
                    not_before=now + timedelta(seconds=BUDGET_RETRY_S),
                )
            )
        return decision


_LAST_EVENT = (
    select(events.c.kind, events.c.data)
    .where(events.c.agent_id == bindparam("p_id"))
    .order_by(events.c.id.desc())
    .limit(1)
)


def _sums(
    conn: Connection, condition: Any, params: dict[str, Any] | None = None
) -> tuple[float, float]:
    spent, reserved = conn.execute(
        select(
            func.coalesce(func.sum(agents.c.cost_usd), 0.0),
            func.coalesce(func.sum(agents.c.reserved_usd), 0.0),
        ).where(condition),
        params or {},
    ).one()
    return float(spent), float(reserved)


# Statements built once and executed with parameters: building SQLAlchemy expressions per call
# costs more CPU than SQLite spends running them (every claim reserves).
_ancestors = (
    select(agents.c.id, agents.c.parent_id)
    .where(agents.c.id == bindparam("p_id"))
    .cte("ancestors", recursive=True)
)
_ancestors = _ancestors.union_all(
    select(agents.c.id, agents.c.parent_id).where(agents.c.id == _ancestors.c.parent_id)
)
_LIMITS = select(
    agents.c.id,
    agents.c.max_budget_usd,
    agents.c.budget_usd,
    agents.c.workflow_run_id,
    select(workflow_runs.c.budget_usd)
    .where(workflow_runs.c.id == agents.c.workflow_run_id)
    .scalar_subquery()
    .label("run_budget_usd"),
).where(agents.c.id.in_(select(_ancestors.c.id)))
"""The agent ``p_id`` and its ancestors: each one's cap, tree limit, run and run limit."""

_subtree = (
    select(agents.c.id).where(agents.c.id == bindparam("p_root")).cte("subtree", recursive=True)
)
_subtree = _subtree.union_all(select(agents.c.id).where(agents.c.parent_id == _subtree.c.id))
_TREE_SUMS = select(
    func.coalesce(func.sum(agents.c.cost_usd), 0.0),
    func.coalesce(func.sum(agents.c.reserved_usd), 0.0),
).where(agents.c.id.in_(select(_subtree.c.id)))
_committed = func.coalesce(func.sum(agents.c.cost_usd + agents.c.reserved_usd), 0.0)
_DAY_START = bindparam("p_start", type_=agents.c.started_at.type)
_TODAY = or_(
    # First claimed today; or first claimed before but running or ended today (a retry after
    # midnight): counted whole, so a limit errs on the safe side.
    agents.c.started_at >= _DAY_START,
    agents.c.finished_at >= _DAY_START,
    agents.c.status == AgentStatus.EXECUTING.value,
)
_DAILY_COMMITTED = select(_committed).where(_TODAY)
_RUN_COMMITTED = select(_committed).where(agents.c.workflow_run_id == bindparam("p_run"))
_GRANTED = (
    update(agents)
    .where(agents.c.id == bindparam("p_id"))
    .values(
        reserved_usd=bindparam("p_reserved", type_=agents.c.reserved_usd.type), wait_reason=None
    )
)
