"""The Runtime seam: what running one agent attempt takes and gives back.

A runtime receives a :class:`RunSpec`, reports every message it sees through a
:class:`MessageSink` (in order, before returning), and returns a :class:`RunResult`. It never
raises for a failed run: failures come back as ``success=False`` with an :class:`ErrorKind`.
Cancellation (anyio) must stop the run promptly and leave no process behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentgrove.models import ErrorKind
from agentgrove.roles import Role

ROLE_MARKER = "agentgrove-role: "
AGENT_MARKER = "agentgrove-agent: "


class DelegationRefused(Exception):
    """A delegation tool call that grove refuses (limit reached, unknown role...): its message
    goes back to the model as the tool's error result, and the run goes on."""


class Delegate(Protocol):
    """The orchestrator tools a running agent gets (``spawn_agent``, ``wait_agents``,
    ``merge_agent``, ``agent_result``, ``ask_human``). Implemented by the service for each
    claimed attempt."""

    async def spawn_agent(self, role: str, task: str) -> str:
        """Commit the caller's work so far, spawn a child from it; the child's id."""
        ...

    async def wait_agents(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """Wait (without holding a concurrency slot) until the agents (the caller's own
        children only) finished or timeout, then merge each completed one into the caller's
        worktree, in spawn order; per child ``{id, role, status, output, error, merge}``, where
        ``merge`` is ``{result, files | paths, detail}`` (see :mod:`agentgrove.child_merges`)."""
        ...

    async def merge_agent(self, agent_id: str) -> dict[str, Any]:
        """Merge one of the caller's children into its worktree now, by the same rules; its
        entry as in :meth:`wait_agents`."""
        ...

    async def agent_result(self, agent_id: str) -> dict[str, Any]:
        """One agent's ``{id, role, status, output, error, branch, head_commit}`` now."""
        ...

    async def ask_human(self, question: str, choices: list[str]) -> str:
        """Take the caller's question to a person (``choices``: the answers offered, or empty
        for free text); the text the tool answers with. Once it returned, :meth:`asked` is
        true and the runtime ends the run after this tool call: the attempt ends, and the
        answer comes as the next user message of the same session, in a later attempt.
        :class:`DelegationRefused` for a question grove will not take (empty, too long, a
        second one in the same attempt, one asked in a fix round)."""
        ...

    def asked(self) -> bool:
        """Whether :meth:`ask_human` took a question in this attempt."""
        ...


@dataclass(frozen=True)
class RunSpec:
    """One attempt of one agent."""

    agent_id: str
    role: Role
    prompt: str
    model: str
    cwd: Path
    max_turns: int
    max_budget_usd: float
    timeout_s: float
    attempt: int = 1
    resume_session_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    delegate: Delegate | None = None
    home: Path | None = None
    """The grove home: where the runtime keeps its private files (the CLI wrapper), and what
    an agent's sandboxed Bash may not read or write, but for its own worktree."""
    git_dir: Path | None = None
    """The main repository's git directory (shared by every worktree, this one's admin
    directory included): the agent's sandboxed Bash may read it but never write it (refs,
    objects, packed-refs, HEAD, index); grove commits the agent's work itself."""

    @property
    def system_prompt(self) -> str:
        """The role's prompt, preceded by who the agent is (the scripted model matches on it)."""
        return (
            f"{ROLE_MARKER}{self.role.name}\n{AGENT_MARKER}{self.agent_id}\n"
            f"You are an agent of agentgrove working in a git worktree at {self.cwd}. "
            "Work only inside it; grove commits your changes when you finish.\n\n"
            f"{self.role.system_prompt}"
        )


@dataclass(frozen=True)
class RunResult:
    success: bool
    output: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    session_id: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    retry_after_s: float | None = None
    """How long the model API asked to be left alone (its Retry-After, as the CLI applied it)."""
    rate_limited: bool = False
    """The model API answered 429 during the run (whether or not the CLI's retries got past it)."""


class MessageSink(Protocol):
    """Receives each message of a run: ``kind`` names it, ``message`` is JSON-ready, ``event``
    (optional) is a short ``(kind, data)`` summary for the event log."""

    def __call__(
        self, kind: str, message: dict[str, Any], event: tuple[str, dict[str, Any]] | None
    ) -> None: ...


class Runtime(Protocol):
    """Runs one agent attempt to its end; see the module docstring for the contract."""

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult: ...


@runtime_checkable
class SessionLookup(Protocol):
    """A runtime whose sessions live on the machine that ran them: it says whether a session
    can be resumed here (see :mod:`agentgrove.sessions`). A runtime without this method is
    taken to resume any session it is given."""

    def has_session(self, session_id: str) -> bool: ...
