"""Runtimes run one agent attempt: :class:`ClaudeRuntime` (the real SDK) and
:class:`ScriptedRuntime` (in-process, for unit tests and benchmarks)."""

from agentgrove.runtime._base import (
    Delegate,
    DelegationRefused,
    MessageSink,
    RunResult,
    RunSpec,
    Runtime,
    SessionLookup,
)
from agentgrove.runtime._scripted import ScriptedRuntime

__all__ = [
    "Delegate",
    "DelegationRefused",
    "MessageSink",
    "RunResult",
    "RunSpec",
    "Runtime",
    "ScriptedRuntime",
    "SessionLookup",
]
