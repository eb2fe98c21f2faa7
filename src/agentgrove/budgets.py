"""Budget decisions. Pure: limits and figures in, a grant or a refusal out.

A scope (the day, an agent tree, a workflow run) has a hard ``limit``; ``committed`` is what its
agents have spent plus what running agents have reserved. An agent being claimed is granted
``min(its own cap, what every scope it belongs to has left)``; that grant is the SDK's
``max_budget_usd`` for the attempt and is reserved until the attempt settles to its real cost.
Reservations are taken in the claim's transaction, serialised per database, so concurrent claims
can never commit more than a limit between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentgrove.errors import BadInput

MIN_GRANT_USD = 0.01
"""Below this an attempt could not do one model turn: treat the scope as exhausted."""


@dataclass(frozen=True)
class Scope:
    name: str  # "daily", "tree 1a2b...", "run 3c4d..."
    limit_usd: float
    committed_usd: float

    @property
    def left_usd(self) -> float:
        return max(0.0, self.limit_usd - self.committed_usd)


@dataclass(frozen=True)
class Grant:
    amount_usd: float
    refusal: str | None = None  # set when nothing can be granted
    scope: Scope | None = None  # with a refusal: the scope with the least left

    @property
    def granted(self) -> bool:
        return self.refusal is None


def grant(cap_usd: float, scopes: list[Scope]) -> Grant:
    """What an agent with per-attempt ``cap_usd`` may reserve under ``scopes``."""
    amount = cap_usd
    for scope in scopes:
        amount = min(amount, scope.left_usd)
    if amount < MIN_GRANT_USD:
        tight = min(scopes, key=lambda s: s.left_usd)
        return Grant(
            0.0,
            f"waiting for budget: {tight.name} limit {usd(tight.limit_usd)} "
            f"({usd(tight.committed_usd)} spent or reserved)",
            tight,
        )
    # Round down to a micro-dollar: rounding up could grant more than is left.
    # (the 1e-6 micro-dollar slack absorbs float noise such as 1.0 - 0.8 = 0.19999...96)
    return Grant(math.floor(amount * 1_000_000 + 1e-6) / 1_000_000)


def usd(amount: float) -> str:
    """``amount`` in dollars as exactly as grove keeps it (to the micro-dollar), never rounded
    to cents: ``$0.005`` stays ``$0.005``, ``$1`` reads ``$1.00``."""
    text = f"{amount:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def check_budget(budget_usd: float | None) -> None:
    """Refuse a ``--budget-usd`` that is not a finite amount above zero (``nan`` compares
    false with everything, so it would be stored and act as no limit at all)."""
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise BadInput(f"--budget-usd must be a finite amount above zero, got {budget_usd:g}")
