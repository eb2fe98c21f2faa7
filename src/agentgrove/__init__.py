"""agentgrove: orchestrate teams of LLM coding agents through the Claude Agent SDK.

Public surface: :class:`Grove` (the Python API), every record and enum it returns, and every
error it raises. The names load on first use, so ``import agentgrove.cli`` (the ``grove``
command) pays for none of what it does not touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentgrove._lazy import lazy_exports

if TYPE_CHECKING:
    from agentgrove.approvals import Approval, ApprovalOutcome
    from agentgrove.errors import (
        BadInput,
        BadRef,
        ConfigError,
        DiskFull,
        GroveError,
        MissingInputs,
        ModelUnavailable,
        NotInitialised,
        StoreUnavailable,
        UnknownAgent,
        UnknownRole,
    )
    from agentgrove.gitexec import GitError
    from agentgrove.grove import Grove, TreeTotals
    from agentgrove.inbox import InboxItem
    from agentgrove.models import (
        AgentRecord,
        AgentStatus,
        CheckRecord,
        CheckStatus,
        ErrorKind,
        Event,
        NodeView,
        QuestionRecord,
        QuestionState,
        RunRecord,
        RunStatus,
        WorkspaceRecord,
    )
    from agentgrove.stats import StatsReport, StatsRow
    from agentgrove.workflows.spec import WorkflowError, WorkflowSpec
    from agentgrove.workflows.templates import TaskTemplateError
    from agentgrove.workspaces import ConflictMarkersLeft, MergeConflict

_WHERE: dict[str, str] = {
    "AgentRecord": "agentgrove.models",
    "AgentStatus": "agentgrove.models",
    "Approval": "agentgrove.approvals",
    "ApprovalOutcome": "agentgrove.approvals",
    "BadInput": "agentgrove.errors",
    "BadRef": "agentgrove.errors",
    "CheckRecord": "agentgrove.models",
    "CheckStatus": "agentgrove.models",
    "ConfigError": "agentgrove.errors",
    "ConflictMarkersLeft": "agentgrove.workspaces",
    "DiskFull": "agentgrove.errors",
    "InboxItem": "agentgrove.inbox",
    "ErrorKind": "agentgrove.models",
    "Event": "agentgrove.models",
    "GitError": "agentgrove.gitexec",
    "Grove": "agentgrove.grove",
    "GroveError": "agentgrove.errors",
    "MergeConflict": "agentgrove.workspaces",
    "MissingInputs": "agentgrove.errors",
    "ModelUnavailable": "agentgrove.errors",
    "NodeView": "agentgrove.models",
    "NotInitialised": "agentgrove.errors",
    "QuestionRecord": "agentgrove.models",
    "QuestionState": "agentgrove.models",
    "RunRecord": "agentgrove.models",
    "RunStatus": "agentgrove.models",
    "StatsReport": "agentgrove.stats",
    "StatsRow": "agentgrove.stats",
    "StoreUnavailable": "agentgrove.errors",
    "TaskTemplateError": "agentgrove.workflows.templates",
    "TreeTotals": "agentgrove.grove",
    "UnknownAgent": "agentgrove.errors",
    "UnknownRole": "agentgrove.errors",
    "WorkflowError": "agentgrove.workflows.spec",
    "WorkflowSpec": "agentgrove.workflows.spec",
    "WorkspaceRecord": "agentgrove.models",
}

__all__ = [
    "AgentRecord",
    "AgentStatus",
    "Approval",
    "ApprovalOutcome",
    "BadInput",
    "BadRef",
    "CheckRecord",
    "CheckStatus",
    "ConfigError",
    "ConflictMarkersLeft",
    "DiskFull",
    "ErrorKind",
    "Event",
    "GitError",
    "Grove",
    "GroveError",
    "InboxItem",
    "MergeConflict",
    "MissingInputs",
    "ModelUnavailable",
    "NodeView",
    "NotInitialised",
    "QuestionRecord",
    "QuestionState",
    "RunRecord",
    "RunStatus",
    "StatsReport",
    "StatsRow",
    "StoreUnavailable",
    "TaskTemplateError",
    "TreeTotals",
    "UnknownAgent",
    "UnknownRole",
    "WorkflowError",
    "WorkflowSpec",
    "WorkspaceRecord",
]
__version__ = "0.1.0"


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
