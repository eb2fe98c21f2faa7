"""Workflow-run queries, and the continuation that moves a run forward.

Contract: :meth:`RunQueries.continue_run` runs inside the transaction that changed a node's
agent (completion, failure, cancellation, sweep), so the dependents that became ready are
inserted as pending in the SAME transaction as their dependency's completion: a crash can lose
no continuation. It is idempotent, and :meth:`reconcile_runs` calls it for every running run
on start-up as a safety net. Decisions come from the pure :mod:`agentgrove.workflows.dag`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, bindparam, func, insert, select, update

from agentgrove.approvals import deadline, wait_reason
from agentgrove.errors import BadInput
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind, NodeView, RunRecord, RunStatus
from agentgrove.store._core import StoreCore
from agentgrove.store._rows import _agent_from_row, _agent_select
from agentgrove.store._schema import agents, workflow_nodes, workflow_runs, workflow_specs
from agentgrove.workflows.dag import (
    NodeState,
    blocked_by_failure,
    downstream,
    ready_nodes,
)
from agentgrove.workflows.templates import DepResult, TaskTemplateError, render_task

if TYPE_CHECKING:
    # Parsing a run's workflow imports pydantic's model machinery and the workflow format:
    # a command that reads no run (``grove ls``) should not pay for it (issue 13).
    from agentgrove.workflows.spec import NodeSpec, WorkflowSpec


def node_check(
    template: str | None, inputs: Mapping[str, str], role_check: str | None
) -> str | None:
    """A node's check command: its ``check:`` rendered with the run's inputs (it may use no
    node's result), or the role's check when it has none or it renders blank. Pure."""
    rendered = render_task(template, inputs, {}).strip() if template is not None else ""
    return rendered or role_check


def held_values(
    run_id: str, key: str, gate: Literal["before", "after"], timeout_s: float | None, now: datetime
) -> dict[str, Any]:
    """The agent columns of node ``key`` held at its ``gate`` from ``now`` (approvals)."""
    until = deadline(now, timeout_s)
    return {
        "status": AgentStatus.AWAITING_APPROVAL.value,
        "approval_gate": gate,
        "approval_deadline": until,
        "wait_reason": wait_reason(run_id, key, gate, until),
    }


def node_state(agent: AgentRecord) -> NodeState:
    if agent.error_kind is ErrorKind.DEPENDENCY_FAILED:
        return NodeState.DEPENDENCY_FAILED
    return NodeState(agent.status.value)


SHAPES_KEPT = 32
"""Parsed runs a process keeps (a 10,000-node run's spec is about 2.4 MB of JSON)."""


class _ShapeCache:
    """A small LRU of parsed runs, safe across the threads that share a store."""

    def __init__(self) -> None:
        self._shapes: OrderedDict[str, _RunShape] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> _RunShape | None:
        with self._lock:
            shape = self._shapes.get(run_id)
            if shape is not None:
                self._shapes.move_to_end(run_id)
            return shape

    def put(self, run_id: str, shape: _RunShape) -> _RunShape:
        with self._lock:
            self._shapes[run_id] = shape
            self._shapes.move_to_end(run_id)
            while len(self._shapes) > SHAPES_KEPT:
                self._shapes.popitem(last=False)
        return shape


@dataclass(frozen=True)
class _RunShape:
    """What a completion needs from a run's spec, looked up by key: a run of N nodes must not
    cost O(N) per completion (scanning ``spec.nodes`` or building ``spec.keys`` did)."""

    spec: WorkflowSpec
    plan: Mapping[str, Mapping[str, Any]]
    nodes: Mapping[str, NodeSpec]
    position: Mapping[str, int]
    dependents: Mapping[str, list[str]]

    @classmethod
    def parse(cls, stored: Mapping[str, Any]) -> _RunShape:
        from agentgrove.workflows.spec import WorkflowSpec

        spec = WorkflowSpec.from_json(stored["workflow"])
        dependents: dict[str, list[str]] = {node.key: [] for node in spec.nodes}
        for node in spec.nodes:
            for dep in node.depends_on:
                dependents[dep].append(node.key)
        return cls(
            spec=spec,
            plan=stored["nodes"],
            nodes={node.key: node for node in spec.nodes},
            position={node.key: i for i, node in enumerate(spec.nodes)},
            dependents=dependents,
        )


class RunQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store` (which provides the helpers used here)."""

    def create_run(
        self,
        run_id: str,
        spec: WorkflowSpec,
        plan: Mapping[str, Mapping[str, Any]],
        inputs: Mapping[str, str],
        base_ref: str | None,
        now: datetime,
        budget_usd: float | None = None,
    ) -> None:
        """Insert the run and its first ready nodes, in one transaction."""
        with self._write(wake=True) as conn:
            conn.execute(
                insert(workflow_runs).values(
                    id=run_id,
                    name=spec.name,
                    inputs=dict(inputs),
                    status=RunStatus.RUNNING.value,
                    base_ref=base_ref,
                    budget_usd=budget_usd,
                    created_at=now,
                )
            )
            conn.execute(
                insert(workflow_specs).values(
                    run_id=run_id, spec={"workflow": spec.to_json(), "nodes": dict(plan)}
                )
            )
            conn.execute(
                insert(workflow_nodes),
                [
                    {"run_id": run_id, "key": node.key, "deps_remaining": len(node.depends_on)}
                    for node in spec.nodes
                ],
            )
            self._event(conn, None, "workflow.started", {"name": spec.name}, now, run_id)
            self.continue_run(conn, run_id, now)

    def _shape(self, conn: Connection, run_id: str) -> _RunShape:
        """The run's workflow, read and parsed once per process while it is in use (a run's
        spec never changes): the :data:`SHAPES_KEPT` most recently used runs are kept."""
        cache: _ShapeCache = self.__dict__.setdefault("_run_shapes", _ShapeCache())
        shape = cache.get(run_id)
        if shape is None:
            stored = conn.execute(_GET_SPEC, {"id": run_id}).scalar_one()
            shape = cache.put(run_id, _RunShape.parse(stored))
        return shape

    def _lock_run(self, conn: Connection, run_id: str) -> Any:
        """The run's row, locked for this transaction: continuations of one run never
        interleave (Postgres row lock; SQLite transactions are serial anyway)."""
        return conn.execute(_LOCK_RUN, {"id": run_id}).first()

    def continue_run(self, conn: Connection, run_id: str, now: datetime) -> None:
        """Full step over every node (run start, rerun, start-up reconcile): start what is
        ready, fail what can never run, recount the nodes and settle the run's status."""
        row = self._lock_run(conn, run_id)
        if row is None or row.status != RunStatus.RUNNING.value:
            return
        shape = self._shape(conn, run_id)
        spec = shape.spec
        nodes = self._node_agents(conn, run_id)
        states = {key: node_state(agent) for key, agent in nodes.items()}
        for key in blocked_by_failure(spec, states):
            states[key] = self._insert_node(conn, row, shape, key, nodes, now, blocked=True)
        if not any(s.unsuccessful for s in states.values()):  # fail fast after a failure
            for key in ready_nodes(spec, states):
                states[key] = self._insert_node(conn, row, shape, key, nodes, now, blocked=False)
        counts = {
            "nodes_total": len(spec.nodes),
            "nodes_completed": sum(s == NodeState.COMPLETED for s in states.values()),
            "nodes_active": sum(s.active for s in states.values()),
            "nodes_failed": sum(s == NodeState.FAILED for s in states.values()),
            "nodes_cancelled": sum(s == NodeState.CANCELLED for s in states.values()),
        }
        conn.execute(update(workflow_runs).where(workflow_runs.c.id == run_id).values(**counts))
        remaining = {
            node.key: sum(states.get(d) != NodeState.COMPLETED for d in node.depends_on)
            for node in spec.nodes
        }
        for key, count in remaining.items():
            conn.execute(
                update(workflow_nodes)
                .where(workflow_nodes.c.run_id == run_id, workflow_nodes.c.key == key)
                .values(deps_remaining=count)
            )
        self._settle(conn, run_id, counts, now)

    def node_finished(
        self, conn: Connection, run_id: str, key: str, state: NodeState, now: datetime
    ) -> None:
        """Incremental step after node ``key`` reached ``state`` (completed, failed or
        cancelled), in the same transaction: only its dependents are looked at, and the
        counters say how the run stands, so each step costs the same however large the run."""
        row = self._lock_run(conn, run_id)
        if row is None or row.status != RunStatus.RUNNING.value:
            return
        shape = self._shape(conn, run_id)
        delta = {"nodes_active": -1, "nodes_completed": 0, "nodes_failed": 0, "nodes_cancelled": 0}
        if state == NodeState.COMPLETED:
            delta["nodes_completed"] = 1
            dependents = shape.dependents[key]
            ready: list[str] = []
            if dependents:
                ready = [
                    r.key
                    for r in conn.execute(
                        update(workflow_nodes)
                        .where(
                            workflow_nodes.c.run_id == run_id,
                            workflow_nodes.c.key.in_(dependents),
                        )
                        .values(deps_remaining=workflow_nodes.c.deps_remaining - 1)
                        .returning(workflow_nodes.c.key, workflow_nodes.c.deps_remaining)
                    )
                    if r.deps_remaining == 0
                ]
            if row.nodes_failed == 0 and row.nodes_cancelled == 0:  # fail fast
                for dependent in sorted(ready, key=shape.position.__getitem__):
                    nodes = self._node_agents(conn, run_id, keys=[dependent])
                    if dependent in nodes:
                        continue
                    started = self._insert_node(
                        conn, row, shape, dependent, nodes, now, blocked=False
                    )
                    delta["nodes_active"] += started.active
                    delta["nodes_failed"] += started == NodeState.FAILED
        else:
            delta["nodes_failed" if state == NodeState.FAILED else "nodes_cancelled"] = 1
            below = downstream(shape.spec, key)[1:]
            existing = self._node_agents(conn, run_id, keys=below)
            for doomed in below:
                if doomed not in existing:
                    self._insert_node(conn, row, shape, doomed, existing, now, blocked=True)
            # Fail fast: a node held at its approval gate will not be needed; left waiting, it
            # would keep the run running until someone decided.
            released = self._cancel_held(conn, run_id, now)
            delta["nodes_active"] -= released
            delta["nodes_cancelled"] += released
        counts = {name: getattr(row, name) + change for name, change in delta.items()} | {
            "nodes_total": row.nodes_total
        }
        conn.execute(
            update(workflow_runs)
            .where(workflow_runs.c.id == run_id)
            .values({name: counts[name] for name in delta})
        )
        self._settle(conn, run_id, counts, now)

    def _cancel_held(self, conn: Connection, run_id: str, now: datetime) -> int:
        """Cancel the run's nodes awaiting approval (the run failed); how many there were."""
        held = (
            conn.execute(
                update(agents)
                .where(
                    agents.c.workflow_run_id == run_id,
                    agents.c.status == AgentStatus.AWAITING_APPROVAL.value,
                    agents.c.superseded.is_(False),
                )
                .values(
                    status=AgentStatus.CANCELLED.value,
                    error_kind=ErrorKind.CANCELLED.value,
                    error="the run failed while this node awaited approval",
                    finished_at=now,
                    wait_reason=None,
                    approval_gate=None,
                    approval_deadline=None,
                )
                .returning(agents.c.id)
            )
            .scalars()
            .all()
        )
        for agent_id in held:
            self._event(conn, agent_id, "agent.cancelled", {}, now, run_id)
        return len(held)

    def _settle(
        self, conn: Connection, run_id: str, counts: Mapping[str, int], now: datetime
    ) -> None:
        """End the run when its counters say it is over (see :func:`dag.run_status`)."""
        if counts["nodes_completed"] == counts["nodes_total"]:
            status = RunStatus.COMPLETED
        elif counts["nodes_active"] > 0 or not (
            counts["nodes_failed"] or counts["nodes_cancelled"]
        ):
            return
        else:
            status = RunStatus.FAILED if counts["nodes_failed"] else RunStatus.CANCELLED
        error = None
        if status is not RunStatus.COMPLETED:
            bad = [
                f"{a.node_key} rejected"
                if a.error_kind is ErrorKind.REJECTED
                else f"{a.node_key} {a.status.value}"
                for a in self._node_agents(conn, run_id).values()
                if a.status in (AgentStatus.FAILED, AgentStatus.CANCELLED)
                and a.error_kind is not ErrorKind.DEPENDENCY_FAILED
            ]
            error = "node " + ", ".join(bad) if bad else None
        ended = conn.execute(
            update(workflow_runs)
            .where(workflow_runs.c.id == run_id, workflow_runs.c.status == RunStatus.RUNNING.value)
            .values(status=status.value, finished_at=now, error=error)
        )
        self._event(conn, None, f"workflow.{status.value}", {}, now, run_id)
        if ended.rowcount == 1:
            self._finished_event(conn, run_id, status, error, now)

    def _finished_event(
        self, conn: Connection, run_id: str, status: RunStatus, error: str | None, now: datetime
    ) -> None:
        """``workflow.finished``, however the run ended, in the transaction that ended it:
        one event for whoever waits on any ending (notifications)."""
        data = {"status": status.value, "error": error}
        self._event(conn, None, "workflow.finished", data, now, run_id)

    def run_status(self, run_id: str) -> RunStatus:
        with self._read() as conn:
            status = conn.execute(
                select(workflow_runs.c.status).where(workflow_runs.c.id == run_id)
            ).scalar_one()
        return RunStatus(status)

    def _insert_node(
        self,
        conn: Connection,
        run: Any,
        shape: _RunShape,
        key: str,
        nodes: Mapping[str, AgentRecord],
        now: datetime,
        *,
        blocked: bool,
    ) -> NodeState:
        node = shape.nodes[key]
        plan = shape.plan[key]
        deps = [nodes[d] for d in node.depends_on if d in nodes]
        if not blocked and len(deps) != len(node.depends_on):
            deps = list(self._node_agents(conn, run.id, keys=list(node.depends_on)).values())
        # The pushed commit: a dependency that ran on another machine is fetched from the remote.
        heads = [c for d in deps if d.workspace and (c := d.workspace.shared_commit)]
        values: dict[str, Any] = {
            "workflow_run_id": run.id,
            "node_key": key,
            "role": node.role,
            "model": plan["model"],
            "max_attempts": plan["max_attempts"],
            "timeout_s": plan["timeout_s"],
            "max_budget_usd": plan.get("max_budget_usd"),
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
                values["check_command"] = node_check(node.check, run.inputs, plan.get("check"))
                values["status"] = AgentStatus.PENDING.value
                if node.approval == "before":  # no worker may claim it until approved
                    values |= held_values(run.id, key, "before", node.approval_timeout_s, now)
                    self._deadline_written()
                    state = NodeState.AWAITING_APPROVAL
            except TaskTemplateError as exc:
                values |= {
                    "task": node.task,
                    "status": AgentStatus.FAILED.value,
                    "error_kind": ErrorKind.PERMANENT.value,
                    "error": str(exc),
                    "finished_at": now,
                }
                state = NodeState.FAILED
        agent_id = self._insert_agent_row(conn, values)
        if state is NodeState.AWAITING_APPROVAL:
            self._event(
                conn, agent_id, "approval.requested", {"node": key, "gate": "before"}, now, run.id
            )
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
            with self._write(wake=True) as conn:
                self.continue_run(conn, run_id, now)
        return ids

    def get_run(self, run_id: str) -> RunRecord:
        with self._read() as conn:
            row = conn.execute(_RUN_WITH_SPEC.where(workflow_runs.c.id == run_id)).first()
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
                row = conn.execute(_RUN_WITH_SPEC.where(workflow_runs.c.id == matches[0])).one()
            nodes = self._node_agents(conn, row.id)
        return _run_from_row(row, nodes)

    def list_runs(self) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(_RUN_WITH_SPEC.order_by(workflow_runs.c.created_at)).all()
            return [_run_from_row(r, self._node_agents(conn, r.id)) for r in rows]

    def cancel_run(self, run_id: str, now: datetime) -> list[str]:
        """Cancel the run's queued and running agents; the run ends ``cancelled``."""
        with self._write(wake=True) as conn:
            ids = list(
                conn.execute(
                    update(agents)
                    .where(
                        agents.c.workflow_run_id == run_id,
                        agents.c.status.in_(
                            [
                                AgentStatus.PENDING.value,
                                AgentStatus.EXECUTING.value,
                                AgentStatus.AWAITING_APPROVAL.value,
                                AgentStatus.AWAITING_INPUT.value,
                            ]
                        ),
                    )
                    .values(
                        status=AgentStatus.CANCELLED.value,
                        error_kind=ErrorKind.CANCELLED.value,
                        error="workflow run cancelled",
                        lease_owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                        # As in Store.cancel: a running attempt's real cost will never be
                        # reported (its writes are fenced out now), so its reservation counts
                        # as spent; left reserved, it would shrink every limit for good.
                        cost_usd=agents.c.cost_usd + agents.c.reserved_usd,
                        reserved_usd=0.0,
                        wait_reason=None,
                        approval_gate=None,
                        approval_deadline=None,
                    )
                    .returning(agents.c.id)
                ).scalars()
            )
            ended = conn.execute(
                update(workflow_runs)
                .where(
                    workflow_runs.c.id == run_id, workflow_runs.c.status == RunStatus.RUNNING.value
                )
                .values(
                    status=RunStatus.CANCELLED.value, finished_at=now, error="cancelled by request"
                )
            )
            self.close_questions(conn, ids)
            for agent_id in ids:
                self._event(conn, agent_id, "agent.cancelled", {}, now, run_id)
            self._event(conn, None, "workflow.cancelled", {}, now, run_id)
            if ended.rowcount == 1:
                self._finished_event(conn, run_id, RunStatus.CANCELLED, "cancelled by request", now)
        return ids

    def rerun_from(self, run_id: str, key: str, now: datetime) -> list[str]:
        """Supersede ``key`` and everything downstream of it, and start ``key`` again from its
        dependencies' recorded results (upstream results are kept). The keys re-run."""
        with self._write(wake=True) as conn:
            spec = self._shape(conn, run_id).spec
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
                    f"cannot rerun {key!r}: its dependency {missing[0]!r} has not completed; "
                    f"rerun from {missing[0]!r} instead"
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

    def _node_agents(
        self, conn: Connection, run_id: str, keys: list[str] | None = None
    ) -> dict[str, AgentRecord]:
        """The current (not superseded) agent of each node of a run (or of ``keys``)."""
        query = (
            _agent_select()
            .where(
                agents.c.workflow_run_id == run_id,
                agents.c.superseded.is_(False),
                agents.c.node_key.is_not(None),
            )
            .order_by(agents.c.created_at, agents.c.id)
        )
        if keys is not None:
            query = query.where(agents.c.node_key.in_(keys))
        rows = conn.execute(query)
        found: dict[str, AgentRecord] = {}
        for row in rows:
            record = _agent_from_row(row)
            if record.node_key is not None:
                found[record.node_key] = record
        return found


_LOCK_RUN = select(workflow_runs).where(workflow_runs.c.id == bindparam("id")).with_for_update()
_GET_SPEC = select(workflow_specs.c.spec).where(workflow_specs.c.run_id == bindparam("id"))


def _run_total(column: Any) -> Any:
    """The sum of ``column`` over every agent of the run, superseded ones too: a rerun's
    earlier attempts were spent, and the run's budget counts them (``grove budget``)."""
    return (
        select(func.coalesce(func.sum(column), 0))
        .where(agents.c.workflow_run_id == workflow_runs.c.id)
        .scalar_subquery()
    )


_RUN_WITH_SPEC = select(
    workflow_runs,
    workflow_specs.c.spec,
    _run_total(agents.c.cost_usd).label("total_cost_usd"),
    _run_total(agents.c.tokens_in).label("total_tokens_in"),
    _run_total(agents.c.tokens_out).label("total_tokens_out"),
).join(workflow_specs, workflow_specs.c.run_id == workflow_runs.c.id)


def _unstarted_state(run: RunStatus) -> NodeState:
    """The state of a node that has no agent yet: it waits while its run runs; a cancelled run
    never starts it, so it is cancelled too (not "waiting" forever)."""
    return NodeState.CANCELLED if run is RunStatus.CANCELLED else NodeState.WAITING


def _run_from_row(row: Any, nodes: Mapping[str, AgentRecord]) -> RunRecord:
    from agentgrove.workflows.spec import WorkflowSpec

    spec = WorkflowSpec.from_json(row.spec["workflow"])
    views = tuple(
        NodeView(
            key=n.key,
            role=n.role,
            depends_on=tuple(n.depends_on),
            state=node_state(nodes[n.key]).value
            if n.key in nodes
            else _unstarted_state(RunStatus(row.status)).value,
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
        cost_usd=float(row.total_cost_usd),
        tokens_in=int(row.total_tokens_in),
        tokens_out=int(row.total_tokens_out),
    )
