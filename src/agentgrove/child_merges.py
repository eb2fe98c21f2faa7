"""Children's work flowing back to their parent: the pure decisions and the result shape.

A parent that spawned children (``spawn_agent``) gets each completed child's branch merged into
its own worktree by grove, when it waits (``wait_agents``), on demand (``merge_agent``), and, for
children it never merged, when it ends. This module decides, per child, what happens and says it
in one entry of the tool result; :mod:`agentgrove.delegation` carries the decisions out through
:mod:`agentgrove.workspaces` (git) and the store. Nothing here does I/O.

Contracts:

* Only the parent's own direct children are merged (:func:`not_children` names the others).
* Children are merged in spawn order; a child is merged only when it completed, has a head
  commit, and that commit is not yet in the parent's history ("already merged").
* While a merge is in progress (a conflict the parent has not resolved), no further child is
  merged: each gets :data:`BLOCKED` instead.
* Conflict markers are recognised by the labels git gives them when grove merges a child's
  commit: ``<<<<<<< HEAD`` opens a conflict and ``>>>>>>> <the child's commit id>`` closes it
  (either label may end ``:path`` after a rename). Any marker size counts: the size git used
  came from attributes that the merge itself may have changed (a child's ``.gitattributes``),
  so it cannot be known afterwards. ``=======`` alone is not a marker (a Markdown heading's
  underline looks the same). The closing label names this merge only, so it is looked for in
  every file the parent changed, not only the ones git reported as conflicted (a conflicted
  file moved away keeps its markers); the opening one only in those.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgrove.models import AgentRecord, AgentStatus

BLOCKED = "not merged: resolve the conflict first, then call merge_agent"
"""The entry of a child not merged because an earlier merge is still in progress."""

OUTSIDE_GIT = (
    "not merged: outside a git repository agents share one directory, so its files are "
    "already there"
)


class Outcome(enum.StrEnum):
    MERGED = "merged"
    ALREADY_MERGED = "already merged"
    NOT_COMPLETED = "not completed"
    CONFLICTED = "conflicted"
    NOT_MERGED = "not merged"


@dataclass(frozen=True)
class ChildMerge:
    """One child's line in a ``wait_agents`` / ``merge_agent`` result."""

    child: AgentRecord
    outcome: Outcome
    files: tuple[str, ...] = ()
    """Files the merge brought in (merged) or that conflict (conflicted)."""
    detail: str | None = None
    """Why it was not merged, in words the model can act on."""
    commit: str | None = None
    """The child's head commit that was (or would have been) merged."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the child's ``{id, role, status, output, error}`` and ``merge``."""
        merge: dict[str, Any] = {"result": self.outcome.value}
        if self.outcome is Outcome.MERGED:
            merge["files"] = list(self.files)
        elif self.outcome is Outcome.CONFLICTED:
            merge["paths"] = list(self.files)
            merge["next"] = (
                "the merge is in progress in your worktree: edit these files to remove the "
                "conflict markers; grove concludes the merge when you finish"
            )
        if self.detail:
            merge["detail"] = self.detail
        return summary(self.child) | {"merge": merge}


def summary(agent: AgentRecord) -> dict[str, Any]:
    """An agent as the orchestrator tools show it."""
    return {
        "id": agent.id,
        "role": agent.role,
        "status": agent.status.value,
        "output": agent.output,
        "error": agent.error,
    }


def decide(child: AgentRecord, *, contained: bool, blocked: bool) -> ChildMerge | None:
    """``child``'s entry when it is not to be merged, ``None`` when it is: ``contained`` says
    its head commit is already in the parent's history, ``blocked`` that a merge is in
    progress in the parent's worktree."""
    if child.status is not AgentStatus.COMPLETED:
        detail = f"status {child.status.value}"
        if child.error:
            detail += f": {child.error}"
        return ChildMerge(child, Outcome.NOT_COMPLETED, detail=detail)
    ws = child.workspace
    head = ws.head_commit if ws else None
    if ws is None or ws.branch is None or head is None:
        return ChildMerge(child, Outcome.NOT_MERGED, detail=OUTSIDE_GIT)
    if contained:
        return ChildMerge(child, Outcome.ALREADY_MERGED, commit=head)
    if blocked:
        return ChildMerge(child, Outcome.NOT_MERGED, detail=BLOCKED)
    return None


def in_spawn_order(children: Sequence[AgentRecord], ids: Iterable[str]) -> list[AgentRecord]:
    """The children named by ``ids`` (each once), in the order they were spawned
    (``children`` comes from the store in creation order)."""
    wanted = set(ids)
    return [c for c in children if c.id in wanted]


def not_children(children: Sequence[AgentRecord], ids: Iterable[str]) -> list[str]:
    """The ids in ``ids`` that are not among ``children`` (in the order given)."""
    own = {c.id for c in children}
    return [i for i in ids if i not in own]


def marker_pattern(theirs: str, *, conflicted: bool = True) -> re.Pattern[bytes]:
    """A line git writes to open (``conflicted`` files only) or close a conflict while merging
    commit ``theirs`` (a full commit id) into ``HEAD``, at any marker size. ``<<<<<<< HEAD``
    is not specific to one merge (a child may bring it as text, cleanly merged): outside the
    files git reported as conflicted only the closing line, which names ``theirs``, counts."""
    label = re.escape(theirs.encode())
    opening = rb"<+ HEAD|" if conflicted else b""
    return re.compile(rb"^(?:%s>+ %s)(?::[^\n]*)?\r?\n?$" % (opening, label), re.DOTALL)


def holds_markers(lines: Iterable[bytes], theirs: str, *, conflicted: bool = True) -> bool:
    """Whether any of ``lines`` (bytes, as read from the file) is a conflict marker line of
    the merge of ``theirs`` (see :func:`marker_pattern`)."""
    pattern = marker_pattern(theirs, conflicted=conflicted)
    return any(pattern.match(line) for line in lines)


@dataclass
class Report:
    """The entries of one merge pass, in spawn order."""

    entries: list[ChildMerge] = field(default_factory=list)

    def summaries(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.entries]


__all__ = [
    "BLOCKED",
    "OUTSIDE_GIT",
    "ChildMerge",
    "Outcome",
    "Report",
    "decide",
    "holds_markers",
    "in_spawn_order",
    "marker_pattern",
    "not_children",
    "summary",
]
