"""Cost per passing work: what ``grove stats``, ``Grove.stats`` and the dashboard's cost page
show. Plain data and pure functions; the figures come from one ``GROUP BY`` in
:meth:`agentgrove.store.Store.agent_stats`.

What counts:

* **agents**: the finished agents (completed, failed, cancelled) of the group, superseded
  workflow rows included (their cost was really spent); pending and running agents are left out
  until they finish. ``--since`` keeps the agents that finished at or after that moment.
* **passed**: a completed agent whose check passed. Only a passing check makes work count as
  passed: a completed agent without a check is **unchecked**, not passing, since nothing checked
  its work.
* **cost per pass**: every dollar the group's agents spent (failed, cancelled and unchecked
  ones included) divided by the agents that passed; tokens the same. ``None`` when none passed.
* **pass rate**: passed / agents.
* **median duration**: of ``duration_ms`` over the group's agents that ran (were ever claimed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from agentgrove.errors import BadInput

__all__ = [
    "GROUPINGS",
    "PASSING",
    "Grouping",
    "StatsReport",
    "StatsRow",
    "parse_by",
    "parse_since",
]

Grouping = Literal["role", "model"]
GROUPINGS: tuple[Grouping, ...] = ("role", "model")

PASSING = (
    "passed = completed with its check passing; completed agents without a check are "
    "unchecked, not passing. Cost and tokens per pass divide everything the agents spent "
    "(failed and unchecked ones too) by the agents that passed. agents = finished agents."
)
"""The definition, printed under the table and included in ``--json`` as ``passing``."""


@dataclass(frozen=True)
class StatsRow:
    """The figures of one group (a role, a model, or every agent: ``group`` is ``None``)."""

    group: str | None
    agents: int
    completed: int
    passed: int
    check_failed: int
    unchecked: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    median_duration_ms: float | None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.agents if self.agents else None

    @property
    def cost_per_pass_usd(self) -> float | None:
        return self.cost_usd / self.passed if self.passed else None

    @property
    def tokens_per_pass(self) -> float | None:
        return (self.tokens_in + self.tokens_out) / self.passed if self.passed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "agents": self.agents,
            "completed": self.completed,
            "passed": self.passed,
            "check_failed": self.check_failed,
            "unchecked": self.unchecked,
            "pass_rate": self.pass_rate,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "cost_per_pass_usd": self.cost_per_pass_usd,
            "tokens_per_pass": self.tokens_per_pass,
            "median_duration_ms": self.median_duration_ms,
        }


@dataclass(frozen=True)
class StatsReport:
    """Per-group rows (sorted by group; empty without ``by``) and the total over all of them."""

    by: Grouping | None
    since: datetime | None
    groups: tuple[StatsRow, ...]
    total: StatsRow

    def to_json(self) -> dict[str, Any]:
        """The object ``grove stats --json`` prints (docs/json.md)."""
        return {
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "passing": PASSING,
            "groups": [row.to_json() for row in self.groups],
            "total": self.total.to_json(),
        }


def parse_by(value: str | None) -> Grouping | None:
    """``role``, ``model`` or ``None``; anything else is :class:`BadInput`."""
    if value is None:
        return None
    for grouping in GROUPINGS:
        if value == grouping:
            return grouping
    raise BadInput(f"--by {value!r}: group by role or model")


def parse_since(value: str | datetime | None) -> datetime | None:
    """An aware UTC datetime from an ISO date (midnight UTC) or datetime; one without an offset
    is UTC. Anything else is :class:`BadInput`."""
    if value is None:
        return None
    shown = value if isinstance(value, str) else value.isoformat()
    try:
        when = datetime.fromisoformat(value.strip()) if isinstance(value, str) else value
        # astimezone overflows at the ends of the calendar (0001-01-01T00:00+01:00).
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadInput(
            f"--since {shown!r}: give an ISO date or datetime (UTC unless it says), "
            "e.g. 2026-12-01 or 2026-12-01T09:30"
        ) from None
