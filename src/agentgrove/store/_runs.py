"""Workflow-run queries, and the continuation that moves a run forward.

Contract: :meth:`RunQueries.continue_run` runs inside the transaction that changed a node's
agent (completion, failure, cancellation, sweep), so the dependents that became ready are
inserted as pending in the SAME transaction as their dependency's completion: a crash can lose
no continuation. It is idempotent, and :meth:`reconcile_runs` calls it for every running run
on start-up as a safety net. Decisions come from the pure :mod:`agentgrove.workflows.dag`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from agentgrove.errors import BadInput
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind, NodeView, RunRecord, RunStatus
from agentgrove.store._schema import agents, workflow_runs
from agentgrove.workflows.dag import (
    NodeState,
    blocked_by_failure,
    downstream,
    ready_nodes,
    run_status,
)
from agentgrove.workflows.spec import WorkflowSpec
from agentgrove.workflows.templates import DepResult, TaskTemplateError, render_task


def node_state(agent: AgentRecord) -> NodeState:
    if agent.error_kind is ErrorKind.DEPENDENCY_FAILED:
        return NodeState.DEPENDENCY_FAILED
    return NodeState(agent.status.value)


class RunQueries:
    """Mixed into :class:`agentgrove.store.Store` (which provides the helpers used here)."""

    if TYPE_CHECKING:  # provided by Store

        def _write(self) -> AbstractContextManager[Connection]: ...
        def _read(self) -> AbstractContextManager[Connection]: ...
        def _event(
            self,
            conn: Connection,
            agent_id: str | None,
            kind: str,
            data: dict[str, Any],
            at: datetime | None,
            run_id: str | None = None,
        ) -> None: ...
        def _node_agents(self, conn: Connection, run_id: str) -> dict[str, AgentRecord]: ...
        def _insert_agent_row(self, conn: Connection, values: dict[str, Any]) -> str: ...

    def create_run(
        self,
        run_id: str,
        spec: WorkflowSpec,
        plan: Mapping[str, Mapping[str, Any]],
        inputs: Mapping[str, str],
        base_ref: str | None,
        now: datetime,
    ) -> None:
        """Insert the run and its first ready nodes, in one transaction."""
        with self._write() as conn:
            conn.execute(
                insert(workflow_runs).values(
                    id=run_id,
                    name=spec.name,
                    spec={"workflow": spec.to_json(), "nodes": dict(plan)},
                    inputs=dict(inputs),
                    status=RunStatus.RUNNING.value,
                    base_ref=base_ref,
                    created_at=now,
                )
            )
            self._event(conn, None, "workflow.started", {"name": spec.name}, now, run_id)
            self.continue_run(conn, run_id, now)

    def continue_run(self, conn: Connection, run_id: str, now: datetime) -> None:
        """Start what became ready, fail what can never run, and settle the run's status."""
        row = conn.execute(select(workflow_runs).where(workflow_runs.c.id == run_id)).first()
        if row is None or row.status != RunStatus.RUNNING.value:
            return
        spec = WorkflowSpec.from_json(row.spec["workflow"])
        nodes = self._node_agents(conn, run_id)
        states = {key: node_state(agent) for key, agent in nodes.items()}
        for key in blocked_by_failure(spec, states):
            self._insert_node(conn, row, spec, key, nodes, now, blocked=True)
            states[key] = NodeState.DEPENDENCY_FAILED
        if not any(
            s.unsuccessful for s in states.values()
        ):  # fail fast: nothing new after a failure
            for key in ready_nodes(spec, states):
                states[key] = self._insert_node(conn, row, spec, key, nodes, now, blocked=False)
        status = run_status(spec, states)
        if status != RunStatus.RUNNING.value:
            failed = [k for k, s in states.items() if s in (NodeState.FAILED, NodeState.CANCELLED)]
            conn.execute(
                update(workflow_runs)
                .where(
                    workflow_runs.c.id == run_id, workflow_runs.c.status == RunStatus.RUNNING.value
                )
                .values(
                    status=status,
                    finished_at=now,
                    error=f"node {', '.join(failed)} {states[failed[0]].value}" if failed else None,
                )
            )
            self._event(conn, None, f"workflow.{status}", {}, now, run_id)

    def _insert_node(
        self,
        conn: Connection,
        run: Any,
        spec: WorkflowSpec,
        key: str,
        nodes: Mapping[str, AgentRecord],
        now: datetime,
        *,
        blocked: bool,
    ) -> NodeState:
        node = spec.node(key)
        plan = run.spec["nodes"][key]
        deps = [nodes[d] for d in node.depends_on if d in nodes]
        heads = [d.workspace.head_commit for d in deps if d.workspace and d.workspace.head_commit]
        values: dict[str, Any] = {
            "workflow_run_id": run.id,
            "node_key": key,
            "role": node.role,
            "model": plan["model"],
            "max_attempts": plan["max_attempts"],
            "timeout_s": plan["timeout_s"],
            "base_ref": heads[0] if heads else run.base_ref,
            "merge_refs": heads[1:] or None,
            "created_at": now,
        }
        state = NodeState.PENDING
        if blocked:
            values |= {
                "task": node.task,
                "status": AgentStatus.FAILED.value,
                "error_kind": ErrorKind.DEPENDENCY_FAILED.value,
                "error": "a dependency did not complete",
                "finished_at": now,
            }
            state = NodeState.DEPENDENCY_FAILED
        else:
            results = {
                d.node_key: DepResult(
                    output=d.output or "",
                    branch=d.workspace.branch if d.workspace else None,
                    files_changed=d.workspace.files_changed if d.workspace else (),
                    head_commit=d.workspace.head_commit if d.workspace else None,
                )
                for d in deps
                if d.node_key
            }
            try:
                values["task"] = render_task(node.task, run.inputs, results)
                values["status"] = AgentStatus.PENDING.value
            except TaskTemplateError as exc:
                values |= {
                    "task": node.task,
                    "status": AgentStatus.FAILED.value,
                    "error_kind": ErrorKind.PERMANENT.value,
                    "error": str(exc),
                    "finished_at": now,
                }
                state = NodeState.FAILED
        self._insert_agent_row(conn, values)
        return state

    def reconcile_runs(self, now: datetime) -> list[str]:
        """Continue every running run (start-up safety net); the ids looked at."""
        with self._read() as conn:
            ids = list(
                conn.execute(
                    select(workflow_runs.c.id).where(
                        workflow_runs.c.status == RunStatus.RUNNING.value
                    )
                ).scalars()
            )
        for run_id in ids:
            with self._write() as conn:
                self.continue_run(conn, run_id, now)
        return ids

    def get_run(self, run_id: str) -> RunRecord:
        with self._read() as conn:
            row = conn.execute(select(workflow_runs).where(workflow_runs.c.id == run_id)).first()
            if row is None:
                matches = (
                    conn.execute(
                        select(workflow_runs.c.id)
                        .where(workflow_runs.c.id.startswith(run_id, autoescape=True))
                        .limit(2)
                    )
                    .scalars()
                    .all()
                )
                if len(matches) != 1 or len(run_id) < 4:
                    raise BadInput(
                        f"unknown workflow run {run_id!r}: `grove workflow ls` lists them"
                    )
                row = conn.execute(
                    select(workflow_runs).where(workflow_runs.c.id == matches[0])
                ).one()
            nodes = self._node_agents(conn, row.id)
        return _run_from_row(row, nodes)

    def list_runs(self) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(select(workflow_runs).order_by(workflow_runs.c.created_at)).all()
            return [_run_from_row(r, self._node_agents(conn, r.id)) for r in rows]

    def cancel_run(self, run_id: str, now: datetime) -> list[str]:
        """Cancel the run's queued and running agents; the run ends ``cancelled``."""
        with self._write() as conn:
            ids = list(
                conn.execute(
                    update(agents)
                    .where(
                        agents.c.workflow_run_id == run_id,
                        agents.c.status.in_(
                            [AgentStatus.PENDING.value, AgentStatus.EXECUTING.value]
                        ),
                    )
                    .values(
                        status=AgentStatus.CANCELLED.value,
                        error_kind=ErrorKind.CANCELLED.value,
                        error="workflow run cancelled",
                        lease_owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                    .returning(agents.c.id)
                ).scalars()
            )
            conn.execute(
                update(workflow_runs)
                .where(
                    workflow_runs.c.id == run_id, workflow_runs.c.status == RunStatus.RUNNING.value
                )
                .values(
                    status=RunStatus.CANCELLED.value, finished_at=now, error="cancelled by request"
                )
            )
            for agent_id in ids:
                self._event(conn, agent_id, "agent.cancelled", {}, now, run_id)
            self._event(conn, None, "workflow.cancelled", {}, now, run_id)
        return ids

    def rerun_from(self, run_id: str, key: str, now: datetime) -> list[str]:
        """Supersede ``key`` and everything downstream of it, and start ``key`` again from its
        dependencies' recorded results (upstream results are kept). The keys re-run."""
        with self._write() as conn:
            row = conn.execute(select(workflow_runs).where(workflow_runs.c.id == run_id)).one()
            spec = WorkflowSpec.from_json(row.spec["workflow"])
            if key not in spec.keys:
                raise BadInput(
                    f"run {run_id} has no node {key!r}: its nodes are {', '.join(spec.keys)}"
                )
            nodes = self._node_agents(conn, run_id)
            again = downstream(spec, key)
            live = [k for k in again if k in nodes and not nodes[k].status.finished]
            if live:
                raise BadInput(
                    f"node {live[0]!r} is still {nodes[live[0]].status.value}; wait or cancel first"
                )
            missing = [
                d
                for d in spec.node(key).depends_on
                if d not in nodes or nodes[d].status is not AgentStatus.COMPLETED
            ]
            if missing:
                raise BadInput(
                    f"cannot rerun {key!r}: its dependency {missing[0]!r} has not completed"
                )
            conn.execute(
                update(agents)
                .where(agents.c.workflow_run_id == run_id, agents.c.node_key.in_(again))
                .values(superseded=True)
            )
            conn.execute(
                update(workflow_runs)
                .where(workflow_runs.c.id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None, error=None)
            )
            self._event(conn, None, "workflow.rerun", {"from": key, "nodes": again}, now, run_id)
            self.continue_run(conn, run_id, now)
        return again


def _run_from_row(row: Any, nodes: Mapping[str, AgentRecord]) -> RunRecord:
    spec = WorkflowSpec.from_json(row.spec["workflow"])
    views = tuple(
        NodeView(
            key=n.key,
            role=n.role,
            depends_on=tuple(n.depends_on),
            state=node_state(nodes[n.key]).value if n.key in nodes else NodeState.WAITING.value,
            agent=nodes.get(n.key),
        )
        for n in spec.nodes
    )
    return RunRecord(
        id=row.id,
        name=row.name,
        status=RunStatus(row.status),
        inputs=dict(row.inputs),
        plan=dict(row.spec),
        created_at=row.created_at,
        base_ref=row.base_ref,
        error=row.error,
        finished_at=row.finished_at,
        nodes=views,
    )
