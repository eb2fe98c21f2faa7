"""Approval gates on workflow nodes: what a decision does. Pure: plain data in, plain data out.

A node with ``approval: before`` is inserted ``awaiting_approval`` instead of ``pending``: no
worker claims it, so no request reaches the model for it, until a person approves. A node with
``approval: after`` runs; when its attempt completes, it goes to ``awaiting_approval`` instead
of ``completed``, and its dependents wait. The store carries out what :func:`decide` says, in
one guarded transaction with the ``approval.approved`` / ``approval.rejected`` event that
records who decided, when and why::

    gate     decision  attempts left  outcome
    before   approve   -              START     awaiting_approval -> pending
    before   reject    -              FAIL      -> failed (rejected); the run fails
    after    approve   -              COMPLETE  -> completed; its dependents become ready
    after    reject    yes            RERUN     -> pending, the comment added to its task
    after    reject    no             FAIL      -> failed (rejected); the run fails

A gate with ``approval_timeout_s`` decides by itself at its deadline (``approval_on_timeout``,
reject unless set); long-lived workers look for expired gates at every sweep.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from agentgrove.errors import BadInput
from agentgrove.models import unstorable

Gate = Literal["before", "after"]

MAX_COMMENT = 10_000
"""The longest comment a decision may carry (it may become part of a task)."""

TIMEOUT_BY = "grove (timeout)"
"""Who decided, for a gate that timed out."""


class ApprovalOutcome(enum.StrEnum):
    """What a decision does to the node's agent."""

    START = "start"
    COMPLETE = "complete"
    RERUN = "rerun"
    FAIL = "fail"


def decide(gate: Gate, *, approve: bool, attempt: int, max_attempts: int) -> ApprovalOutcome:
    """The outcome of approving (or rejecting) a node held at ``gate`` whose agent has run
    ``attempt`` attempts of ``max_attempts`` (see the table in the module docstring)."""
    if approve:
        return ApprovalOutcome.START if gate == "before" else ApprovalOutcome.COMPLETE
    if gate == "after" and attempt < max_attempts:
        return ApprovalOutcome.RERUN
    return ApprovalOutcome.FAIL


def check_comment(comment: str | None, *, approve: bool) -> str | None:
    """The comment to record (stripped; ``None`` for none). :class:`BadInput` for a rejection
    without one (the node's author needs to know why), and for text no database can store."""
    text = (comment or "").strip()
    if not approve and not text:
        raise BadInput("a rejection needs a reason: give --comment TEXT (a rerun's task gets it)")
    if len(text) > MAX_COMMENT:
        raise BadInput(f"the comment is {len(text):,} characters; keep it under {MAX_COMMENT:,}")
    problem = unstorable(text)
    if problem is not None:
        raise BadInput(f"the comment {problem}")
    return text or None


def rerun_task(task: str, comment: str, attempt: int) -> str:
    """The task of the attempt after a rejected one: the task, then the reviewer's comment."""
    return (
        f"{task}\n\n---\nA reviewer rejected the result of attempt {attempt}. Their comment:\n"
        f"{comment}\nRevise your work to address it, then finish the task."
    )


def deadline(now: datetime, timeout_s: float | None) -> datetime | None:
    """When a gate that starts waiting at ``now`` times out; ``None``: it waits for ever."""
    return None if timeout_s is None else now + timedelta(seconds=timeout_s)


def wait_reason(run_id: str, key: str, gate: Gate, until: datetime | None) -> str:
    """What ``grove ls``, ``show`` and ``workflow show`` say a held node waits for."""
    what = "before it starts" if gate == "before" else "of its result"
    limit = f" (until {until:%Y-%m-%d %H:%M:%S} UTC)" if until is not None else ""
    return f"awaiting approval {what}{limit}: grove approve {run_id} {key}"


@dataclass(frozen=True)
class Approval:
    """One decision at a gate, as :meth:`agentgrove.Grove.approve` and ``reject`` return it:
    the node's agent, who decided and when, their comment, and what it did (``outcome``)."""

    run_id: str
    node: str
    agent_id: str
    gate: Gate
    approved: bool
    by: str
    at: datetime
    comment: str | None
    outcome: ApprovalOutcome

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "node": self.node,
            "agent_id": self.agent_id,
            "gate": self.gate,
            "approved": self.approved,
            "by": self.by,
            "at": self.at.isoformat(),
            "comment": self.comment,
            "outcome": self.outcome.value,
        }


__all__ = [
    "MAX_COMMENT",
    "TIMEOUT_BY",
    "Approval",
    "ApprovalOutcome",
    "Gate",
    "check_comment",
    "deadline",
    "decide",
    "rerun_task",
    "wait_reason",
]
