"""Finish notices: while the shell is open, one line for each agent that ends (completed, failed
or cancelled) or asks a person a question (``agent.question``: it awaits input, and the line
says how to answer), printed above the prompt, so work spawned from the shell reports back
without the user polling ``ls``.

The events table is the source (every worker writes there, in any process):
:meth:`FinishNotices.poll` reads the events after the last one it saw and turns the endings
into lines. Only endings after
the shell opened are reported. Reading blocks, so the shell calls it off its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgrove.models import AgentRecord, AgentStatus
from agentgrove.store import Store
from agentgrove.store._views import FeedEvent
from agentgrove.text import one_line, visible

ENDINGS = frozenset({"agent.completed", "agent.failed", "agent.cancelled", "agent.question"})
_BATCH = 500
LAG_IDS = 1000
"""How far back each poll reads again, for events that committed after higher ids."""


class FinishNotices:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._after: int | None = None
        self._seen: set[int] = set()

    def start(self) -> None:
        """From now on: endings already recorded are not reported."""
        self._after = self._store.last_event_id()
        self._seen = {item.event.id for item in self._recent(self._after)}

    def poll(self) -> list[str]:
        """Lines for the agents that ended since the last poll (or since :meth:`start`), in the
        order they were read; the first call only starts. Each ending is reported once, also
        one whose event got a lower id than events already read but committed after them
        (PostgreSQL numbers rows at insert, not at commit): the last :data:`LAG_IDS` ids are
        read again. Nothing is marked read unless its lines were built."""
        if self._after is None:
            self.start()
            return []
        seen = set(self._seen)
        after = self._after
        ended: list[str] = []
        for item in self._recent(self._after):
            if item.event.id in seen:
                continue
            seen.add(item.event.id)
            after = max(after, item.event.id)
            if item.event.kind in ENDINGS and item.event.agent_id is not None:
                ended.append(item.event.agent_id)
        lines = [notice_line(self._store.get_agent(agent_id)) for agent_id in ended]
        self._after = after
        self._seen = {i for i in seen if i > after - LAG_IDS}
        return lines

    def mark(self) -> int:
        """Where the events are now: given back to :meth:`shown_by_command` after a command."""
        return self._store.last_event_id()

    def shown_by_command(self, since: int, words: Sequence[str]) -> None:
        """A foreground command that ran from ``since`` (a :meth:`mark`) showed the endings of
        the agents it spawned (``run``, ``workflow run --wait``: their ``agent.spawned`` came
        after ``since``) and of those it named (``wait ID``): those endings get no notice (a
        ``run`` printed its result, then the notice printed it again)."""
        events = self._recent(since + LAG_IDS)  # from ``since`` on
        ids = {e.event.agent_id for e in events if e.event.agent_id is not None}
        named = {i for i in ids for w in words if len(w) >= 4 and i.startswith(w)}
        spawned = {
            e.event.agent_id
            for e in events
            if e.event.kind == "agent.spawned" and e.event.id > since
        }
        for item in events:
            if item.event.kind in ENDINGS and item.event.agent_id in spawned | named:
                self._seen.add(item.event.id)

    def _recent(self, after: int) -> list[FeedEvent]:
        """Events with an id above ``after - LAG_IDS``, oldest first."""
        found: list[FeedEvent] = []
        cursor = max(0, after - LAG_IDS)
        while True:
            batch = self._store.events_after(cursor, limit=_BATCH)
            found += batch
            if len(batch) < _BATCH:
                return found
            cursor = batch[-1].event.id


def notice_line(agent: AgentRecord) -> str:
    """``<id> <role> completed ($0.0123): <output>``, or the error kind and error."""
    role = visible(agent.role, newlines=False)
    head = f"{agent.id} {role} {agent.status.value} (${agent.cost_usd:.4f})"
    if agent.status is AgentStatus.COMPLETED:
        detail = agent.output or ""
    elif agent.status is AgentStatus.AWAITING_INPUT:
        asks = one_line(agent.wait_reason or "asks a question", 160)
        return f"{head}: {asks} (answer {agent.id} TEXT)"
    else:
        detail = f"{agent.error_kind}: {agent.error}" if agent.error_kind else (agent.error or "")
    detail = one_line(detail, 160)
    return f"{head}: {detail}" if detail else head
