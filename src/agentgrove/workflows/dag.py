"""The decisions a workflow run makes about its graph. Pure: plain data in, plain data out.

A run knows each node by its :class:`NodeState`; a node with no state yet has not been created.
An engine step is::

    status = run_status(spec, states)           # stop when it is no longer "running"
    for key in blocked_by_failure(spec, states):
        states[key] = NodeState.DEPENDENCY_FAILED
    for key in ready_nodes(spec, states):       # fail fast: skip this once anything failed
        start(key)                              # -> PENDING

Every function returns node keys in a deterministic order (spec order, or topological order
with ties broken by spec order) and expects a spec that passed validation (no cycles, no unknown
dependencies); :func:`topological_order` raises :class:`WorkflowError` on a cycle regardless.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # The states alone (the store's NodeState) must not load the workflow format (issue 13).
    from agentgrove.workflows.spec import WorkflowSpec

RunStatus = Literal["running", "completed", "failed", "cancelled"]


class NodeState(enum.StrEnum):
    """Where one node of a run is. WAITING: created, its dependencies not all completed yet.
    AWAITING_APPROVAL: held at its ``approval:`` gate, before it starts or after it ran."""

    WAITING = "waiting"
    PENDING = "pending"
    EXECUTING = "executing"
    AWAITING_INPUT = "awaiting_input"  # its agent asked a person a question
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEPENDENCY_FAILED = "dependency_failed"
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def active(self) -> bool:
        """An agent is queued or running for this node, waits for an answer to its question,
        or waits at its approval gate (the run is not over while a person may still say yes)."""
        return self in (
            NodeState.PENDING,
            NodeState.EXECUTING,
            NodeState.AWAITING_APPROVAL,
            NodeState.AWAITING_INPUT,
        )

    @property
    def unsuccessful(self) -> bool:
        """The node is over and produced nothing its dependents can use."""
        return self in (NodeState.FAILED, NodeState.CANCELLED, NodeState.DEPENDENCY_FAILED)


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Every node key, each after all its dependencies; among nodes free to go next, the one
    earliest in the spec comes first (so a spec already in order is returned unchanged)."""
    index = {key: i for i, key in enumerate(spec.keys)}
    remaining = {node.key: len(set(node.depends_on) & index.keys()) for node in spec.nodes}
    dependents = _dependents(spec)
    heap = [index[key] for key, count in remaining.items() if count == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        key = spec.nodes[heapq.heappop(heap)].key
        order.append(key)
        for child in dependents[key]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(heap, index[child])
    if len(order) != len(spec.nodes):
        stuck = ", ".join(key for key in spec.keys if key not in order)
        from agentgrove.workflows.spec import WorkflowError

        raise WorkflowError(
            f"workflow {spec.name!r} has a dependency cycle among {stuck}; "
            "validate it with load_workflow"
        )
    return order


def ready_nodes(spec: WorkflowSpec, states: Mapping[str, NodeState]) -> list[str]:
    """Nodes not created yet or WAITING whose dependencies are all COMPLETED, in spec order."""
    return [
        node.key
        for node in spec.nodes
        if _state(states, node.key) in _NOT_STARTED
        and all(_state(states, dep) == NodeState.COMPLETED for dep in node.depends_on)
    ]


def blocked_by_failure(spec: WorkflowSpec, states: Mapping[str, NodeState]) -> list[str]:
    """Nodes not created yet or WAITING that can never run: some dependency, direct or
    transitive, is FAILED, CANCELLED or DEPENDENCY_FAILED. In spec order."""
    depends_on = {node.key: node.depends_on for node in spec.nodes}
    doomed: set[str] = set()
    for key in topological_order(spec):
        state = _state(states, key)
        if (state is not None and state.unsuccessful) or any(
            dep in doomed for dep in depends_on[key]
        ):
            doomed.add(key)
    return [key for key in spec.keys if key in doomed and _state(states, key) in _NOT_STARTED]


def run_status(spec: WorkflowSpec, states: Mapping[str, NodeState]) -> RunStatus:
    """The run's status, from its nodes' states alone.

    * ``completed`` — every node is COMPLETED.
    * ``running`` — some node is PENDING, EXECUTING or AWAITING_APPROVAL; or nothing has gone
      wrong (no node FAILED, CANCELLED or DEPENDENCY_FAILED) and nodes remain to start.
    * otherwise something went wrong and nothing is in flight, so the run is over (fail fast:
      nodes not started stay unstarted): ``failed`` if any node FAILED, else ``cancelled`` if any
      node was CANCELLED, else ``failed`` (only DEPENDENCY_FAILED nodes: a failure upstream).
    """
    found = [_state(states, key) for key in spec.keys]
    if all(state == NodeState.COMPLETED for state in found):
        return "completed"
    if any(state is not None and state.active for state in found):
        return "running"
    if not any(state is not None and state.unsuccessful for state in found):
        return "running"
    if NodeState.FAILED not in found and NodeState.CANCELLED in found:
        return "cancelled"
    return "failed"


def downstream(spec: WorkflowSpec, key: str) -> list[str]:
    """``key`` and every node that depends on it, directly or not, in topological order (what
    ``rerun --from key`` reruns). :class:`WorkflowError` if ``key`` is not a node."""
    spec.node(key)
    dependents = _dependents(spec)
    reached = {key}
    frontier = [key]
    while frontier:
        for child in dependents[frontier.pop()]:
            if child not in reached:
                reached.add(child)
                frontier.append(child)
    return [k for k in topological_order(spec) if k in reached]


_NOT_STARTED = (None, NodeState.WAITING)


def _state(states: Mapping[str, NodeState], key: str) -> NodeState | None:
    """``states[key]`` as a NodeState (callers may pass the plain strings), None if absent."""
    value = states.get(key)
    return None if value is None else NodeState(value)


def _dependents(spec: WorkflowSpec) -> dict[str, list[str]]:
    """For each node, the nodes that list it in depends_on (each once, in spec order)."""
    result: dict[str, list[str]] = {key: [] for key in spec.keys}
    for node in spec.nodes:
        for dep in dict.fromkeys(node.depends_on):
            if dep in result:
                result[dep].append(node.key)
    return result
