"""Budget queries: what each scope has committed, and the reservation taken at claim time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, text, update

from agentgrove.budgets import Grant, Scope, grant
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.store._core import StoreCore
from agentgrove.store._schema import agents, workflow_runs

BUDGET_RETRY_S = 5.0
"""A pending agent held back for budget is looked at again after this long."""


class BudgetQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    daily_limit_usd: float | None = None
    fail_when_exhausted: bool = False

    def scopes_for(self, conn: Connection, agent_id: str, now: datetime) -> list[Scope]:
        """Every limited scope the agent belongs to, with what each has committed."""
        scopes: list[Scope] = []
        if self.daily_limit_usd is not None:
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            committed = conn.execute(
                select(
                    func.coalesce(func.sum(agents.c.cost_usd + agents.c.reserved_usd), 0.0)
                ).where(agents.c.started_at >= start)
            ).scalar_one()
            scopes.append(Scope("daily", self.daily_limit_usd, float(committed)))
        ancestors = (
            select(agents.c.id, agents.c.parent_id)
            .where(agents.c.id == agent_id)
            .cte("ancestors", recursive=True)
        )
        ancestors = ancestors.union_all(
            select(agents.c.id, agents.c.parent_id).where(agents.c.id == ancestors.c.parent_id)
        )
        limited = conn.execute(
            select(agents.c.id, agents.c.budget_usd, agents.c.workflow_run_id).where(
                agents.c.id.in_(select(ancestors.c.id))
            )
        ).all()
        for row in limited:
            if row.budget_usd is not None:
                scopes.append(
                    Scope(f"tree {row.id}", row.budget_usd, self._tree_committed(conn, row.id))
                )
        run_ids = {row.workflow_run_id for row in limited if row.workflow_run_id}
        for run_id in run_ids:
            limit = conn.execute(
                select(workflow_runs.c.budget_usd).where(workflow_runs.c.id == run_id)
            ).scalar_one()
            if limit is not None:
                committed = conn.execute(
                    select(
                        func.coalesce(func.sum(agents.c.cost_usd + agents.c.reserved_usd), 0.0)
                    ).where(agents.c.workflow_run_id == run_id)
                ).scalar_one()
                scopes.append(Scope(f"run {run_id}", limit, float(committed)))
        return scopes

    def _tree_committed(self, conn: Connection, root_id: str) -> float:
        spent, reserved = self._tree_figures(conn, root_id)
        return spent + reserved

    def _tree_figures(self, conn: Connection, root_id: str) -> tuple[float, float]:
        tree = select(agents.c.id).where(agents.c.id == root_id).cte("subtree", recursive=True)
        tree = tree.union_all(select(agents.c.id).where(agents.c.parent_id == tree.c.id))
        return _sums(conn, agents.c.id.in_(select(tree.c.id)))

    def budget_report(self, now: datetime) -> list[tuple[str, float, float, float]]:
        """Each limited scope as (name, limit, reserved, spent)."""
        rows: list[tuple[str, float, float, float]] = []
        with self._read() as conn:
            if self.daily_limit_usd is not None:
                start = now.replace(hour=0, minute=0, second=0, microsecond=0)
                spent, reserved = _sums(conn, agents.c.started_at >= start)
                rows.append(("daily", self.daily_limit_usd, reserved, spent))
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

    def reserve(self, conn: Connection, agent_id: str, attempt: int, now: datetime) -> Grant:
        """Inside the claim's transaction: reserve the agent's grant, or undo the claim.

        Refused, the agent goes back to pending (attempt not counted) with the reason shown,
        to be looked at again later — or fails ``budget_exceeded`` when so configured.
        """
        if conn.dialect.name == "postgresql":
            # Serialise reservations across the database: two claims must not both see the
            # same money left.
            conn.execute(text("SELECT pg_advisory_xact_lock(7316)"))
        cap = conn.execute(
            select(agents.c.max_budget_usd).where(agents.c.id == agent_id)
        ).scalar_one()
        scopes = self.scopes_for(conn, agent_id, now)
        if cap is None and not scopes:
            return Grant(0.0)  # no cap and no limit: nothing to reserve
        decision = grant(cap if cap is not None else min(s.left_usd for s in scopes), scopes)
        if decision.granted:
            conn.execute(
                update(agents)
                .where(agents.c.id == agent_id)
                .values(reserved_usd=decision.amount_usd, wait_reason=None)
            )
            return decision
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


def _sums(conn: Connection, condition: Any) -> tuple[float, float]:
    spent, reserved = conn.execute(
        select(
            func.coalesce(func.sum(agents.c.cost_usd), 0.0),
            func.coalesce(func.sum(agents.c.reserved_usd), 0.0),
        ).where(condition)
    ).one()
    return float(spent), float(reserved)
