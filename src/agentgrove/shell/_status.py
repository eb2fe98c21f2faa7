"""The shell's status line: agents executing and pending, and what was spent today (UTC).

Reading the store happens in :meth:`StatusLine.refresh`, which the shell calls off the event
loop on a timer and after every command; rendering (:meth:`StatusLine.__call__`, which
prompt_toolkit calls at every key press) only returns the last text, so typing never waits on
the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agentgrove.models import AgentStatus
from agentgrove.store import Store
from agentgrove.store._core import utcnow
from agentgrove.text import one_line


@dataclass(frozen=True)
class Status:
    executing: int
    pending: int
    spent_today_usd: float
    awaiting_input: int = 0

    def render(self) -> str:
        asking = f"awaiting input {self.awaiting_input} · " if self.awaiting_input else ""
        return (
            f" executing {self.executing} · pending {self.pending} · {asking}"
            f"spent today ${self.spent_today_usd:.4f}"
        )


def read_status(store: Store, now: datetime | None = None) -> Status:
    """Counts by status, and the cost of the agents started since midnight UTC (the same day
    the ``[budget] daily_usd`` limit counts)."""
    counts = store.count_by_status()
    midnight = (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
    # The store has no "spent since" aggregate yet; listing is fine at shell scale (the
    # refresh runs off the loop, once a second).
    spent = sum(
        a.cost_usd for a in store.list_agents() if a.started_at and a.started_at >= midnight
    )
    return Status(
        executing=counts.get(AgentStatus.EXECUTING, 0),
        pending=counts.get(AgentStatus.PENDING, 0),
        spent_today_usd=spent,
        awaiting_input=counts.get(AgentStatus.AWAITING_INPUT, 0),
    )


class StatusLine:
    """The ``bottom_toolbar`` of the shell's prompt."""

    def __init__(self, read: Callable[[], Status]) -> None:
        self._read = read
        self._text = " status: reading…"

    def refresh(self) -> None:
        """Read the store again (blocking). A failure shows in the line instead of raising:
        the shell must outlive a briefly locked or unreachable database."""
        try:
            self._text = self._read().render()
        except Exception as exc:
            self._text = " " + one_line(f"status unavailable: {type(exc).__name__}: {exc}", 199)

    def __call__(self) -> str:
        return self._text
