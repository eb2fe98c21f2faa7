"""Anthropic Messages API wire format for scripted turns (pure, no I/O)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from agentgrove.testing._turns import Turn

__all__ = [
    "encode_sse",
    "error_body",
    "estimate_tokens",
    "message_body",
    "new_message_id",
    "sse_events",
]

SseEvent = tuple[str, dict[str, Any]]


def new_message_id() -> str:
    """A fresh ``msg_<hex>`` id."""
    return f"msg_{uuid.uuid4().hex}"


def _usage(turn: Turn, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": turn.usage.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message_body(turn: Turn, model: str, message_id: str) -> dict[str, Any]:
    """The complete (non-streaming) ``message`` object for ``turn``."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [dict(b) for b in turn.blocks],
        "stop_reason": turn.stop_reason,
        "stop_sequence": None,
        "usage": _usage(turn, turn.usage.output_tokens),
    }


def sse_events(turn: Turn, model: str, message_id: str) -> list[SseEvent]:
    """Streaming events for ``turn``: ``message_start`` first, ``message_stop`` last.

    Text blocks stream as one ``text_delta``, tool_use blocks as one
    ``input_json_delta``; other block types are sent whole in
    ``content_block_start``.
    """
    start = message_body(turn, model, message_id)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = _usage(turn, 1)
    events: list[SseEvent] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(turn.blocks):
        kind = block.get("type")
        delta: dict[str, Any] | None
        if kind == "text":
            head: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "tool_use":
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}
        else:
            head, delta = dict(block), None
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
        )
        if delta is not None:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
                "usage": _usage(turn, turn.usage.output_tokens),
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def encode_sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event frame."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """Anthropic error JSON."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def estimate_tokens(body: dict[str, Any]) -> int:
    """Rough token count of a request: serialized length / 4, at least 1."""
    return max(1, len(json.dumps(body)) // 4)
