"""The lease fence: a worker's writes about the agent it claimed change nothing unless the
agent is still executing under that worker's ``(lease_owner, attempt)``. The hot writes
(heartbeat, finish) are statements built once and run with parameters ``p_id``, ``p_owner``
and ``p_attempt``: building SQLAlchemy expressions per call costs more CPU than SQLite spends
running them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, update

from agentgrove.models import AgentStatus
from agentgrove.store._schema import agents


def fence(agent_id: str, owner: str | None, attempt: int) -> ColumnElement[bool]:
    """The fence for values known now; ``owner=None`` matches an agent with no lease owner."""
    return and_(
        agents.c.id == agent_id,
        agents.c.status == AgentStatus.EXECUTING.value,
        agents.c.lease_owner == owner,
        agents.c.attempt == attempt,
    )


def _param(name: str) -> Any:
    """``p_<name>``, typed as the agents column ``name`` (the SET of a prebuilt UPDATE)."""
    return bindparam(f"p_{name}", type_=agents.c[name].type)


_FENCE = and_(
    agents.c.id == bindparam("p_id"),
    agents.c.status == AgentStatus.EXECUTING.value,
    agents.c.lease_owner == bindparam("p_owner"),
    agents.c.attempt == bindparam("p_attempt"),
)

HEARTBEAT = update(agents).where(_FENCE).values(lease_expires_at=_param("lease_expires_at"))
"""Extend the lease to ``p_lease_expires_at``."""

FINISH = (
    update(agents)
    .where(_FENCE)
    .values(
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
        lease_owner=None,
        lease_expires_at=None,
        finished_at=_param("finished_at"),
    )
    .returning(agents.c.workflow_run_id, agents.c.node_key)
)
"""End the attempt: its outcome (``p_status`` ... ``p_session_id``; usage is added to the
agent's sums) at ``p_finished_at``, the lease and reservation cleared."""
