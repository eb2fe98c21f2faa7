"""Claiming: the one transaction that moves a pending agent to executing under a worker's
lease (with admission and the budget reservation inside it), and the sweep that takes back
leases that expired or whose worker is gone.

Mixed into :class:`agentgrove.store.Store`; see :mod:`agentgrove.store._store` for the
transition contracts both keep.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from agentgrove.admission import limits_concurrency
from agentgrove.budgets import Grant
from agentgrove.errors import StoreUnavailable
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.store import _dialect, _leases
from agentgrove.store._admission import Gate
from agentgrove.store._core import StoreCore, utcnow
from agentgrove.store._pace import PaceState, save_pace
from agentgrove.store._rows import _agent_from_row, _agent_select
from agentgrove.store._schema import agents
from agentgrove.workflows.dag import NodeState

if TYPE_CHECKING:
    from agentgrove.settings import AdmissionSettings  # pydantic: loaded where validated


class ClaimQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    _claim_statements: dict[str, Any]
    _role_statements: dict[bool, dict[str, Any]]
    """The claim statements restricted to roles, by whether gated (built on first use)."""

    if TYPE_CHECKING:
        engine: Engine

        # Defined by the other parts of Store (admission, budgets, runs, the store itself).
        def _admissible(
            self, conn: Connection, gate: Gate, kind: str, params: dict[str, Any]
        ) -> tuple[Any, dict[str, Any], PaceState] | None: ...
        def reserve(
            self, conn: Connection, agent_id: str, attempt: int, now: datetime
        ) -> Grant: ...
        def standalone_grant(self, row: Any) -> Grant | None: ...
        def record_grants(self, conn: Connection, grants: Sequence[tuple[str, Grant]]) -> None: ...
        def _events(
            self,
            conn: Connection,
            entries: Sequence[tuple[str, str, dict[str, Any]]],
            at: datetime,
        ) -> None: ...
        def node_finished(
            self, conn: Connection, run_id: str, key: str, state: NodeState, now: datetime
        ) -> None: ...
        def _fail_waiting_children(
            self, conn: Connection, parent_id: str, now: datetime
        ) -> None: ...
        def get_agent(self, agent_id: str) -> AgentRecord: ...
        @staticmethod
        def transient(exc: BaseException) -> bool: ...

    def claim(
        self,
        owner: str,
        lease_s: float,
        *,
        agent_id: str | None = None,
        parent_ids: Collection[str] | None = None,
        run_id: str | None = None,
        gate: Gate | None = None,
        at: datetime | None = None,
        roles: Collection[str] | None = None,
    ) -> AgentRecord | None:
        """Atomically move the next claimable pending agent (or ``agent_id``, or the next child
        of one of ``parent_ids``) to executing under ``owner``'s lease.

        Claimable: pending, past its ``not_before``, and — when ``after_parent`` — with its
        parent completed.

        Order: lowest ``priority`` value first, then oldest. ``attempt`` is incremented.
        Returns ``None`` when nothing is claimable. Safe against any number of concurrent
        claimers, processes included. With a ``gate`` (admission), agents of roles and models
        it excludes are passed over, and ``None`` comes back when nothing may start at all.
        ``roles`` (non-empty): only agents of these roles are claimed (``grove worker
        --roles``); the others are left for other workers.
        """
        claimed = self.claim_many(
            owner,
            lease_s,
            1,
            agent_id=agent_id,
            parent_ids=parent_ids,
            run_id=run_id,
            gate=gate,
            at=at,
            roles=roles,
        )
        return claimed[0] if claimed else None

    def claim_many(
        self,
        owner: str,
        lease_s: float,
        limit: int,
        *,
        agent_id: str | None = None,
        parent_ids: Collection[str] | None = None,
        run_id: str | None = None,
        gate: Gate | None = None,
        at: datetime | None = None,
        roles: Collection[str] | None = None,
    ) -> list[AgentRecord]:
        """:meth:`claim` of up to ``limit`` agents in one transaction, in claim order; an
        empty list when nothing is claimable. Every agent returned is executing under
        ``owner``'s lease, exactly as if claimed alone: each has its own reservation and
        ``agent.claimed`` event, and a worker that dies before starting some of them loses
        them to the lease sweep like any other claimed agent. The caller asks for no more
        than it will start at once (its free slots).

        Never more than one at a time when each start changes what the next may be: under a
        ``gate`` with a concurrency limit or a start pace (``[admission]``), one agent is
        claimed, so those limits stay exact. Budgets need no such care: the agents' reservations
        are taken one after the other inside the transaction, each seeing the ones before.
        """
        if limit < 1:
            return []
        now = at or utcnow()
        params: dict[str, Any]
        if agent_id is not None:
            kind, params = "id", {"p_id": agent_id}
        elif parent_ids is not None:
            kind, params = "parents", {"p_parents": list(parent_ids)}
        elif run_id is not None:
            kind, params = "run", {"p_run": run_id}
        else:
            kind, params = "next", {}
        params |= {
            "p_now": now,
            "p_owner": owner,
            # A worker's owner id starts with its host name (agentgrove.worker.new_owner_id).
            "p_host": owner.split(":", 1)[0],
            "p_expires": now + timedelta(seconds=lease_s),
            "p_limit": 1 if kind == "id" else limit,
        }
        # An exception tied to one agent being claimed (its reservation, say) fails that
        # agent and the claim goes on to the next: it must not raise in every worker that
        # picks the agent up. Each round fails one agent, so this ends.
        while True:
            try:
                return self._claim_some(owner, kind, params, gate, now, roles)
            except _Unclaimable as broken:
                self._fail_unclaimable(broken.agent_id, broken.cause, now)
                if agent_id is not None:
                    return []

    def _claim_some(
        self,
        owner: str,
        kind: str,
        params: dict[str, Any],
        gate: Gate | None,
        now: datetime,
        roles: Collection[str] | None = None,
    ) -> list[AgentRecord]:
        statement = self._claim_statements[kind]
        pace: PaceState = {}
        with self._write() as conn:
            if gate is not None:
                # Roles and models at their limit are passed over, counted in this same
                # (serialised) transaction, so the limits are exact across workers.
                admitted = self._admissible(conn, gate, kind, params)
                if admitted is None:
                    return []
                statement, params, pace = admitted
                if pace or _one_at_a_time(gate.settings):
                    params = params | {"p_limit": 1}  # each start changes what may start next
            if roles:
                statement, params = self._only_roles(kind, params, roles)
            # RETURNING keeps no order: put the batch back in claim order.
            claimed = sorted(
                conn.execute(statement, params).all(),
                key=lambda r: (r.priority, _aware(r.created_at), r.id),
            )
            started: list[Any] = []
            grants: list[tuple[str, Grant]] = []
            for row in claimed:
                try:
                    quick = self.standalone_grant(row)
                    if quick is not None:
                        grants.append((row.id, quick))
                        started.append(row)
                        continue
                    reservation = self.reserve(conn, row.id, row.attempt, now)
                    if not reservation.granted:
                        self._budget_refused(conn, row.id, now)
                        continue
                except StoreUnavailable:
                    raise
                except Exception as exc:
                    if self.transient(exc):
                        raise
                    # Rolled back as the exception leaves the transaction: the agents are
                    # pending again, unclaimed, and this one failed in a transaction of its own.
                    raise _Unclaimable(row.id, exc) from exc
                started.append(row)
            if not started:
                return []
            self.record_grants(conn, grants)
            self._events(
                conn,
                [
                    (row.id, "agent.claimed", {"owner": owner, "attempt": row.attempt})
                    for row in started
                ],
                now,
            )
            if gate is not None:
                for row in started:
                    gate.started(row.model)
                save_pace(conn, gate.pacer, pace)  # every worker sees the start
            # Read back in the claim's own transaction: one query for the whole batch, and
            # the rows as committed (reservation included).
            ids = [row.id for row in started]
            records = {
                record.id: record
                for record in map(_agent_from_row, conn.execute(_CLAIMED_AGENTS, {"p_ids": ids}))
            }
        return [records[i] for i in ids]

    def _only_roles(
        self, kind: str, params: dict[str, Any], roles: Collection[str]
    ) -> tuple[Any, dict[str, Any]]:
        """The claim statement of ``kind`` restricted to ``roles`` (gated too when ``params``
        carry admission's exclusions), built on first use, and its parameters."""
        gated = "p_skip_roles" in params
        cache: dict[bool, dict[str, Any]] | None = getattr(self, "_role_statements", None)
        if cache is None:
            cache = self._role_statements = {}
        if gated not in cache:
            cache[gated] = _dialect.claim_statements(self.engine, gated=gated, roles=True)
        return cache[gated][kind], params | {"p_roles": sorted(roles)}

    def _fail_unclaimable(self, agent_id: str, cause: BaseException, now: datetime) -> None:
        """pending -> failed ``internal``, naming the error that made its claim impossible."""
        message = f"grove could not start this agent: {' '.join(str(cause).split())[:500]}"
        with self._write(wake=True) as conn:
            failed = conn.execute(
                update(agents)
                .where(agents.c.id == agent_id, agents.c.status == AgentStatus.PENDING.value)
                .values(
                    status=AgentStatus.FAILED.value,
                    error_kind=ErrorKind.INTERNAL.value,
                    error=message,
                    reserved_usd=0.0,
                    wait_reason=None,
                    finished_at=now,
                )
                .returning(agents.c.workflow_run_id, agents.c.node_key)
            ).first()
            if failed is None:
                return
            self._event(
                conn, agent_id, "agent.failed", {"error_kind": "internal", "error": message}, now
            )
            self._fail_waiting_children(conn, agent_id, now)
            if failed.node_key is not None:
                self.node_finished(
                    conn, failed.workflow_run_id, failed.node_key, NodeState.FAILED, now
                )

    def _budget_refused(self, conn: Connection, agent_id: str, now: datetime) -> None:
        """After a refused reservation: a failed workflow node moves its run on."""
        row = conn.execute(
            select(agents.c.status, agents.c.workflow_run_id, agents.c.node_key).where(
                agents.c.id == agent_id
            )
        ).one()
        if row.status == AgentStatus.FAILED.value:
            self._fail_waiting_children(conn, agent_id, now)
            if row.node_key is not None:
                self.node_finished(conn, row.workflow_run_id, row.node_key, NodeState.FAILED, now)
        # Else it waits: the reservation logged the wait if its reason changed.

    def sweep_expired(
        self,
        *,
        at: datetime | None = None,
        gone: Callable[[str], bool] | None = None,
        held: Collection[str] = (),
    ) -> list[str]:
        """Return agents whose lease expired to pending, or fail them past max_attempts.
        ``gone(owner)``: also those whose lease owner the caller knows is dead (a process of
        this host that no longer runs), expired or not. ``held``: agents the caller itself
        runs and renews the leases of (a renewal held up by the database), never swept here."""
        now = at or utcnow()
        swept: list[str] = []
        with self._write(wake=True) as conn:
            query = select(
                agents.c.id,
                agents.c.attempt,
                agents.c.max_attempts,
                agents.c.lease_owner,
                agents.c.workflow_run_id,
                agents.c.node_key,
                agents.c.lease_expires_at,
            ).where(agents.c.status == AgentStatus.EXECUTING.value)
            if gone is None:
                query = query.where(agents.c.lease_expires_at < now)
            expired = [
                row
                for row in conn.execute(query)
                if row.id not in held
                and (
                    (row.lease_expires_at is not None and row.lease_expires_at < now)
                    or (gone is not None and row.lease_owner is not None and gone(row.lease_owner))
                )
            ]
            for row in expired:
                exhausted = row.attempt >= row.max_attempts
                # The lost attempt's cost is unknown: count its reservation as spent.
                values: dict[str, Any] = {
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "cost_usd": agents.c.cost_usd + agents.c.reserved_usd,
                    "reserved_usd": 0.0,
                    "wait_reason": None,  # e.g. "waiting for its children" of the lost attempt
                }
                if exhausted:
                    values |= {
                        "status": AgentStatus.FAILED.value,
                        "error_kind": ErrorKind.TIMEOUT.value,
                        "error": f"lease expired on attempt {row.attempt} of {row.max_attempts}",
                        "finished_at": now,
                    }
                else:
                    values["status"] = AgentStatus.PENDING.value
                result = conn.execute(
                    update(agents)
                    .where(_leases.fence(row.id, row.lease_owner, row.attempt))
                    .values(**values)
                )
                if result.rowcount == 1:
                    swept.append(row.id)
                    kind = "agent.failed" if exhausted else "agent.lease_expired"
                    data: dict[str, Any] = {"attempt": row.attempt}
                    if row.lease_expires_at is None or row.lease_expires_at >= now:
                        data["reason"] = "its worker process is gone"
                    self._event(conn, row.id, kind, data, now)
                    if exhausted:
                        self._fail_waiting_children(conn, row.id, now)
                        if row.node_key is not None:
                            self.node_finished(
                                conn, row.workflow_run_id, row.node_key, NodeState.FAILED, now
                            )
        return swept


def _one_at_a_time(settings: AdmissionSettings) -> bool:
    """Whether admission counts each start (a concurrency limit or a start pace): then a claim
    takes one agent, since the next one's admission depends on it."""
    return limits_concurrency(settings) or bool(settings.rpm_per_model)


def _aware(at: datetime) -> datetime:
    """SQLite gives naive UTC datetimes back; PostgreSQL aware ones. Comparable either way."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


_CLAIMED_AGENTS = _agent_select().where(agents.c.id.in_(bindparam("p_ids", expanding=True)))


class _Unclaimable(Exception):
    """Raised inside a claim's transaction (rolling it back) by an error tied to one agent."""

    def __init__(self, agent_id: str, cause: BaseException) -> None:
        super().__init__(agent_id)
        self.agent_id, self.cause = agent_id, cause
