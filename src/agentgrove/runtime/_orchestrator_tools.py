"""The orchestrator tools as an in-process MCP server for the Claude CLI.

The model sees them as ``mcp__grove__spawn_agent``, ``mcp__grove__wait_agents``,
``mcp__grove__merge_agent``, ``mcp__grove__agent_result`` and ``mcp__grove__ask_human``
(offered directly because the CLI runs with ``ENABLE_TOOL_SEARCH=false``). Each tool answers
with JSON text; a refusal (:class:`DelegationRefused`) comes back as a tool error the model can
read and act on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from claude_agent_sdk import McpSdkServerConfig, create_sdk_mcp_server, tool

from agentgrove.runtime._base import Delegate, DelegationRefused
from agentgrove.runtime._cli_start import SERVER_NAME

ASK_HUMAN = f"mcp__{SERVER_NAME}__ask_human"
"""The tool after whose call the CLI stops (its PostToolUse hook says ``continue: false``)."""
DEFAULT_WAIT_S = 600.0

_SPAWN_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "description": "Role of the child agent, e.g. implementer."},
        "task": {"type": "string", "description": "What the child should do, self-contained."},
    },
    "required": ["role", "task"],
}
_WAIT_SCHEMA = {
    "type": "object",
    "properties": {
        "ids": {"type": "array", "items": {"type": "string"}, "description": "Agent ids."},
        "timeout_s": {"type": "number", "description": "Give up waiting after this long."},
    },
    "required": ["ids"],
}
_ASK_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "description": "The question, self-contained."},
        "choices": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The answers to offer, if the question has a few (optional).",
        },
    },
    "required": ["question"],
}
_RESULT_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string", "description": "Agent id."}},
    "required": ["id"],
}


def _text(value: object, *, error: bool = False) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value)
    return {"content": [{"type": "text", "text": text}], "is_error": error}


def _guarded(
    call: Callable[[dict[str, Any]], Awaitable[object]],
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def handler(args: dict[str, Any]) -> dict[str, Any]:
        try:
            return _text(await call(args))
        except DelegationRefused as exc:
            return _text(f"refused: {exc}", error=True)

    return handler


def orchestrator_server(delegate: Delegate) -> McpSdkServerConfig:
    """An MCP server whose tools call ``delegate``."""

    async def spawn(args: dict[str, Any]) -> object:
        child = await delegate.spawn_agent(str(args.get("role", "")), str(args.get("task", "")))
        return {"id": child}

    async def wait(args: dict[str, Any]) -> object:
        ids = [str(i) for i in args.get("ids", [])]
        return await delegate.wait_agents(ids, float(args.get("timeout_s") or DEFAULT_WAIT_S))

    async def merge(args: dict[str, Any]) -> object:
        return await delegate.merge_agent(str(args.get("id", "")))

    async def result(args: dict[str, Any]) -> object:
        return await delegate.agent_result(str(args.get("id", "")))

    async def ask(args: dict[str, Any]) -> object:
        raw = args.get("choices") or []
        choices = [str(c) for c in raw] if isinstance(raw, list) else [str(raw)]
        return await delegate.ask_human(str(args.get("question", "")), choices)

    tools = [
        tool(
            "spawn_agent",
            "Start a child agent with a role and a task. Your work so far is committed first and "
            "the child starts from it, in its own worktree. Returns {id}.",
            _SPAWN_SCHEMA,
        )(_guarded(spawn)),
        tool(
            "wait_agents",
            "Wait until the given agents (children you spawned) have finished (or timeout_s "
            "passes), then merge each completed one's work into your worktree, in spawn order. "
            "Returns each one's id, role, status, output, error and merge: its result (merged "
            "with the files, already merged, not completed, conflicted with the paths, not "
            "merged with why). On a conflict the merge stays in progress: edit the files to "
            "remove the conflict markers; grove commits the resolution.",
            _WAIT_SCHEMA,
        )(_guarded(wait)),
        tool(
            "merge_agent",
            "Merge one child's work into your worktree now (after resolving a conflict, or "
            "without waiting). Returns its entry as wait_agents does.",
            _RESULT_SCHEMA,
        )(_guarded(merge)),
        tool(
            "agent_result",
            "The current status, output, error, branch and head commit of one agent.",
            _RESULT_SCHEMA,
        )(_guarded(result)),
        tool(
            "ask_human",
            "Ask a person a question you cannot answer yourself (a decision, a missing fact), "
            "optionally offering choices. Your run pauses after this call: your work so far is "
            "committed, and the person's answer comes as your next message, in this same "
            "conversation. Ask one question at a time.",
            _ASK_SCHEMA,
        )(_guarded(ask)),
    ]
    return create_sdk_mcp_server(SERVER_NAME, tools=tools)
