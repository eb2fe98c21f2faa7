"""The lease fence: a worker's writes about the agent it claimed change nothing unless the
agent is still executing under that worker's ``(lease_owner, attempt)``. The hot writes
(heartbeat, finish) are statements built once and run with parameters ``p_id``, ``p_owner``
and ``p_attempt``: building SQLAlchemy expressions per call costs more CPU than SQLite spends
running them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, select, update

from agentgrove.models import AgentStatus, CheckRecord
from agentgrove.store._core import StoreCore
from agentgrove.store._schema import agents

if TYPE_CHECKING:
    from agentgrove.store._records import RunOutcome


def fence(agent_id: str, owner: str | None, attempt: int) -> ColumnElement[bool]:
    """The fence for values known now; ``owner=None`` matches an agent with no lease owner."""
    return and_(
        agents.c.id == agent_id,
        agents.c.status == AgentStatus.EXECUTING.value,
        agents.c.lease_owner == owner,
        agents.c.attempt == attempt,
    )


def usage_data(spent: RunOutcome | None) -> dict[str, Any]:
    """A retried attempt's error kind and usage, for its ``agent.released`` event (telemetry
    reads them back: the agent's columns only hold the sums)."""
    if spent is None:
        return {}
    return {
        "error_kind": spent.error_kind.value if spent.error_kind else None,
        "tokens_in": spent.tokens_in,
        "tokens_out": spent.tokens_out,
        "cost_usd": spent.cost_usd,
    }


def usage_values(spent: RunOutcome | None) -> dict[str, Any]:
    """Column updates adding an attempt's usage (a retried attempt's tokens still cost)."""
    if spent is None:
        return {}
    values: dict[str, Any] = {
        "tokens_in": agents.c.tokens_in + spent.tokens_in,
        "tokens_out": agents.c.tokens_out + spent.tokens_out,
        "cost_usd": agents.c.cost_usd + spent.cost_usd,
        "duration_ms": agents.c.duration_ms + spent.duration_ms,
    }
    if spent.session_id is not None:
        values["session_id"] = spent.session_id
    return values


def _param(name: str) -> Any:
    """``p_<name>``, typed as the agents column ``name`` (the SET of a prebuilt UPDATE)."""
    return bindparam(f"p_{name}", type_=agents.c[name].type)


FENCE = and_(
    agents.c.id == bindparam("p_id"),
    agents.c.status == AgentStatus.EXECUTING.value,
    agents.c.lease_owner == bindparam("p_owner"),
    agents.c.attempt == bindparam("p_attempt"),
)
"""The fence as a prebuilt condition, with parameters ``p_id``, ``p_owner`` and ``p_attempt``."""

HOLDS_LEASE = select(agents.c.id).where(FENCE).with_for_update()
"""A row while the lease is still held (locked: the write that follows cannot race a sweep)."""

HEARTBEAT = update(agents).where(FENCE).values(lease_expires_at=_param("lease_expires_at"))
"""Extend the lease to ``p_lease_expires_at``."""

RECORD_SESSION = update(agents).where(FENCE).values(session_id=_param("session_id"))
"""The attempt's Claude session ``p_session_id``, as soon as the CLI names it: a retry after a
crash then knows which session to resume (see :mod:`agentgrove.sessions`)."""

_FINISH_VALUES: dict[str, Any] = dict(
    status=_param("status"),
    output=_param("output"),
    error=_param("error"),
    error_kind=_param("error_kind"),
    tokens_in=agents.c.tokens_in + _param("tokens_in"),
    tokens_out=agents.c.tokens_out + _param("tokens_out"),
    cost_usd=agents.c.cost_usd + _param("cost_usd"),
    duration_ms=agents.c.duration_ms + _param("duration_ms"),
    session_id=_param("session_id"),
    reserved_usd=0.0,
    wait_reason=None,
    lease_owner=None,
    lease_expires_at=None,
    finished_at=_param("finished_at"),
)
FINISH_HELD = update(agents).where(FENCE).values(_FINISH_VALUES)
"""End the attempt: its outcome (``p_status`` ... ``p_session_id``; usage is added to the
agent's sums) at ``p_finished_at``, the lease and reservation cleared. Run as an
``executemany`` over rows :func:`executing_rows` locked: no backend returns rows from an
executemany UPDATE, so the fence's verdict comes from that read."""

HOLDERS = (
    select(
        agents.c.id,
        agents.c.lease_owner,
        agents.c.attempt,
        agents.c.workflow_run_id,
        agents.c.node_key,
    )
    .where(
        agents.c.id.in_(bindparam("p_ids", expanding=True)),
        agents.c.status == AgentStatus.EXECUTING.value,
    )
    # Locked in one order (by id): two statements locking some of the same rows then
    # wait for each other instead of deadlocking.
    .order_by(agents.c.id)
    .with_for_update()
)


def executing_rows(conn: Connection, agent_ids: Collection[str]) -> dict[str, Any]:
    """The executing rows among ``agent_ids``, by id (each with its ``lease_owner``,
    ``attempt``, ``workflow_run_id`` and ``node_key``), read in one statement and locked for the
    rest of the caller's transaction, as :data:`HOLDS_LEASE` locks one: whether a write's lease
    is still held is then :func:`holds` of its row."""
    if not agent_ids:
        return {}
    return {r.id: r for r in conn.execute(HOLDERS, {"p_ids": sorted(set(agent_ids))})}


def holds(row: Any, owner: str, attempt: int) -> bool:
    """Whether ``row`` (from :func:`executing_rows`, or ``None``) is under the lease ``(owner,
    attempt)``."""
    return row is not None and (row.lease_owner, row.attempt) == (owner, attempt)


RECORD_CHECK = (
    update(agents)
    .where(FENCE)
    .values(
        check_status=_param("check_status"),
        check_rounds=_param("check_rounds"),
        check_exit_code=_param("check_exit_code"),
        check_duration_ms=_param("check_duration_ms"),
        check_output=_param("check_output"),
    )
)
"""What the attempt's check did so far (``p_check_status`` ... ``p_check_output``)."""


class CheckWrites(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`: the fenced write of an agent's check."""

    def record_check(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        check: CheckRecord,
        round_data: dict[str, Any],
    ) -> bool:
        """Record what the attempt's check did (status, rounds, exit code, duration, output
        tail; the command is the spawn's) and its ``agent.check`` event ``round_data``, in one
        transaction fenced by the lease: ``False``, and nothing written, when the lease is no
        longer ours. Idempotent: made twice, the row is the same and the second event says so
        again."""
        with self._write() as conn:
            result = conn.execute(
                RECORD_CHECK,
                {
                    "p_id": agent_id,
                    "p_owner": owner,
                    "p_attempt": attempt,
                    "p_check_status": check.status.value,
                    "p_check_rounds": check.rounds,
                    "p_check_exit_code": check.exit_code,
                    "p_check_duration_ms": check.duration_ms,
                    "p_check_output": check.output_tail,
                },
            )
            if result.rowcount != 1:
                return False
            self._event(conn, agent_id, "agent.check", round_data, None)
        return True
