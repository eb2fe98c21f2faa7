"""The records the store takes in: a new agent to insert, and what a finished attempt produced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentgrove.models import AgentStatus, ErrorKind, WorkspaceRecord

if TYPE_CHECKING:
    from agentgrove.store._log import TranscriptMessage


@dataclass(frozen=True)
class NewAgent:
    """A validated request to create an agent (the service validates; the store stores)."""

    role: str
    task: str
    model: str
    parent_id: str | None = None
    base_ref: str | None = None
    max_attempts: int = 3
    timeout_s: float | None = None
    budget_usd: float | None = None
    priority: int = 0
    max_budget_usd: float | None = None
    depth: int = 0
    after_parent: bool = False
    merge_refs: tuple[str, ...] | None = None
    workflow_run_id: str | None = None
    node_key: str | None = None
    id: str | None = None
    check_command: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What a finished attempt produced; written by :meth:`Store.finish`."""

    status: AgentStatus
    output: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    session_id: str | None = None


@dataclass(frozen=True)
class Ending:
    """One attempt's ending for :meth:`Store.finish_many`: its outcome, fenced by its lease
    ``(owner, attempt)``, with the transcript's last ``messages`` written with it."""

    agent_id: str
    owner: str
    attempt: int
    outcome: RunOutcome
    messages: Sequence[TranscriptMessage] = ()


@dataclass(frozen=True)
class WorkspaceSave:
    """One workspace row for :meth:`Store.save_workspaces`, fenced by ``lease`` (owner,
    attempt) when given, with ``events`` (``(kind, data)`` of its agent) written with it."""

    workspace: WorkspaceRecord
    lease: tuple[str, int] | None = None
    events: Sequence[tuple[str, dict[str, Any]]] = ()


__all__ = ["Ending", "NewAgent", "RunOutcome", "WorkspaceSave"]
