"""Parsed view of one Anthropic Messages API request sent by the Claude Code CLI.

Pure: no I/O. Everything here is derived from the JSON body (plus the optional
session id header), so scripts that read a :class:`ModelRequest` stay stateless.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelRequest", "ToolCall", "strip_system_reminders"]

_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_CWD_RE = re.compile(r"Primary working directory:[ \t]*(\S[^\n]*?)[ \t]*$", re.MULTILINE)
_ROLE_RE = re.compile(r"^[ \t]*agentgrove-role:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_AGENT_RE = re.compile(r"^[ \t]*agentgrove-agent:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


def strip_system_reminders(text: str) -> str:
    """Return ``text`` without ``<system-reminder>...</system-reminder>`` spans, stripped."""
    return _REMINDER_RE.sub("", text).strip()


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


def _text_blocks(content: object) -> list[str]:
    """Text of a message ``content`` (a plain string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                value = block.get("text")
                if isinstance(value, str):
                    out.append(value)
    return out


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(_text_blocks(system))


def _session_from_metadata(body: dict[str, Any]) -> str | None:
    """``session_id`` from ``metadata.user_id`` (a JSON string in CLI requests)."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str):
        return None
    try:
        parsed = json.loads(user_id)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        session = parsed.get("session_id")
        if isinstance(session, str) and session:
            return session
    return None


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made earlier in the conversation, and what the CLI answered.

    ``result`` is the text of the matching ``tool_result`` (reminders stripped), ``None`` when
    the history has no result for it; ``is_error`` is that result's ``is_error`` flag.
    """

    id: str
    name: str
    input: dict[str, Any]
    result: str | None
    is_error: bool


@dataclass(frozen=True)
class ModelRequest:
    """One ``POST /v1/messages`` request, as the script sees it.

    ``system`` is all system text blocks joined with ``"\\n"``; ``raw`` is the
    untouched JSON body. ``session_id`` comes from ``metadata.user_id`` (falling
    back to the ``X-Claude-Code-Session-Id`` header) and is ``None`` for
    hand-made requests.
    """

    model: str
    system: str
    messages: list[dict[str, Any]]
    tool_names: list[str]
    stream: bool
    raw: dict[str, Any]
    session_id: str | None = field(default=None)

    @classmethod
    def from_body(cls, body: dict[str, Any], session_header: str | None = None) -> ModelRequest:
        """Build from a decoded request body; never raises on odd shapes."""
        messages_raw = body.get("messages")
        messages = (
            [m for m in messages_raw if isinstance(m, dict)]
            if isinstance(messages_raw, list)
            else []
        )
        tools_raw = body.get("tools")
        tool_names: list[str] = []
        if isinstance(tools_raw, list):
            for tool in tools_raw:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    tool_names.append(tool["name"])
        model = body.get("model")
        return cls(
            model=model if isinstance(model, str) else "",
            system=_system_text(body.get("system")),
            messages=messages,
            tool_names=tool_names,
            stream=body.get("stream") is True,
            raw=body,
            session_id=_session_from_metadata(body) or session_header or None,
        )

    def _first_user_texts(self) -> list[str]:
        for message in self.messages:
            if message.get("role") == "user":
                return _text_blocks(message.get("content"))
        return []

    @property
    def prompt(self) -> str:
        """The task text: last non-``<system-reminder>`` text block of the first user message."""
        for text in reversed(self._first_user_texts()):
            if not _is_reminder(text):
                return text
        return ""

    @property
    def cwd(self) -> Path | None:
        """Directory from the CLI's ``Primary working directory:`` line, if present."""
        for text in [*self._first_user_texts(), self.system]:
            match = _CWD_RE.search(text)
            if match:
                return Path(match.group(1))
        return None

    @property
    def turn_index(self) -> int:
        """Number of assistant messages already in the history (0 for the first reply)."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def tool_results(self) -> list[str]:
        """Text of each ``tool_result`` block in the last user message, reminders stripped."""
        if not self.messages or self.messages[-1].get("role") != "user":
            return []
        content = self.messages[-1].get("content")
        out: list[str] = []
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    inner = block.get("content")
                    out.append(strip_system_reminders("\n".join(_text_blocks(inner))))
        return out

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every ``tool_use`` block of the assistant messages, in conversation order, each
        with its ``tool_result`` from the user messages (matched by id)."""
        results: dict[str, tuple[str, bool]] = {}
        uses: list[dict[str, Any]] = []
        for message in self.messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                if message.get("role") == "assistant" and block.get("type") == "tool_use":
                    uses.append(block)
                elif message.get("role") == "user" and block.get("type") == "tool_result":
                    text = strip_system_reminders("\n".join(_text_blocks(block.get("content"))))
                    results[str(block.get("tool_use_id"))] = (text, block.get("is_error") is True)
        calls: list[ToolCall] = []
        for use in uses:
            found = results.get(str(use.get("id")))
            raw_input = use.get("input")
            calls.append(
                ToolCall(
                    id=str(use.get("id")),
                    name=str(use.get("name")),
                    input=raw_input if isinstance(raw_input, dict) else {},
                    result=None if found is None else found[0],
                    is_error=found is not None and found[1],
                )
            )
        return calls

    @property
    def role(self) -> str | None:
        """``<name>`` from a line ``agentgrove-role: <name>`` in the system prompt."""
        match = _ROLE_RE.search(self.system)
        return match.group(1) if match else None

    @property
    def agent_id(self) -> str | None:
        """``<id>`` from a line ``agentgrove-agent: <id>`` in the system prompt."""
        match = _AGENT_RE.search(self.system)
        return match.group(1) if match else None

    @property
    def conversation_key(self) -> str:
        """Stable id of the conversation: the session id, else a hash of system + prompt + cwd."""
        if self.session_id:
            return self.session_id
        digest = hashlib.sha256(f"{self.system}\0{self.prompt}\0{self.cwd}".encode()).hexdigest()
        return f"anon-{digest[:16]}"

    def describe(self) -> str:
        """Short one-line description used in error messages."""
        prompt = self.prompt
        if len(prompt) > 80:
            prompt = prompt[:77] + "..."
        return (
            f"role={self.role!r}, agent={self.agent_id!r}, turn={self.turn_index}, "
            f"prompt={prompt!r}"
        )
