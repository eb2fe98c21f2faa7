"""Approval gates: holding a workflow node at its gate, and carrying out a decision.

Contracts (the decisions are :mod:`agentgrove.approvals`'s; this module only writes them):

* A node is held in the transaction that would otherwise have started it (``before``: inserted
  ``awaiting_approval``, never ``pending``) or completed it (``after``: its finished attempt goes
  to ``awaiting_approval`` and its dependents are not counted down), with its
  ``approval.requested`` event (``{"node", "gate"}``, the run's id: what notifications read).
* A decision is one guarded ``UPDATE ... WHERE id=? AND status='awaiting_approval'`` in one
  transaction with its ``approval.approved`` / ``approval.rejected`` event and whatever the run
  does next; a decision that lost a race (another person, a timeout) changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from agentgrove.approvals import (
    TIMEOUT_BY,
    Approval,
    ApprovalOutcome,
    Gate,
    decide,
    rerun_task,
)
from agentgrove.errors import BadInput
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind, RunStatus
from agentgrove.store._runs import RunQueries, _RunShape, held_values
from agentgrove.store._schema import agents
from agentgrove.workflows.dag import NodeState

_AWAITING = AgentStatus.AWAITING_APPROVAL.value


_RELEASED = {"approval_gate": None, "approval_deadline": None, "wait_reason": None}


class ApprovalQueries(RunQueries):
    """Mixed into :class:`agentgrove.store.Store`, before :class:`RunQueries`."""

    def _request_approval(
        self, conn: Connection, agent_id: str, run_id: str, key: str, gate: Gate, now: datetime
    ) -> None:
        self._event(conn, agent_id, "approval.requested", {"node": key, "gate": gate}, now, run_id)

    def _hold_after(
        self, conn: Connection, run_id: str, key: str, agent_id: str, now: datetime
    ) -> bool:
        """Inside the transaction that completed node ``key``'s attempt: hold it at its
        ``after`` gate, if it has one (``True``: the caller must not move the run on)."""
        node = self._shape(conn, run_id).nodes.get(key)
        if node is None or node.approval != "after":
            return False
        conn.execute(
            update(agents)
            .where(agents.c.id == agent_id, agents.c.status == AgentStatus.COMPLETED.value)
            .values(held_values(run_id, key, "after", node.approval_timeout_s, now))
        )
        self._deadline_written()
        self._request_approval(conn, agent_id, run_id, key, "after", now)
        return True

    def decide_approval(
        self,
        run_id: str,
        key: str,
        *,
        approve: bool,
        by: str,
        comment: str | None,
        now: datetime,
    ) -> Approval:
        """A person's decision on node ``key`` of run ``run_id`` (a full id). :class:`BadInput`,
        with nothing changed, when the run has no such node or the node does not wait."""
        with self._write(wake=True) as conn:
            run = self._lock_run(conn, run_id)
            if run is None:
                raise BadInput(f"unknown workflow run {run_id!r}: `grove workflow ls` lists them")
            shape = self._shape(conn, run_id)
            if key not in shape.nodes:
                raise BadInput(
                    f"run {run_id} has no node {key!r}: its nodes are {', '.join(shape.spec.keys)}"
                )
            agent = self._node_agents(conn, run_id, keys=[key]).get(key)
            if agent is None or agent.status is not AgentStatus.AWAITING_APPROVAL:
                state = "waiting for its dependencies" if agent is None else agent.status.value
                if run.status != RunStatus.RUNNING.value and agent is None:
                    state = f"not started (the run is {run.status})"
                raise BadInput(
                    f"node {key!r} of run {run_id} is {state}, not awaiting approval: there is "
                    f"nothing to decide (`grove workflow show {run_id}`)"
                )
            decision = self._decide(
                conn, run, shape, agent, approve=approve, by=by, comment=comment, now=now
            )
            if decision is None:
                raise BadInput(
                    f"node {key!r} of run {run_id} was decided a moment ago; "
                    f"`grove workflow show {run_id}` shows how"
                )
        return decision

    def next_approval_deadline(self, after: datetime) -> datetime | None:
        """The earliest deadline later than ``after`` of a gate still awaiting a decision;
        ``None`` when there is none (a worker sweeps then, see :mod:`agentgrove.worker`)."""
        with self._read() as conn:
            found: datetime | None = conn.execute(
                select(func.min(agents.c.approval_deadline)).where(
                    agents.c.status == _AWAITING, agents.c.approval_deadline > after
                )
            ).scalar()
        return found

    def expire_approvals(self, now: datetime) -> list[Approval]:
        """Decide every gate whose deadline has passed, as its ``approval_on_timeout`` says
        (reject unless ``approve``); the decisions made. Safe in any number of workers: each
        gate is decided once (the guarded UPDATE)."""
        with self._read() as conn:
            due = conn.execute(
                select(agents.c.workflow_run_id, agents.c.node_key).where(
                    agents.c.status == _AWAITING,
                    agents.c.approval_deadline.is_not(None),
                    agents.c.approval_deadline <= now,
                )
            ).all()
        made: list[Approval] = []
        for run_id, key in due:
            with self._write(wake=True) as conn:
                run = self._lock_run(conn, run_id)
                if run is None or run.status != RunStatus.RUNNING.value:
                    continue
                shape = self._shape(conn, run_id)
                agent = self._node_agents(conn, run_id, keys=[key]).get(key)
                node = shape.nodes.get(key)
                if (
                    agent is None
                    or node is None
                    or agent.status is not AgentStatus.AWAITING_APPROVAL
                ):
                    continue
                waited = node.approval_timeout_s or 0
                decision = self._decide(
                    conn,
                    run,
                    shape,
                    agent,
                    approve=node.approval_on_timeout == "approve",
                    by=TIMEOUT_BY,
                    comment=f"no decision within {waited:g}s",
                    now=now,
                    timed_out=True,
                )
                if decision is not None:
                    made.append(decision)
        return made

    def _decide(
        self,
        conn: Connection,
        run: Any,
        shape: _RunShape,
        agent: AgentRecord,
        *,
        approve: bool,
        by: str,
        comment: str | None,
        now: datetime,
        timed_out: bool = False,
    ) -> Approval | None:
        """Carry out one decision on ``agent`` (held at its gate), in ``conn``'s transaction;
        ``None`` when the guarded UPDATE found it no longer waiting (nothing written)."""
        assert agent.node_key is not None
        key = agent.node_key
        gate: Gate = "before" if agent.approval_gate == "before" else "after"
        outcome = decide(
            gate,
            approve=approve,
            # A gate that timed out is not a reviewer's comment to work on: no rerun.
            attempt=agent.max_attempts if timed_out else agent.attempt,
            max_attempts=agent.max_attempts,
        )
        guard = [agents.c.id == agent.id, agents.c.status == _AWAITING]
        if timed_out:
            guard.append(agents.c.approval_deadline <= now)
        values: dict[str, Any] = dict(_RELEASED)
        if outcome is ApprovalOutcome.START:
            values["status"] = AgentStatus.PENDING.value
        elif outcome is ApprovalOutcome.COMPLETE:
            values["status"] = AgentStatus.COMPLETED.value
        elif outcome is ApprovalOutcome.RERUN:
            values |= {
                "status": AgentStatus.PENDING.value,
                "task": rerun_task(agent.task, comment or "", agent.attempt),
                "finished_at": None,
                "not_before": None,
            }
        else:
            why = f": {comment}" if comment else ""
            values |= {
                "status": AgentStatus.FAILED.value,
                "error_kind": ErrorKind.REJECTED.value,
                "error": f"rejected by {by}{why}",
                "finished_at": now,
            }
        if conn.execute(update(agents).where(*guard).values(values)).rowcount != 1:
            return None
        decision = Approval(
            run_id=run.id,
            node=key,
            agent_id=agent.id,
            gate=gate,
            approved=approve,
            by=by,
            at=now,
            comment=comment,
            outcome=outcome,
        )
        data = decision.to_json() | {"timed_out": timed_out}
        kind = "approval.approved" if approve else "approval.rejected"
        self._event(conn, agent.id, kind, data, now, run.id)
        if outcome is ApprovalOutcome.COMPLETE:
            self.node_finished(conn, run.id, key, NodeState.COMPLETED, now)
        elif outcome is ApprovalOutcome.FAIL:
            failed = {"error_kind": ErrorKind.REJECTED.value, "error": values["error"]}
            self._event(conn, agent.id, "agent.failed", failed, now, run.id)
            self.node_finished(conn, run.id, key, NodeState.FAILED, now)
        return decision
