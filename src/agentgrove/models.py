"""Plain data shared by every layer: statuses, error kinds, agent and workspace records.

Nothing here does I/O. The store turns rows into these records; the CLI turns them into the
stable JSON object documented in docs/json.md (see :func:`AgentRecord.to_json`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class AgentStatus(enum.StrEnum):
    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED)


class ErrorKind(enum.StrEnum):
    """Why a run failed; decides whether it may be retried."""

    MODEL_ERROR = "model_error"  # transient: overloaded, 429, 5xx, connection
    TIMEOUT = "timeout"
    BUDGET_EXCEEDED = "budget_exceeded"
    MAX_TURNS = "max_turns"
    CANCELLED = "cancelled"
    PERMANENT = "permanent"  # authentication, bad request, bad configuration
    DEPENDENCY_FAILED = "dependency_failed"
    INTERNAL = "internal"  # a bug or environment failure inside grove itself
    MERGE_CONFLICT = "merge_conflict"  # files still hold conflict markers at the final commit
    CHECK_FAILED = "check_failed"  # the agent's check stayed red after every fix round
    SETUP_FAILED = "setup_failed"  # [workspace] setup failed in the new worktree

    @property
    def transient(self) -> bool:
        return self is ErrorKind.MODEL_ERROR


@dataclass(frozen=True)
class WorkspaceRecord:
    agent_id: str
    repo_path: str | None
    worktree_path: str
    branch: str | None
    base_ref: str | None
    head_commit: str | None = None
    diffstat: str | None = None
    files_changed: tuple[str, ...] = ()
    state: str = "active"  # active | removed | unisolated
    pushed_commit: str | None = None  # the branch head last pushed to [git] remote

    @property
    def shared_commit(self) -> str | None:
        """The commit others build on (dependents, the run branch, the merge queue): the one
        pushed to ``[git] remote`` when there is one, so another machine can fetch it; else
        the head. A completed agent's two are the same: its head is pushed before it ends."""
        return self.pushed_commit or self.head_commit

    def to_json(self) -> dict[str, Any]:
        return {
            "pushed_commit": self.pushed_commit,
            "path": self.worktree_path,
            "branch": self.branch,
            "base_ref": self.base_ref,
            "head_commit": self.head_commit,
            "files_changed": list(self.files_changed),
            "state": self.state,
        }


class CheckStatus(enum.StrEnum):
    """An agent's check: ``none`` when it has no check (or it has not run yet)."""

    NONE = "none"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckRecord:
    """What an agent's check did: the command, its status, how many rounds it took (1: the
    first run; each fix round adds one), the last run's exit code (``None``: it could not start
    or was killed at its timeout), duration and the tail of its output."""

    command: str | None = None
    status: CheckStatus = CheckStatus.NONE
    rounds: int = 0
    exit_code: int | None = None
    duration_ms: int | None = None
    output_tail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "status": self.status.value,
            "rounds": self.rounds,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "output_tail": self.output_tail,
        }


@dataclass(frozen=True)
class AgentRecord:
    id: str
    role: str
    task: str
    model: str
    status: AgentStatus
    created_at: datetime
    parent_id: str | None = None
    base_ref: str | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    output: str | None = None
    attempt: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    budget_usd: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    session_id: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    priority: int = 0
    max_budget_usd: float | None = None
    reserved_usd: float = 0.0
    wait_reason: str | None = None
    depth: int = 0
    after_parent: bool = False
    merge_refs: tuple[str, ...] | None = None
    workflow_run_id: str | None = None
    node_key: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    workspace: WorkspaceRecord | None = None
    check: CheckRecord = field(default_factory=CheckRecord)
    host: str | None = None  # the host whose worker claimed the latest attempt

    def to_json(self) -> dict[str, Any]:
        """The stable object printed by ``--json`` (documented in docs/json.md)."""
        return {
            "id": self.id,
            "role": self.role,
            "status": self.status.value,
            "parent_id": self.parent_id,
            "task": self.task,
            "model": self.model,
            "output": self.output,
            "error": self.error,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "attempt": self.attempt,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "session_id": self.session_id,
            "budget_usd": self.budget_usd,
            "reserved_usd": self.reserved_usd,
            "wait_reason": self.wait_reason,
            "depth": self.depth,
            "workflow_run_id": self.workflow_run_id,
            "node_key": self.node_key,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "workspace": self.workspace.to_json() if self.workspace else None,
            "check": self.check.to_json(),
            "host": self.host,
        }


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    agent_id: str | None
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not RunStatus.RUNNING


@dataclass(frozen=True)
class NodeView:
    """One node of a run as the user sees it: its current agent, if it has one yet."""

    key: str
    role: str
    depends_on: tuple[str, ...]
    state: str  # a NodeState value; "waiting" when no agent exists yet
    agent: AgentRecord | None = None

    def to_json(self) -> dict[str, Any]:
        ws = self.agent.workspace if self.agent else None
        return {
            "key": self.key,
            "role": self.role,
            "depends_on": list(self.depends_on),
            "state": self.state,
            "agent_id": self.agent.id if self.agent else None,
            "base_commit": ws.base_ref if ws else None,
            "result_commit": ws.head_commit
            if ws and self.agent and self.agent.status.finished
            else None,
            "branch": ws.branch if ws else None,
            "tokens_in": self.agent.tokens_in if self.agent else 0,
            "tokens_out": self.agent.tokens_out if self.agent else 0,
            "cost_usd": self.agent.cost_usd if self.agent else 0.0,
            "output": self.agent.output if self.agent else None,
            "error": self.agent.error if self.agent else None,
        }


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    status: RunStatus
    inputs: dict[str, str]
    plan: dict[str, Any]
    created_at: datetime
    base_ref: str | None = None
    error: str | None = None
    finished_at: datetime | None = None
    nodes: tuple[NodeView, ...] = ()
    result_branch: str | None = None
    """``grove/run/<id>`` once the completed run's result branch exists (filled in by
    :mod:`agentgrove.run_branches` where it is read, not stored)."""
    result_commit: str | None = None
    cost_usd: float = 0.0
    """Spent by every agent of the run, including node agents a rerun superseded (as the
    run's budget counts it); ``tokens_in``/``tokens_out`` likewise."""
    tokens_in: int = 0
    tokens_out: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "inputs": self.inputs,
            "base_commit": self.base_ref,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "nodes": [n.to_json() for n in self.nodes],
            "result_branch": self.result_branch,
            "result_commit": self.result_commit,
        }


@dataclass(frozen=True)
class SpawnRequest:
    """What a spawn asks for (validated by ``AgentService.prepare``). ``parent_id`` makes a
    child; with ``after_parent`` it waits for its parent to complete and starts from the
    parent's branch. ``model`` and ``base`` default to the role's model and HEAD."""

    role: str
    task: str
    parent_id: str | None = None
    model: str | None = None
    base: str | None = None
    budget_usd: float | None = None
    after_parent: bool = False
    check: str | None = None
    """A shell command grove runs in the agent's worktree after it ends (exit 0 passes);
    ``None``: the role's check, if any."""


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, as the end of a sentence naming it, or None.
    A NUL: PostgreSQL refuses it in text (and C strings end at it), so grove refuses it on
    every database. A lone surrogate: an invalid UTF-8 byte that Python decoded from argv, the
    environment or a file with ``surrogateescape``; no database can encode it."""
    nul = value.find("\x00")
    if nul >= 0:
        return f"contains a NUL character (at position {nul}); remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        byte = f" (byte 0x{code - 0xDC00:02x})" if 0xDC80 <= code <= 0xDCFF else ""
        return f"is not valid UTF-8{byte} at position {exc.start}; give it as UTF-8 text"
    return None


def elapsed_s(agent: AgentRecord, now: datetime) -> float | None:
    """Wall time of the agent's run: seconds from its start to its end, or to ``now`` while it
    runs (``None`` before it started). Every view (``ls``, ``show``, the dashboard) shows
    this; ``duration_ms`` is the CLI's own figure, summed over attempts."""
    if agent.started_at is None:
        return None
    end = agent.finished_at or (now if agent.status is AgentStatus.EXECUTING else None)
    if end is None:  # released back to pending: the time spent so far is in duration_ms
        return agent.duration_ms / 1000
    return max(0.0, (end - agent.started_at).total_seconds())
