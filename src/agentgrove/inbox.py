"""What waits for a person: workflow nodes at their approval gates and agents' open questions.

:func:`inbox_items` is pure (agents, questions and gate times in, items out, oldest first);
:func:`read_inbox` reads them from the store. ``grove inbox``, the dashboard's inbox page and
:meth:`agentgrove.Grove.inbox` all show this one list, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agentgrove.models import AgentRecord, AgentStatus, QuestionRecord
from agentgrove.store import Store

__all__ = ["InboxItem", "InboxKind", "inbox_items", "read_inbox"]

InboxKind = Literal["approval", "question"]


@dataclass(frozen=True)
class InboxItem:
    """One thing a person is asked for. ``approval``: the node ``node`` of run ``run_id`` waits
    at its ``gate`` (``before``: approve to start it; ``after``: its result waits for review);
    ``question``: the agent asked ``question`` (with ``choices``, if any). ``since``: when it
    began to wait; ``deadline``: when it decides by itself (``None``: it waits for ever);
    ``command``: how to act on it in the terminal."""

    kind: InboxKind
    agent: AgentRecord
    since: datetime
    command: str
    run_id: str | None = None
    node: str | None = None
    gate: str | None = None
    question: QuestionRecord | None = None
    deadline: datetime | None = None

    @property
    def asks(self) -> str:
        """The request in a few words: the question, or what approving the gate does."""
        if self.question is not None:
            return self.question.question
        if self.gate == "before":
            return f"approve node {self.node} to start it"
        return f"review node {self.node}'s result: approve it, or reject it with a comment"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent_id": self.agent.id,
            "role": self.agent.role,
            "run_id": self.run_id,
            "node": self.node,
            "gate": self.gate,
            "asks": self.asks,
            "question": self.question.to_json() if self.question else None,
            "since": self.since.isoformat(),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "command": self.command,
        }


def inbox_items(
    gated: Iterable[AgentRecord],
    questions: Iterable[QuestionRecord],
    askers: Mapping[str, AgentRecord],
    requested_at: Mapping[str, datetime],
) -> list[InboxItem]:
    """Every gated agent (``awaiting_approval``) and every open question whose agent
    (``askers``) still awaits input, oldest first. ``requested_at``: when each gate was asked
    for (its ``approval.requested`` event); a gate without one counts from its agent's
    creation."""
    items: list[InboxItem] = []
    for agent in gated:
        if agent.status is not AgentStatus.AWAITING_APPROVAL or agent.workflow_run_id is None:
            continue
        items.append(
            InboxItem(
                kind="approval",
                agent=agent,
                since=requested_at.get(agent.id, agent.created_at),
                command=f"grove approve {agent.workflow_run_id} {agent.node_key}"
                f"  |  grove reject {agent.workflow_run_id} {agent.node_key} --comment TEXT",
                run_id=agent.workflow_run_id,
                node=agent.node_key,
                gate=agent.approval_gate,
                deadline=agent.approval_deadline,
            )
        )
    for question in questions:
        asker = askers.get(question.agent_id)
        if asker is None or asker.status is not AgentStatus.AWAITING_INPUT:
            continue
        items.append(
            InboxItem(
                kind="question",
                agent=asker,
                since=question.asked_at,
                command=f"grove answer {asker.id} TEXT",
                run_id=asker.workflow_run_id,
                node=asker.node_key,
                question=question,
                deadline=question.deadline_at,
            )
        )
    return sorted(items, key=lambda item: (item.since, item.agent.id))


def read_inbox(store: Store) -> list[InboxItem]:
    """What waits for a person now (see :func:`inbox_items`)."""
    gated = store.list_agents(status=AgentStatus.AWAITING_APPROVAL)
    questions = store.open_questions()
    askers = {q.agent_id: store.get_agent(q.agent_id) for q in questions}
    requested_at: dict[str, datetime] = {}
    for agent in gated:
        after = 0
        while batch := store.events(agent_id=agent.id, after_id=after):
            for event in batch:
                if event.kind == "approval.requested":
                    requested_at[agent.id] = event.at  # the latest request counts
            after = batch[-1].id
    return inbox_items(gated, questions, askers, requested_at)
