"""A stored transcript turned into what the agent page shows. Pure: transcript rows in, entries
out.

The store keeps each SDK message as the JSON of its dataclass (see ``runtime/claude.py``), so
content blocks are told apart by their fields: ``text``, ``thinking``, ``name`` + ``input`` (a
tool call) and ``tool_use_id`` (a tool result). A tool result is attached to the call it answers,
so the page shows each call next to its result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

EntryKind = Literal["text", "thinking", "tool", "result", "system"]
LIMIT = 20_000
"""Characters of one text shown in full; the rest is cut (the database keeps everything)."""


@dataclass
class Entry:
    """One thing shown on the transcript: model text, a tool call and its result, and so on."""

    kind: EntryKind
    attempt: int
    title: str
    body: str = ""
    result: str | None = None
    is_error: bool = False


def entries(transcript: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """Entries in transcript order; each tool call carries its result once one was stored."""
    shown: list[Entry] = []
    calls: dict[str, Entry] = {}
    for row in transcript:
        attempt = int(row.get("attempt", 0))
        kind, message = str(row.get("kind", "")), row.get("message") or {}
        if kind == "AssistantMessage":
            for block in _blocks(message):
                if "name" in block and "input" in block:
                    entry = Entry("tool", attempt, str(block["name"]), _tool_body(block["input"]))
                    calls[str(block.get("id", ""))] = entry
                    shown.append(entry)
                elif "thinking" in block:
                    shown.append(Entry("thinking", attempt, "thinking", _cut(block["thinking"])))
                elif "text" in block:
                    shown.append(Entry("text", attempt, "assistant", _cut(block["text"])))
        elif kind == "UserMessage":
            for block in _blocks(message):
                if "tool_use_id" in block:
                    call = calls.get(str(block["tool_use_id"]))
                    text = _result_text(block.get("content"))
                    if call is None:  # a result whose call was not stored: show it alone
                        call = Entry("tool", attempt, "tool result", "")
                        shown.append(call)
                    call.result, call.is_error = text, bool(block.get("is_error"))
        elif kind in ("ResultMessage", "ScriptedResult"):
            shown.append(_final(attempt, message))
        elif kind == "ScriptedStart":
            shown.append(Entry("system", attempt, "prompt", _cut(message.get("prompt", ""))))
        elif kind == "SystemMessage":
            subtype = str(message.get("subtype", "system"))
            shown.append(Entry("system", attempt, subtype, _pretty(message.get("data", {}))))
    return shown


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, Mapping)]
    return []


def _final(attempt: int, message: Mapping[str, Any]) -> Entry:
    failed = bool(message.get("is_error")) or message.get("success") is False
    text = message.get("result") or message.get("output") or message.get("error") or ""
    subtype = message.get("subtype") or "success"
    if failed and subtype == "success":
        # The CLI reports an API error that ended the run as subtype "success", is_error true.
        subtype = "error"
    facts = [
        f"{k}: {message[k]}" for k in ("num_turns", "duration_ms", "total_cost_usd") if k in message
    ]
    body = _cut(str(text)) + ("\n\n" + ", ".join(facts) if facts else "")
    return Entry("result", attempt, f"result ({subtype})", body, is_error=failed)


def _result_text(content: Any) -> str:
    """A tool result's content: a string, or a list of blocks of which the text ones count."""
    if isinstance(content, list):
        parts = [str(b.get("text", "")) for b in content if isinstance(b, Mapping)]
        return _cut("\n".join(parts))
    return _cut("" if content is None else str(content))


def _tool_body(value: Any) -> str:
    """A tool call's input as the page shows it: ``key: value`` per line, a string as written
    (a Write's content with its real lines, one backslash as one), other values as JSON."""
    if not isinstance(value, Mapping):
        return _pretty(value)
    lines = []
    for key, item in value.items():
        if isinstance(item, str) and "\n" in item:
            lines += [f"{key}:", item.rstrip("\n")]
        elif isinstance(item, str):
            lines.append(f"{key}: {item}")
        else:
            lines.append(f"{key}: {json.dumps(item, indent=2, default=str)}")
    return _cut("\n".join(lines))


def _pretty(value: Any) -> str:
    return _cut(value if isinstance(value, str) else json.dumps(value, indent=2, default=str))


def _cut(value: Any) -> str:
    text = str(value)
    if len(text) <= LIMIT:
        return text
    return text[:LIMIT] + f"\n… ({len(text) - LIMIT} more characters)"
