"""How agent and workspace rows become records: the one agent SELECT (agents outer-joined to
their workspace, whose columns come back prefixed ``ws_``), built once and refined per query, and
the functions that map its rows to :class:`AgentRecord` and :class:`WorkspaceRecord`. Every query
that returns agents goes through here, so a column is mapped in one place.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row

from agentgrove.models import (
    AgentRecord,
    AgentStatus,
    CheckRecord,
    CheckStatus,
    ErrorKind,
    WorkspaceRecord,
)
from agentgrove.store._schema import agents, workspaces

_AGENT_SELECT = select(agents, *[c.label(f"ws_{c.name}") for c in workspaces.c]).outerjoin(
    workspaces, workspaces.c.agent_id == agents.c.id
)


def _agent_select() -> Any:
    """Agents with their workspace columns (``ws_*``); built once, refined per query."""
    return _AGENT_SELECT


def _workspace_from_row(row: Row[Any], prefix: str = "") -> WorkspaceRecord:
    m = row._mapping
    return WorkspaceRecord(
        agent_id=m[f"{prefix}agent_id"],
        repo_path=m[f"{prefix}repo_path"],
        worktree_path=m[f"{prefix}worktree_path"],
        branch=m[f"{prefix}branch"],
        base_ref=m[f"{prefix}base_ref"],
        head_commit=m[f"{prefix}head_commit"],
        diffstat=m[f"{prefix}diffstat"],
        files_changed=tuple(m[f"{prefix}files_changed"] or ()),
        state=m[f"{prefix}state"],
        pushed_commit=m[f"{prefix}pushed_commit"],
    )


def _agent_from_row(row: Row[Any]) -> AgentRecord:
    m = row._mapping
    ws = _workspace_from_row(row, "ws_") if m["ws_agent_id"] is not None else None
    status = AgentStatus(m["status"])
    return AgentRecord(
        id=m["id"],
        role=m["role"],
        task=m["task"],
        model=m["model"],
        status=status,
        created_at=m["created_at"],
        parent_id=m["parent_id"],
        base_ref=m["base_ref"],
        error_kind=ErrorKind(m["error_kind"]) if m["error_kind"] else None,
        error=m["error"],
        output=m["output"],
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        timeout_s=m["timeout_s"],
        budget_usd=m["budget_usd"],
        tokens_in=m["tokens_in"],
        tokens_out=m["tokens_out"],
        cost_usd=m["cost_usd"],
        duration_ms=m["duration_ms"],
        session_id=m["session_id"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        priority=m["priority"],
        max_budget_usd=m["max_budget_usd"],
        reserved_usd=m["reserved_usd"],
        # A finished agent waits for nothing, whatever a stale row still says (rows written
        # by an older grove kept the reason past a cancel).
        wait_reason=None if status.finished else m["wait_reason"],
        depth=m["depth"],
        after_parent=bool(m["after_parent"]),
        merge_refs=tuple(m["merge_refs"]) if m["merge_refs"] is not None else None,
        workflow_run_id=m["workflow_run_id"],
        node_key=m["node_key"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        workspace=ws,
        check=CheckRecord(
            command=m["check_command"],
            status=CheckStatus(m["check_status"] or "none"),
            rounds=m["check_rounds"] or 0,
            exit_code=m["check_exit_code"],
            duration_ms=m["check_duration_ms"],
            output_tail=m["check_output"],
        ),
        host=m["host"],
        approval_gate=m["approval_gate"] if status is AgentStatus.AWAITING_APPROVAL else None,
        approval_deadline=m["approval_deadline"]
        if status is AgentStatus.AWAITING_APPROVAL
        else None,
    )
