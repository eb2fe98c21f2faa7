"""Finish notices: while the shell is open, one line for each agent that ends (completed, failed
or cancelled), printed above the prompt, so work spawned from the shell reports back without the
user polling ``ls``.

The events table is the source (every worker writes there, in any process):
:meth:`FinishNotices.poll` reads the events after the last one it saw and turns the endings
into lines. Only endings after
the shell opened are reported. Reading blocks, so the shell calls it off its event loop.
"""

from __future__ import annotations

from agentgrove.models import AgentRecord, AgentStatus
from agentgrove.store import Store

ENDINGS = frozenset({"agent.completed", "agent.failed", "agent.cancelled"})
_BATCH = 500


class FinishNotices:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._after: int | None = None

    def start(self) -> None:
        """From now on: endings already recorded are not reported."""
        self._after = self._store.last_event_id()

    def poll(self) -> list[str]:
        """Lines for the agents that ended since the last poll (or since :meth:`start`), in the
        order they ended; the first call only starts."""
        if self._after is None:
            self.start()
            return []
        ended: list[str] = []
        while True:
            batch = self._store.events_after(self._after, limit=_BATCH)
            for item in batch:
                self._after = item.event.id
                if item.event.kind in ENDINGS and item.event.agent_id is not None:
                    ended.append(item.event.agent_id)
            if len(batch) < _BATCH:
                break
        return [notice_line(self._store.get_agent(agent_id)) for agent_id in ended]


def notice_line(agent: AgentRecord) -> str:
    """``<id> <role> completed ($0.0123): <output>``, or the error kind and error."""
    head = f"{agent.id} {agent.role} {agent.status.value} (${agent.cost_usd:.4f})"
    if agent.status is AgentStatus.COMPLETED:
        detail = agent.output or ""
    else:
        detail = f"{agent.error_kind}: {agent.error}" if agent.error_kind else (agent.error or "")
    detail = " ".join(detail.split())
    if len(detail) > 160:
        detail = detail[:159] + "…"
    return f"{head}: {detail}" if detail else head
