"""Read-only queries for the dashboard: filtered agent lists, the event feed across all agents,
run summaries and usage over time. Nothing here writes."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from agentgrove.models import AgentRecord, AgentStatus, Event, RunStatus
from agentgrove.store._core import StoreCore
from agentgrove.store._rows import _agent_from_row, _agent_select
from agentgrove.store._schema import agents, events, workflow_runs


@dataclass(frozen=True)
class FeedEvent:
    """An event with the workflow run it belongs to (``Event`` leaves the run out)."""

    event: Event
    run_id: str | None


@dataclass(frozen=True)
class RunSummary:
    """A workflow run without its nodes: cheap to list however large the runs are."""

    id: str
    name: str
    status: RunStatus
    created_at: datetime
    finished_at: datetime | None
    nodes_total: int
    nodes_completed: int
    nodes_failed: int
    cost_usd: float


@dataclass(frozen=True)
class UsageRow:
    """One agent's usage, placed in time at its finish (or start, while it runs)."""

    at: datetime
    role: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float


class ViewQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    def find_agents(
        self,
        *,
        status: AgentStatus | None = None,
        role: str | None = None,
        run_id: str | None = None,
        ids: Collection[str] | None = None,
        limit: int = 500,
    ) -> list[AgentRecord]:
        """Agents matching every given filter, newest first, at most ``limit``."""
        query = _agent_select().order_by(agents.c.created_at.desc(), agents.c.id.desc())
        if status is not None:
            query = query.where(agents.c.status == status.value)
        if role is not None:
            query = query.where(agents.c.role == role)
        if run_id is not None:
            query = query.where(agents.c.workflow_run_id == run_id)
        if ids is not None:
            query = query.where(agents.c.id.in_(list(ids)))
        with self._read() as conn:
            return [_agent_from_row(r) for r in conn.execute(query.limit(limit))]

    def bases_in_use(self, *, limit: int = 100) -> list[tuple[str, str]]:
        """``(commit, whose)`` for the base commits that unfinished work starts from: pending
        and executing agents (``agent ID``) and running workflow runs (``run ID``), each commit
        once, the newest owner first, at most ``limit`` commits (the worker's start-up check
        that this clone is of the repository the database serves)."""
        found: dict[str, str] = {}
        unfinished = [AgentStatus.PENDING.value, AgentStatus.EXECUTING.value]
        agent_bases = (
            select(agents.c.base_ref, agents.c.id)
            .where(agents.c.status.in_(unfinished), agents.c.base_ref.is_not(None))
            .order_by(agents.c.created_at.desc(), agents.c.id.desc())
            .limit(limit * 10)
        )
        run_bases = (
            select(workflow_runs.c.base_ref, workflow_runs.c.id)
            .where(
                workflow_runs.c.status == RunStatus.RUNNING.value,
                workflow_runs.c.base_ref.is_not(None),
            )
            .order_by(workflow_runs.c.created_at.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = [(r[0], f"agent {r[1]}") for r in conn.execute(agent_bases)]
            rows += [(r[0], f"run {r[1]}") for r in conn.execute(run_bases)]
        for commit, whose in rows:
            if len(found) >= limit:
                break
            found.setdefault(commit, whose)
        return list(found.items())

    def agent_roles(self) -> list[str]:
        """Every role some agent has had, sorted (for filter choices)."""
        with self._read() as conn:
            return sorted(conn.execute(select(agents.c.role).distinct()).scalars())

    def events_after(self, after_id: int, *, limit: int = 500) -> list[FeedEvent]:
        """Events of every agent and run with an id above ``after_id``, oldest first."""
        query = select(events).where(events.c.id > after_id).order_by(events.c.id).limit(limit)
        with self._read() as conn:
            return [
                FeedEvent(
                    Event(id=r.id, at=r.at, agent_id=r.agent_id, kind=r.kind, data=r.data),
                    r.run_id,
                )
                for r in conn.execute(query)
            ]

    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a live view starts."""
        with self._read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())

    def run_statuses(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        query = select(workflow_runs.c.id, workflow_runs.c.status).where(
            workflow_runs.c.id.in_(list(run_ids))
        )
        with self._read() as conn:
            return {r.id: RunStatus(r.status) for r in conn.execute(query)}

    def run_summaries(self, *, limit: int = 200) -> list[RunSummary]:
        """The newest runs first, from the counters kept on each run (no node is loaded)."""
        cost = (
            select(func.coalesce(func.sum(agents.c.cost_usd), 0.0))
            .where(agents.c.workflow_run_id == workflow_runs.c.id)
            .scalar_subquery()
        )
        query = (
            select(workflow_runs, cost.label("cost"))
            .order_by(workflow_runs.c.created_at.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [
                RunSummary(
                    id=r.id,
                    name=r.name,
                    status=RunStatus(r.status),
                    created_at=r.created_at,
                    finished_at=r.finished_at,
                    nodes_total=r.nodes_total,
                    nodes_completed=r.nodes_completed,
                    nodes_failed=r.nodes_failed,
                    cost_usd=float(r.cost),
                )
                for r in conn.execute(query)
            ]

    def usage_rows(self, *, since: datetime | None = None) -> list[UsageRow]:
        """Usage of every agent that has spent anything, oldest first.

        An agent's usage is placed at its ``finished_at`` (a retried attempt's usage is added
        to the row, so the row is the truth); agents still running fall back to ``started_at``.
        """
        at = func.coalesce(agents.c.finished_at, agents.c.started_at)
        query: Any = (
            select(
                at.label("at"),
                agents.c.role,
                agents.c.model,
                agents.c.tokens_in,
                agents.c.tokens_out,
                agents.c.cost_usd,
            )
            .where(at.is_not(None), (agents.c.tokens_in + agents.c.tokens_out) > 0)
            .order_by(at)
        )
        if since is not None:
            query = query.where(at >= since)
        with self._read() as conn:
            return [
                UsageRow(
                    at=r.at,
                    role=r.role,
                    model=r.model,
                    tokens_in=r.tokens_in,
                    tokens_out=r.tokens_out,
                    cost_usd=float(r.cost_usd),
                )
                for r in conn.execute(query)
            ]
