"""What is worth telling a person, and how it reads. Pure: no I/O, no database.

Five notification kinds, each from one event kind of the ``events`` table:

=====================  ======================  =========================================
notification           event                   data
=====================  ======================  =========================================
``approval_needed``    ``approval.requested``  ``{"node", "gate"}``, the event's run
``question_asked``     ``agent.question``      ``{"question", "choices"}``, its agent
``agent_failed``       ``agent.failed``        ``{"error_kind", "error", ...}``
``run_finished``       ``workflow.finished``   ``{"status", "error"}``
``budget_exhausted``   ``budget.exhausted``    ``{"scope", "limit_usd", "committed_usd"}``
=====================  ======================  =========================================

A node that never ran because a dependency failed is not news of its own (the failure that
caused it is), so ``agent.failed`` with ``error_kind = dependency_failed`` notifies nobody.

Everything in a notification that an agent could have written (an error, a question, a
node key) is text: :func:`summary` makes control characters visible, and :func:`slack_body`
escapes Slack's ``&``, ``<`` and ``>``, so ``<!channel>`` in an agent's question pings nobody.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentgrove.text import one_line


class NotificationKind(enum.StrEnum):
    APPROVAL_NEEDED = "approval_needed"
    QUESTION_ASKED = "question_asked"
    AGENT_FAILED = "agent_failed"
    RUN_FINISHED = "run_finished"
    BUDGET_EXHAUSTED = "budget_exhausted"


EVENT_KINDS: Mapping[str, NotificationKind] = {
    "approval.requested": NotificationKind.APPROVAL_NEEDED,
    "agent.question": NotificationKind.QUESTION_ASKED,
    "agent.failed": NotificationKind.AGENT_FAILED,
    "workflow.finished": NotificationKind.RUN_FINISHED,
    "budget.exhausted": NotificationKind.BUDGET_EXHAUSTED,
}
"""The event kind each notification comes from."""

ALL_KINDS: tuple[NotificationKind, ...] = tuple(NotificationKind)


def notification_kind(
    event_kind: str, data: Mapping[str, Any], enabled: Collection[NotificationKind]
) -> NotificationKind | None:
    """The notification an event of ``event_kind`` with ``data`` makes, if it is one of
    ``enabled``; ``None`` for every other event."""
    kind = EVENT_KINDS.get(event_kind)
    if kind is None or kind not in enabled:
        return None
    if kind is NotificationKind.AGENT_FAILED and data.get("error_kind") == "dependency_failed":
        return None
    return kind


@dataclass(frozen=True)
class Notice:
    """One notification, as read back from the outbox with its event (and the names that
    make it readable: the agent's role and node, the run's workflow)."""

    id: int
    """The event's id: the notification's identity (receivers can de-duplicate on it)."""
    kind: NotificationKind
    event: str
    at: datetime
    agent_id: str | None
    run_id: str | None
    data: Mapping[str, Any]
    attempt: int
    role: str | None = None
    node: str | None = None
    workflow: str | None = None


def payload(notice: Notice) -> dict[str, Any]:
    """The JSON object a webhook receives and a command reads on its stdin."""
    return {
        "id": notice.id,
        "kind": notice.kind.value,
        "event": notice.event,
        "at": notice.at.isoformat(),
        "agent_id": notice.agent_id,
        "run_id": notice.run_id,
        "role": notice.role,
        "node": notice.node,
        "workflow": notice.workflow,
        "data": dict(notice.data),
        "text": summary(notice),
    }


_LIMIT = 300
"""How much of any one piece of agent text a summary shows."""


def summary(notice: Notice) -> str:
    """One line for a person, with what to do where there is something to do."""
    data = notice.data
    agent = _agent(notice)
    run = _run(notice)
    kind = notice.kind
    if kind is NotificationKind.APPROVAL_NEEDED:
        node = _text(data.get("node") or notice.node)
        gate = _text(data.get("gate"))
        return (
            f"grove: {run} node {node} waits for approval ({gate}): "
            f"grove approve {notice.run_id} {node}"
        )
    if kind is NotificationKind.QUESTION_ASKED:
        choices = data.get("choices") or []
        offered = (
            f" (choices: {', '.join(_text(c) for c in choices)})"
            if isinstance(choices, list) and choices
            else ""
        )
        return (
            f"grove: {agent} asks: {_text(data.get('question'))}{offered}: "
            f"grove answer {notice.agent_id} TEXT"
        )
    if kind is NotificationKind.AGENT_FAILED:
        why = _text(data.get("error_kind") or "failed")
        error = data.get("error")
        return f"grove: {agent} failed ({why})" + (f": {_text(error)}" if error else "")
    if kind is NotificationKind.RUN_FINISHED:
        status = _text(data.get("status"))
        error = data.get("error")
        return f"grove: {run} {status}" + (f": {_text(error)}" if error else "")
    scope = _text(data.get("scope"))
    return (
        f"grove: budget exhausted: {scope} limit ${_money(data.get('limit_usd'))} "
        f"(${_money(data.get('committed_usd'))} spent or reserved); agents wait or fail"
    )


def slack_body(notice: Notice) -> dict[str, Any]:
    """Slack's incoming-webhook body: the summary, with Slack's control characters escaped."""
    escaped = summary(notice).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"text": escaped}


def _agent(notice: Notice) -> str:
    words = f"agent {notice.agent_id}"
    named = [_text(n) for n in (notice.role, notice.node and f"node {notice.node}") if n]
    return words + (f" ({', '.join(named)})" if named else "")


def _run(notice: Notice) -> str:
    words = f"workflow run {notice.run_id}"
    return words + (f" ({_text(notice.workflow)})" if notice.workflow else "")


def _text(value: object) -> str:
    return one_line(None if value is None else str(value), _LIMIT)


def _money(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "?"


def retry_delay_s(attempt: int, retries: int, base_s: float, cap_s: float) -> float | None:
    """After failed attempt number ``attempt`` (1 for the first), how long until the next:
    ``base_s`` doubling, at most ``cap_s``; ``None`` once ``retries`` retries are used up."""
    if attempt > retries:
        return None
    return float(min(cap_s, base_s * 2.0 ** (attempt - 1)))
