"""agentgrove: orchestrate teams of LLM coding agents through the Claude Agent SDK.

Public surface: :class:`Grove` (the Python API), the records it returns, and the errors.
"""

from agentgrove.errors import BadInput, GroveError, ModelUnavailable, NotInitialised
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind, WorkspaceRecord

__all__ = [
    "AgentRecord",
    "AgentStatus",
    "BadInput",
    "ErrorKind",
    "Grove",
    "GroveError",
    "ModelUnavailable",
    "NotInitialised",
    "WorkspaceRecord",
]
__version__ = "0.1.0"
