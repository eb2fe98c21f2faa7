"""Scripted replies: :class:`Turn` (a model message) and :class:`Fault` (a failure).

Pure: no I/O. Block helpers build Anthropic content blocks; the convenience
helpers (:func:`say`, :func:`write_file`, :func:`bash`, :func:`read_file`)
return whole one-block :class:`Turn` objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from agentgrove.testing._raw import RawReply
from agentgrove.testing._request import ModelRequest

__all__ = [
    "Fault",
    "Reply",
    "Step",
    "Turn",
    "TurnSpec",
    "Usage",
    "bash",
    "read_file",
    "say",
    "text",
    "tool_use",
    "write_file",
]

_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Usage:
    """Token counts reported for a turn (non-zero so the CLI computes a cost)."""

    input_tokens: int = 120
    output_tokens: int = 30


@dataclass(frozen=True)
class Turn:
    """One assistant message: content ``blocks`` (text / tool_use dicts) plus ``usage``."""

    blocks: list[dict[str, Any]]
    usage: Usage = field(default_factory=Usage)

    @property
    def stop_reason(self) -> str:
        """``"tool_use"`` if any block is a tool_use, else ``"end_turn"``."""
        return "tool_use" if any(b.get("type") == "tool_use" for b in self.blocks) else "end_turn"


FaultKind: TypeAlias = Literal["status", "slow", "drop"]


@dataclass(frozen=True)
class Fault:
    """A misbehaving reply; build with :meth:`status`, :meth:`slow` or :meth:`drop`.

    The CLI retries failed calls by re-sending the same request, so faults are
    usually written as attempts: ``Fault.status(529).then(turn)`` is the list
    ``[fault, turn]`` whose items are served to successive requests for the
    same conversation turn (the last item repeats if asked again).
    """

    kind: FaultKind
    status_code: int = 0
    retry_after: float | None = None
    delay_s: float = 0.0
    message: str = ""
    turn: Turn | None = None

    @classmethod
    def status(
        cls, code: int, retry_after: float | None = None, message: str | None = None
    ) -> Fault:
        """HTTP error ``code`` with an Anthropic error body (``retry-after`` header if given)."""
        return cls(
            kind="status",
            status_code=code,
            retry_after=retry_after,
            message=message or f"scripted fault: HTTP {code}",
        )

    @classmethod
    def slow(cls, delay_s: float, turn: Turn | None = None) -> Fault:
        """Stall ``delay_s`` seconds mid-reply, then finish ``turn``.

        When streaming, headers and ``message_start`` are sent first, then the
        stall, then the rest. Without ``turn`` the connection is closed after the
        stall (a hung model). Stalls end early when the server stops.
        """
        return cls(kind="slow", delay_s=delay_s, turn=turn)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection mid-stream (after ``message_start``), or before replying."""
        return cls(kind="drop")

    @property
    def error_type(self) -> str:
        """Anthropic error ``type`` matching :attr:`status_code`."""
        return _ERROR_TYPES.get(self.status_code, "api_error")

    def then(self, *steps: Step) -> list[Step]:
        """Attempts list: this fault first, then ``steps`` for the re-sent requests."""
        return [self, *steps]

    def describe(self) -> str:
        """Short human-readable description."""
        if self.kind == "status":
            extra = f", retry_after={self.retry_after}" if self.retry_after is not None else ""
            return f"Fault.status({self.status_code}{extra})"
        if self.kind == "slow":
            return f"Fault.slow({self.delay_s})"
        return "Fault.drop()"


Reply: TypeAlias = Turn | Fault | RawReply
"""What one request gets back (a :class:`RawReply`: recorded bytes, sent as they are)."""

Step: TypeAlias = Turn | Fault | RawReply | Callable[[ModelRequest], Reply | None]
"""One attempt: a reply, or a function computing it from the request (``None`` = unexpected)."""

TurnSpec: TypeAlias = Step | Sequence[Step]
"""A turn entry of a rule: one step, or a list of attempts served to repeated requests."""


def text(s: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": s}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    """A tool_use content block; ``id`` defaults to ``toolu_<uuid hex>``."""
    return {
        "type": "tool_use",
        "id": id or f"toolu_{uuid.uuid4().hex}",
        "name": name,
        "input": input,
    }


def say(s: str) -> Turn:
    """A turn with a single text block (ends the conversation: ``end_turn``)."""
    return Turn([text(s)])


def write_file(path: str, content: str) -> Turn:
    """A turn calling the Write tool (relative paths resolve against the CLI's cwd)."""
    return Turn([tool_use("Write", {"file_path": path, "content": content})])


def bash(command: str, description: str | None = None) -> Turn:
    """A turn calling the Bash tool with ``command``."""
    payload: dict[str, Any] = {"command": command}
    if description:
        payload["description"] = description
    return Turn([tool_use("Bash", payload)])


def read_file(path: str) -> Turn:
    """A turn calling the Read tool."""
    return Turn([tool_use("Read", {"file_path": path})])


def describe_step(step: Step) -> str:
    """Short description of a step for reports."""
    if isinstance(step, (Fault, RawReply)):
        return step.describe()
    if isinstance(step, Turn):
        parts: list[str] = []
        for block in step.blocks:
            if block.get("type") == "tool_use":
                parts.append(f"tool_use {block.get('name')}")
            elif block.get("type") == "text":
                snippet = str(block.get("text", ""))
                parts.append(f"text {snippet[:40]!r}")
            else:
                parts.append(str(block.get("type")))
        return "Turn(" + ", ".join(parts) + ")"
    name = getattr(step, "__name__", type(step).__name__)
    return f"<computed by {name}>"
