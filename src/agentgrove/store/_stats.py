"""Aggregate, read-only queries for metrics and ``grove stats``: agents by status, queue depth,
usage and latency histograms by role and model, checks by result, cost per passing work.

Every figure is computed by the database with ``GROUP BY`` in one short read transaction, so
what travels to Python is one row per (role, model) however many agents there are; histogram
buckets are ``SUM(CASE WHEN value <= bound ...)`` columns in the same statement rather than a
fetch of every agent's value, because a scrape must stay cheap at 100,000 agents and the number of
bounds is small and fixed. Superseded workflow rows count like any other: their tokens and cost
were really spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Float, case, cast, func, literal_column, select

from agentgrove.models import AgentStatus, CheckStatus
from agentgrove.stats import Grouping, StatsReport, StatsRow
from agentgrove.store._core import StoreCore
from agentgrove.store._dialect import claimable
from agentgrove.store._schema import agents, events

CLAIM_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the claim-latency histogram: waiting in the queue."""

RUN_DURATION_BUCKETS_S: tuple[float, ...] = (
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Upper bounds (seconds) of the run-duration histogram: agent runs last seconds to an hour."""

_FINISHED = tuple(s.value for s in AgentStatus if s.finished)
_ENDINGS = ("agent.completed", "agent.failed", "agent.released")
"""Events that end an attempt in the worker running it; each carries the attempt number."""
_ATTEMPT_EVENTS_SCANNED = 20
"""How far back :meth:`StatsQueries.last_attempt` looks: an ending and its claim are adjacent
among these kinds unless a retry was claimed in between, which adds one or two more."""


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of every agent of one (role, model), all attempts included."""

    role: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True)
class CheckCount:
    """How many agents of one (role, model) have a check with this result."""

    role: str
    model: str
    result: CheckStatus  # passed or failed
    agents: int


@dataclass(frozen=True)
class Histogram:
    """One (role, model)'s observations: ``buckets[i]`` counts values ``<= bounds[i]``
    (cumulative, as Prometheus wants them); ``count`` includes values above the last bound."""

    role: str
    model: str
    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    sum: float


@dataclass(frozen=True)
class Attempt:
    """One ended attempt of an agent, as the database recorded it. ``outcome``: ``completed``,
    ``failed`` or ``released`` (back to pending: retried, or interrupted by shutdown); usage is
    this attempt's alone (``None`` for an interrupted attempt, whose usage is unknown)."""

    agent_id: str
    attempt: int
    role: str
    model: str
    run_id: str | None
    node_key: str | None
    outcome: str
    error_kind: str | None
    error: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    started_at: datetime
    ended_at: datetime


class StatsQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`. Read-only; each method is one transaction."""

    def agent_counts(self) -> dict[AgentStatus, int]:
        """How many agents have each status; every status is present (zero when none)."""
        counts = dict.fromkeys(AgentStatus, 0)
        with self._read() as conn:
            for status, n in conn.execute(
                select(agents.c.status, func.count()).group_by(agents.c.status)
            ).all():
                counts[AgentStatus(status)] = int(n)
        return counts

    def queue_depth(self, now: datetime) -> int:
        """Pending agents a worker could claim at ``now`` (not those in backoff or waiting
        for their parent)."""
        with self._read() as conn:
            n = conn.execute(select(func.count()).select_from(agents).where(claimable(now)))
            return int(n.scalar_one())

    def usage_by_role_model(self) -> list[Usage]:
        """Tokens in/out and cost summed per (role, model), sorted by role then model."""
        query = (
            select(
                agents.c.role,
                agents.c.model,
                func.coalesce(func.sum(agents.c.tokens_in), 0),
                func.coalesce(func.sum(agents.c.tokens_out), 0),
                func.coalesce(func.sum(agents.c.cost_usd), 0.0),
            )
            .group_by(agents.c.role, agents.c.model)
            .order_by(agents.c.role, agents.c.model)
        )
        with self._read() as conn:
            return [
                Usage(role, model, int(t_in), int(t_out), float(cost))
                for role, model, t_in, t_out, cost in conn.execute(query).all()
            ]

    def check_counts(self) -> list[CheckCount]:
        """Finished agents whose check passed or failed, per (role, model), both results always
        present for a (role, model) that has any; sorted by role, model, result.

        Only finished agents count: while an agent runs, its check's status is that of the
        latest round, and a fix round can turn failed into passed; a finished agent's is final,
        so each series only grows, as a counter must."""
        result = agents.c.check_status
        checked = agents.c.status.in_(_FINISHED) & result.in_(
            (CheckStatus.PASSED.value, CheckStatus.FAILED.value)
        )
        query = (
            select(
                agents.c.role,
                agents.c.model,
                func.sum(case((result == CheckStatus.PASSED.value, 1), else_=0)),
                func.sum(case((result == CheckStatus.FAILED.value, 1), else_=0)),
            )
            .where(checked)
            .group_by(agents.c.role, agents.c.model)
            .order_by(agents.c.role, agents.c.model)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            CheckCount(role, model, status, int(n))
            for role, model, passed, failed in rows
            for status, n in ((CheckStatus.FAILED, failed), (CheckStatus.PASSED, passed))
        ]

    def agent_stats(self, by: Grouping | None = None, since: datetime | None = None) -> StatsReport:
        """Cost per passing work (see :mod:`agentgrove.stats` for what counts), per role or
        model and in total, over the agents that finished at or after ``since``.

        Two statements per grouping in one read transaction: a ``GROUP BY`` for the counts and
        sums, and the median from a window query that returns at most two rows per group (the
        middle ones), so nothing per agent travels to Python.
        """
        with self._read() as conn:
            total = _stats_rows(conn, None, since)
            groups = _stats_rows(conn, by, since) if by is not None else []
        (whole,) = total
        return StatsReport(by=by, since=since, groups=tuple(groups), total=whole)

    def claim_latency_histograms(
        self, bounds: Sequence[float] = CLAIM_LATENCY_BUCKETS_S
    ) -> list[Histogram]:
        """Seconds from ``created_at`` to ``started_at`` (the first claim) of every agent that
        was ever claimed, per (role, model). An agent spawned with ``--parent`` waits for its
        parent, and that wait counts: it is time the agent spent queued."""
        with self._read() as conn:
            seconds = _seconds_between(conn, agents.c.created_at, agents.c.started_at)
            return _histograms(conn, seconds, agents.c.started_at.is_not(None), tuple(bounds))

    def run_duration_histograms(
        self, bounds: Sequence[float] = RUN_DURATION_BUCKETS_S
    ) -> list[Histogram]:
        """``duration_ms`` (as seconds) of every finished agent that ran, per (role, model)."""
        seconds = cast(agents.c.duration_ms, Float) / 1000.0
        ran = agents.c.status.in_(_FINISHED) & agents.c.started_at.is_not(None)
        with self._read() as conn:
            return _histograms(conn, seconds, ran, tuple(bounds))

    def last_attempt(self, agent_id: str) -> Attempt | None:
        """The agent's most recently ended attempt: from its ``agent.claimed`` event to the
        ``agent.completed`` / ``agent.failed`` / ``agent.released`` event of the same attempt
        number. ``None`` when no attempt has ended (or its claim is not recorded)."""
        with self._read() as conn:
            rows = conn.execute(
                select(events.c.at, events.c.kind, events.c.data)
                .where(
                    events.c.agent_id == agent_id,
                    events.c.kind.in_((*_ENDINGS, "agent.claimed")),
                )
                .order_by(events.c.id.desc())
                .limit(_ATTEMPT_EVENTS_SCANNED)
            ).all()
            agent = conn.execute(
                select(
                    agents.c.role, agents.c.model, agents.c.workflow_run_id, agents.c.node_key
                ).where(agents.c.id == agent_id)
            ).first()
        end = next((r for r in rows if r.kind in _ENDINGS), None)
        if end is None or agent is None:
            return None
        number = end.data.get("attempt")
        claim = next(
            (
                r
                for r in rows
                if r.kind == "agent.claimed" and r.data.get("attempt") == number and r.at <= end.at
            ),
            None,
        )
        if claim is None:
            return None
        data: dict[str, Any] = end.data
        return Attempt(
            agent_id=agent_id,
            attempt=int(number),
            role=agent.role,
            model=agent.model,
            run_id=agent.workflow_run_id,
            node_key=agent.node_key,
            outcome=end.kind.removeprefix("agent."),
            error_kind=data.get("error_kind"),
            error=data.get("error") or data.get("reason"),
            tokens_in=data.get("tokens_in"),
            tokens_out=data.get("tokens_out"),
            cost_usd=data.get("cost_usd"),
            started_at=claim.at,
            ended_at=end.at,
        )


def _stats_rows(conn: Connection, by: Grouping | None, since: datetime | None) -> list[StatsRow]:
    """One :class:`StatsRow` per value of ``by`` (sorted), or exactly one without it."""
    # Without a grouping, a constant key: one group of every agent (reported as group None).
    key: ColumnElement[Any] = agents.c[by] if by is not None else literal_column("''")
    where: ColumnElement[bool] = agents.c.status.in_(_FINISHED)
    if since is not None:
        where = where & (agents.c.finished_at >= since)
    completed = agents.c.status == AgentStatus.COMPLETED.value
    check = agents.c.check_status
    counted = (
        func.count(),
        _count_where(completed),
        _count_where(completed & (check == CheckStatus.PASSED.value)),
        _count_where(check == CheckStatus.FAILED.value),
        _count_where(completed & (check == CheckStatus.NONE.value)),
        func.coalesce(func.sum(agents.c.tokens_in), 0),
        func.coalesce(func.sum(agents.c.tokens_out), 0),
        func.coalesce(func.sum(agents.c.cost_usd), 0.0),
    )
    sums = select(key.label("g"), *counted).where(where)
    if by is not None:
        sums = sums.group_by(key)
    medians = _medians(conn, key, where & agents.c.started_at.is_not(None), grouped=by is not None)
    rows = [
        StatsRow(
            group=g if by is not None else None,
            agents=int(n),
            completed=int(done or 0),
            passed=int(passed or 0),
            check_failed=int(failed or 0),
            unchecked=int(unchecked or 0),
            tokens_in=int(t_in),
            tokens_out=int(t_out),
            cost_usd=float(cost),
            median_duration_ms=medians.get(g),
        )
        for g, n, done, passed, failed, unchecked, t_in, t_out, cost in conn.execute(sums).all()
    ]
    return sorted(rows, key=lambda row: row.group or "")


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _medians(
    conn: Connection, key: ColumnElement[Any], where: ColumnElement[bool], *, grouped: bool
) -> dict[Any, float]:
    """The median ``duration_ms`` per group: the mean of the middle one or two values of each
    group, picked by ``row_number()`` over the group ordered by duration (SQLite has no
    ``percentile_cont``). Groups without a run agent are absent."""
    partition = key if grouped else None
    ordered = (
        select(
            key.label("g"),
            agents.c.duration_ms.label("v"),
            func.row_number()
            .over(order_by=agents.c.duration_ms, partition_by=partition)
            .label("rn"),
            func.count().over(partition_by=partition).label("n"),
        )
        .where(where)
        .subquery("ordered")
    )
    middle = ordered.c.rn.in_(((ordered.c.n + 1) // 2, (ordered.c.n + 2) // 2))
    query = select(ordered.c.g, func.avg(ordered.c.v)).where(middle).group_by(ordered.c.g)
    return {g: float(v) for g, v in conn.execute(query).all()}


def _seconds_between(conn: Connection, start: Any, end: Any) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    # SQLite stores the UTC datetimes as ISO text, which julianday() reads (to the millisecond).
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _histograms(
    conn: Connection,
    value: ColumnElement[Any],
    where: ColumnElement[bool],
    bounds: tuple[float, ...],
) -> list[Histogram]:
    # Each value is computed once, in a materialised CTE: written inline, the database would
    # evaluate the expression once per bucket (on SQLite that doubled the cost of a scrape).
    rows = (
        select(agents.c.role, agents.c.model, value.label("v"))
        .where(where)
        .cte("observed")
        .prefix_with("MATERIALIZED")
    )
    v = rows.c.v
    query = (
        select(
            rows.c.role,
            rows.c.model,
            func.count(),
            func.coalesce(func.sum(v), 0.0),
            *(func.sum(case((v <= bound, 1), else_=0)) for bound in bounds),
        )
        .group_by(rows.c.role, rows.c.model)
        .order_by(rows.c.role, rows.c.model)
    )
    return [
        Histogram(
            role=row[0],
            model=row[1],
            bounds=bounds,
            buckets=tuple(int(n or 0) for n in row[4:]),
            count=int(row[2]),
            sum=float(row[3]),
        )
        for row in conn.execute(query).all()
    ]
