"""Every query agentgrove makes, behind one class.

Contracts:

* Each status transition is ONE guarded ``UPDATE ... WHERE id=? AND status=? [AND lease_owner=?
  AND attempt=?]`` whose row count says whether it happened; a transition that lost a race
  returns ``False`` and changes nothing.
* A transition and the event that records it commit in the same transaction.
* Writes of a worker about a claimed agent (heartbeat, transcript, completion, release) are fenced
  by ``(lease_owner, attempt)``: a worker whose lease was taken over changes nothing.

Dialect differences live in :mod:`agentgrove.store._dialect`.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from agentgrove.errors import BadInput, ConfigError, StoreUnavailable, UnknownAgent
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.notify._kinds import NotificationKind
from agentgrove.store import _dialect, _leases, _listen
from agentgrove.store._admission import AdmissionQueries
from agentgrove.store._approvals import ApprovalQueries
from agentgrove.store._budgets import BudgetQueries
from agentgrove.store._claims import ClaimQueries
from agentgrove.store._core import utcnow
from agentgrove.store._faults import HEARTBEAT, CrashPoint
from agentgrove.store._log import LogQueries, TranscriptMessage
from agentgrove.store._notifications import NotificationQueries
from agentgrove.store._pace import PaceQueries
from agentgrove.store._questions import QuestionQueries
from agentgrove.store._records import Ending, NewAgent, RunOutcome
from agentgrove.store._rows import _agent_from_row, _agent_select
from agentgrove.store._runs import RunQueries
from agentgrove.store._schema import agents
from agentgrove.store._stats import StatsQueries
from agentgrove.store._views import ViewQueries
from agentgrove.store._wake_socket import listen_for_pokes, poke, wake_dir
from agentgrove.workflows.dag import NodeState

_LIVE = (
    AgentStatus.PENDING.value,
    AgentStatus.EXECUTING.value,
    AgentStatus.AWAITING_APPROVAL.value,
    AgentStatus.AWAITING_INPUT.value,
)
"""What cancel may stop: queued, running, or waiting for a person (an answer, a gate)."""


def new_agent_id() -> str:
    return uuid.uuid4().hex[:12]


class Store(
    ClaimQueries,
    ApprovalQueries,
    RunQueries,
    BudgetQueries,
    StatsQueries,
    ViewQueries,
    AdmissionQueries,
    LogQueries,
    PaceQueries,
    NotificationQueries,
    QuestionQueries,
    _leases.CheckWrites,
):
    """The database of one grove. Thread-safe; cheap calls, short transactions."""

    def __init__(
        self,
        url: str,
        *,
        daily_limit_usd: float | None = None,
        fail_when_exhausted: bool = False,
        notify: Collection[NotificationKind] = (),
    ) -> None:
        """``daily_limit_usd``: the global limit per UTC day; ``fail_when_exhausted``: an agent
        that does not fit in a budget fails ``budget_exceeded`` instead of waiting;
        ``notify``: the notifications whose events also write an outbox row."""
        self.url = url
        self.daily_limit_usd = daily_limit_usd
        self.fail_when_exhausted = fail_when_exhausted
        self.notify_kinds = frozenset(notify)
        try:
            self.engine: Engine = _dialect.create_engine(url)
        except (ArgumentError, ImportError) as exc:  # ImportError: a driver grove lacks
            raise ConfigError(_dialect.unusable_url(url, exc)) from exc
        self._crash_point = CrashPoint()
        self._deadline_marks = itertools.count(1)
        self._deadline_tx = threading.local()
        database = self.engine.url.database
        self._where = (
            database
            if self.engine.dialect.name == "sqlite" and database and database != ":memory:"
            else "the database"
        )
        """What a full-disk error names: the SQLite file, or the database server's disk."""
        self._wake_dir = wake_dir(self._where) if self._where != "the database" else None
        """SQLite: where listening workers' wake-up sockets are (see :mod:`._wake_socket`)."""

    # Built on first use: a command that claims nothing (``grove ls``) should not pay for
    # building them (issue 13: read commands within 1.3x of their floor). The mixins declare
    # them as plain attributes; a cached property is one that is set once, on first read.
    @cached_property
    def _claim_statements(self) -> dict[str, Any]:  # type: ignore[override]
        return _dialect.claim_statements(self.engine)

    @cached_property
    def _gated_claim_statements(self) -> dict[str, Any]:  # type: ignore[override]
        return _dialect.claim_statements(self.engine, gated=True)

    @cached_property
    def _workspace_upsert(self) -> Any:  # type: ignore[override]
        return _dialect.workspace_upsert(self.engine)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self, *, wake: bool = False) -> Iterator[Connection]:
        """A write transaction. ``wake``: it may make work claimable (or free a slot), so on
        PostgreSQL every listening worker is told when it commits (see :mod:`._listen`)."""
        with _dialect.mapped_errors(self._where), self._crash_point.serialised():
            self._crash_point.begin()
            outer = getattr(self._deadline_tx, "pending", False)  # a write around this one
            self._deadline_tx.pending = False
            try:
                with self.engine.begin() as conn:
                    yield conn
                    if wake:
                        _listen.announce_work(conn)
                    self._crash_point.before_commit()
                self._deadline_committed()
            finally:
                self._deadline_tx.pending = outer
            self._crash_point.committed()
        if wake and self._wake_dir is not None:
            poke(self._wake_dir)  # committed: SQLite's listening workers may claim it now

    def listen_for_work(self, on_work: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_work`` whenever another process commits claimable work, until ``stop``
        (PostgreSQL's LISTEN; on a SQLite file, a wake-up socket)."""
        if self._wake_dir is not None:
            listen_for_pokes(self._wake_dir, on_work, stop)
        else:
            _listen.listen_for_work(self.engine, on_work, stop)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with (
            _dialect.mapped_errors(self._where),
            self.engine.connect().execution_options(**{_dialect.READ_ONLY: True}) as conn,
        ):
            yield conn
            conn.rollback()

    # -- agents ----------------------------------------------------------------------------

    def insert_agent(self, new: NewAgent, *, at: datetime | None = None) -> AgentRecord:
        """Insert a pending agent and its ``agent.spawned`` event in one transaction."""
        now = at or utcnow()
        agent_id = new.id or new_agent_id()
        with self._write(wake=True) as conn:
            if new.parent_id is not None:
                found = conn.execute(_AGENT_EXISTS, {"p_id": new.parent_id})
                if found.first() is None:
                    raise UnknownAgent(new.parent_id)
            conn.execute(
                _INSERT_AGENT,
                {
                    "id": agent_id,
                    "parent_id": new.parent_id,
                    "role": new.role,
                    "task": new.task,
                    "model": new.model,
                    "base_ref": new.base_ref,
                    "status": AgentStatus.PENDING.value,
                    "attempt": 0,
                    "max_attempts": new.max_attempts,
                    "timeout_s": new.timeout_s,
                    "budget_usd": new.budget_usd,
                    "tokens_in": 0,
                    "tokens_out": 0,
                    "cost_usd": 0.0,
                    "duration_ms": 0,
                    "priority": new.priority,
                    "max_budget_usd": new.max_budget_usd,
                    "depth": new.depth,
                    "after_parent": new.after_parent,
                    "merge_refs": list(new.merge_refs) if new.merge_refs is not None else None,
                    "workflow_run_id": new.workflow_run_id,
                    "node_key": new.node_key,
                    "check_command": new.check_command,
                    "created_at": now,
                },
            )
            self._event(conn, agent_id, "agent.spawned", {"role": new.role}, now)
        return self.get_agent(agent_id)

    def get_agent(self, agent_id: str) -> AgentRecord:
        with self._read() as conn:
            row = conn.execute(_GET_AGENT, {"p_id": agent_id}).first()
        if row is None:
            raise UnknownAgent(agent_id)
        return _agent_from_row(row)

    def resolve_id(self, prefix: str) -> str:
        """The full id of the one agent whose id starts with ``prefix`` (at least 4 characters)."""
        prefix = prefix.strip()
        if len(prefix) < 4 and prefix:
            raise BadInput(f"agent id {prefix!r} is too short: give at least 4 characters")
        with self._read() as conn:
            ids = (
                conn.execute(
                    select(agents.c.id)
                    .where(agents.c.id.startswith(prefix, autoescape=True))
                    .limit(2)
                )
                .scalars()
                .all()
            )
        if not ids or not prefix:
            raise UnknownAgent(prefix)
        if len(ids) > 1:
            raise BadInput(f"agent id {prefix!r} is ambiguous: give more characters")
        return str(ids[0])

    def list_agents(
        self,
        *,
        status: AgentStatus | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
    ) -> list[AgentRecord]:
        query = _agent_select().order_by(agents.c.created_at, agents.c.id)
        if status is not None:
            query = query.where(agents.c.status == status.value)
        if parent_id is not None:
            query = query.where(agents.c.parent_id == parent_id)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [_agent_from_row(r) for r in conn.execute(query)]

    def children_of(self, parent_ids: Sequence[str]) -> list[list[AgentRecord]]:
        """Each of ``parent_ids``' direct children in spawn order (as
        ``list_agents(parent_id=...)``), all read in one query."""
        found: dict[str, list[AgentRecord]] = {p: [] for p in parent_ids}
        if found:
            with self._read() as conn:
                for row in conn.execute(_CHILDREN_OF, {"p_parents": sorted(found)}):
                    found[row.parent_id].append(_agent_from_row(row))
        return [found[p] for p in parent_ids]

    def tree(self, agent_id: str) -> list[AgentRecord]:
        """The agent and all its descendants, parents before children."""
        tree = (
            select(agents.c.id, agents.c.depth)
            .where(agents.c.id == agent_id)
            .cte("tree", recursive=True)
        )
        tree = tree.union_all(
            select(agents.c.id, agents.c.depth).where(agents.c.parent_id == tree.c.id)
        )
        query = _agent_select().where(agents.c.id.in_(select(tree.c.id)))
        with self._read() as conn:
            rows = [_agent_from_row(r) for r in conn.execute(query)]
        return sorted(rows, key=lambda a: (a.depth, a.created_at, a.id))

    def count_children(self, agent_id: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(agents.c.parent_id == agent_id)
                ).scalar_one()
            )

    def count_by_status(self, roles: Collection[str] | None = None) -> dict[AgentStatus, int]:
        """Agents by status; with ``roles``, only agents of those roles."""
        query = select(agents.c.status, func.count()).group_by(agents.c.status)
        if roles is not None:
            query = query.where(agents.c.role.in_(sorted(roles)))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return {AgentStatus(s): n for s, n in rows}

    # -- leases (claiming and the sweep: :mod:`._claims`) ----------------------------------

    @staticmethod
    def transient(exc: BaseException) -> bool:
        """Whether ``exc`` is a database error worth carrying on after: the connection dropped
        or the database was briefly unavailable. The transaction may have committed or not; a
        write fenced by the lease may simply be made again."""
        return isinstance(exc, StoreUnavailable | OperationalError | InterfaceError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )

    def heartbeat(self, agent_id: str, owner: str, attempt: int, lease_s: float) -> bool:
        """Extend the lease. ``False`` means the lease is no longer ours (cancelled, swept)."""
        now = utcnow()
        with self._write() as conn:
            result = conn.execute(
                _leases.HEARTBEAT,
                {
                    "p_id": agent_id,
                    "p_owner": owner,
                    "p_attempt": attempt,
                    "p_lease_expires_at": now + timedelta(seconds=lease_s),
                },
            )
            self._crash_point.mark(HEARTBEAT)
        return result.rowcount == 1

    def record_session(self, agent_id: str, owner: str, attempt: int, session_id: str) -> bool:
        """Record the attempt's Claude session id, fenced by the lease (``False``: not ours)."""
        with self._write() as conn:
            result = conn.execute(
                _leases.RECORD_SESSION,
                {
                    "p_id": agent_id,
                    "p_owner": owner,
                    "p_attempt": attempt,
                    "p_session_id": session_id,
                },
            )
        return result.rowcount == 1

    def finish(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        outcome: RunOutcome,
        messages: Sequence[TranscriptMessage] = (),
    ) -> bool:
        """executing -> completed | failed | cancelled, with the result, fenced by the lease;
        ``messages``, the transcript's last, are appended in the same transaction (before the
        ending's event), and only if the fence let the ending through."""
        return self.finish_many([Ending(agent_id, owner, attempt, outcome, messages)])[0]

    def finish_many(self, endings: Sequence[Ending]) -> list[bool]:
        """:meth:`finish` for each of ``endings``, all in one transaction: the fences checked
        by one locking read, the outcomes written by one ``executemany``, the transcripts'
        tails and the plain events one statement each, whatever their number. ``[i]``: whether
        ``endings[i]`` went through its fence (a second ending of the same agent never does).
        """
        assert all(e.outcome.status.finished for e in endings)
        now = utcnow()
        with self._write(wake=True) as conn:
            held = _leases.executing_rows(conn, [e.agent_id for e in endings])
            through: list[tuple[Ending, Any]] = []
            for ending in endings:
                row = held.get(ending.agent_id)
                if _leases.holds(row, ending.owner, ending.attempt):
                    del held[ending.agent_id]  # one ending per agent
                    through.append((ending, row))
            if not through:
                return [False] * len(endings)
            conn.execute(_leases.FINISH_HELD, [_finish_params(e, now) for e, _ in through])
            self._messages_of(conn, [(e.agent_id, e.attempt, e.messages) for e, _ in through])
            # In the order of their runs: two batches touching the same runs' rows take their
            # locks in one order, so they never deadlock each other.
            for ending, row in sorted(
                through, key=lambda t: (t[1].workflow_run_id or "", t[0].agent_id)
            ):
                self._after_ending(conn, ending, row.workflow_run_id, row.node_key, now)
            self._events(conn, [_ending_event(e) for e, _ in through], now)
        made = {id(e) for e, _ in through}
        return [id(e) in made for e in endings]

    def _after_ending(
        self,
        conn: Connection,
        ending: Ending,
        run_id: str | None,
        node_key: str | None,
        now: datetime,
    ) -> None:
        """What an ending changes beyond its row: the children waiting for a parent that did
        not complete, and a workflow node's state (or its ``after`` gate)."""
        status = ending.outcome.status
        if status is not AgentStatus.COMPLETED:
            self._fail_waiting_children(conn, ending.agent_id, now)
        if node_key is None or run_id is None:
            return
        # A node with an `after` gate waits for a person before its dependents may start.
        held = status is AgentStatus.COMPLETED and self._hold_after(
            conn, run_id, node_key, ending.agent_id, now
        )
        if not held:
            self.node_finished(conn, run_id, node_key, NodeState(status.value), now)

    def _fail_waiting_children(self, conn: Connection, parent_id: str, now: datetime) -> None:
        """Children waiting for a parent that did not complete can never start: fail them."""
        waiting = (
            conn.execute(
                update(agents)
                .where(
                    agents.c.parent_id == parent_id,
                    agents.c.after_parent.is_(True),
                    agents.c.status == AgentStatus.PENDING.value,
                )
                .values(
                    status=AgentStatus.FAILED.value,
                    error_kind=ErrorKind.DEPENDENCY_FAILED.value,
                    error=f"parent {parent_id} did not complete",
                    finished_at=now,
                )
                .returning(agents.c.id)
            )
            .scalars()
            .all()
        )
        for child in waiting:
            self._event(conn, child, "agent.failed", {"error_kind": "dependency_failed"}, now)
            self._fail_waiting_children(conn, child, now)

    def release(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        *,
        refund_attempt: bool,
        reason: str,
        not_before: datetime | None = None,
        spent: RunOutcome | None = None,
    ) -> bool:
        """executing -> pending (shutdown, retry). ``refund_attempt`` undoes the claim's count;
        ``not_before`` keeps it unclaimed until then (retry backoff). ``spent``: what the
        attempt reported using; without it (an attempt cut short, whose real spend nobody will
        report) the whole reservation counts as spent, so no limit can be passed."""
        usage = (
            _leases.usage_values(spent)
            if spent is not None
            else {"cost_usd": agents.c.cost_usd + agents.c.reserved_usd}
        )
        with self._write(wake=True) as conn:
            result = conn.execute(
                update(agents)
                .where(_leases.fence(agent_id, owner, attempt))
                .values(
                    status=AgentStatus.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempt=agents.c.attempt - (1 if refund_attempt else 0),
                    not_before=not_before,
                    reserved_usd=0.0,
                    wait_reason=None,
                    **usage,
                )
            )
            if result.rowcount != 1:
                return False
            self._event(
                conn,
                agent_id,
                "agent.released",
                {
                    "attempt": attempt,
                    "reason": reason,
                    "not_before": None if not_before is None else not_before.isoformat(),
                    **_leases.usage_data(spent),
                },
                None,
            )
        return True

    def cancel(self, agent_id: str) -> bool:
        """pending | executing | awaiting_input -> cancelled (an open question is closed).
        ``False`` if the agent had already finished.

        An executing agent's worker notices at its next heartbeat (whose fence no longer
        matches) and stops the run; in the same process it is told at once.
        """
        now = utcnow()
        with self._write(wake=True) as conn:
            result = conn.execute(
                update(agents)
                .where(agents.c.id == agent_id, agents.c.status.in_(_LIVE))
                .values(
                    status=AgentStatus.CANCELLED.value,
                    error_kind=ErrorKind.CANCELLED.value,
                    error="cancelled by request",
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    # A running attempt's real cost will never be reported (its writes are
                    # fenced out from now on): count its whole reservation as spent.
                    cost_usd=agents.c.cost_usd + agents.c.reserved_usd,
                    reserved_usd=0.0,
                    wait_reason=None,  # it waits for nothing any more
                    approval_gate=None,
                    approval_deadline=None,
                )
                .returning(agents.c.workflow_run_id, agents.c.node_key)
            )
            cancelled = result.first()
            if cancelled is None:
                return False
            self._event(conn, agent_id, "agent.cancelled", {}, now)
            self.close_questions(conn, [agent_id])
            self._fail_waiting_children(conn, agent_id, now)
            if cancelled.node_key is not None:
                self.node_finished(
                    conn, cancelled.workflow_run_id, cancelled.node_key, NodeState.CANCELLED, now
                )
        return True

    # -- workflow nodes --------------------------------------------------------------------

    def _insert_agent_row(self, conn: Connection, values: dict[str, Any]) -> str:
        """Insert an agent row (workflow nodes); defaults for what ``values`` leaves out."""
        agent_id = new_agent_id()
        row: dict[str, Any] = {
            "id": agent_id,
            "attempt": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "cost_usd": 0.0,
            "duration_ms": 0,
            "priority": 0,
            "depth": 0,
            "after_parent": False,
            "superseded": False,
        } | values
        conn.execute(_INSERT_AGENT, row)
        data = {"role": row["role"], "node": row.get("node_key")}
        if row["status"] in _LIVE:  # pending, or held at its approval gate
            kind = "agent.spawned"
        else:  # inserted failed: why (a dependency that failed is no news of its own)
            kind = "agent.failed"
            data |= {"error_kind": row["error_kind"], "error": row["error"]}
        self._event(
            conn,
            agent_id,
            kind,
            data,
            row["created_at"],
            row.get("workflow_run_id"),
        )
        return agent_id


# Statements built once and executed with parameters: building SQLAlchemy expressions per call
# costs more CPU than SQLite spends running them.
_INSERT_AGENT = insert(agents)
_AGENT_EXISTS = select(agents.c.id).where(agents.c.id == bindparam("p_id"))
_GET_AGENT = _agent_select().where(agents.c.id == bindparam("p_id"))


def _finish_params(ending: Ending, now: datetime) -> dict[str, Any]:
    outcome = ending.outcome
    return {
        "p_id": ending.agent_id,
        "p_owner": ending.owner,
        "p_attempt": ending.attempt,
        "p_status": outcome.status.value,
        "p_output": outcome.output,
        "p_error": outcome.error,
        "p_error_kind": outcome.error_kind.value if outcome.error_kind else None,
        "p_tokens_in": outcome.tokens_in,
        "p_tokens_out": outcome.tokens_out,
        "p_cost_usd": outcome.cost_usd,
        "p_duration_ms": outcome.duration_ms,
        "p_session_id": outcome.session_id,
        "p_finished_at": now,
    }


def _ending_event(ending: Ending) -> tuple[str, str, dict[str, Any]]:
    outcome = ending.outcome
    return (
        ending.agent_id,
        f"agent.{outcome.status.value}",
        {
            "attempt": ending.attempt,
            "error_kind": outcome.error_kind.value if outcome.error_kind else None,
            "error": outcome.error,
            "tokens_in": outcome.tokens_in,
            "tokens_out": outcome.tokens_out,
            "cost_usd": outcome.cost_usd,
        },
    )


_CHILDREN_OF = (
    _agent_select()
    .where(agents.c.parent_id.in_(bindparam("p_parents", expanding=True)))
    .order_by(agents.c.created_at, agents.c.id)
)
