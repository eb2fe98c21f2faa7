"""Is this clone of the repository the database serves? The worker's start-up check.

Several machines share one database; each runs its worker in its own clone. A clone of some
other repository pointed at that database would claim agents whose base commits it can never
have, and fail them one by one. So before its first claim a worker looks at the base commits
that unfinished work starts from (pending and executing agents, running workflow runs): each
must be in this clone, or fetchable from its ``[git] remote``. When none of them is, the clone
is of another repository and the worker refuses to start (:class:`BadInput`, exit 2). When only
some are missing (a base a user never pushed), it starts and says which: those agents fail one
by one with a clear error (see :meth:`agentgrove.workspaces.Workspaces.create`), the others run.

:func:`judge_clone` decides, over plain data; :func:`check_clone` does the git and the database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agentgrove import remotes
from agentgrove.errors import BadInput

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")

BaseInUse = tuple[str, str]
"""``(commit, whose)``: a base commit and the work starting from it (``agent ID``/``run ID``)."""


@dataclass(frozen=True)
class CloneVerdict:
    """``foreign``: the base that proves this clone is of another repository (``None``: it is
    not). ``missing``: the bases found nowhere, in the order given."""

    foreign: BaseInUse | None
    missing: tuple[BaseInUse, ...]


def judge_clone(bases: Sequence[BaseInUse], present: frozenset[str]) -> CloneVerdict:
    """Whether a clone holding (or able to fetch) the commits ``present`` serves the work
    starting from ``bases``. Foreign when at least one base is named and none is present: a
    clone of the same repository has, or can fetch, the commits its machines pushed. Values
    that are not commit ids (no grove writes such a base) are no evidence either way."""
    named = [b for b in bases if _SHA.match(b[0])]
    missing = tuple(b for b in named if b[0] not in present)
    foreign = missing[0] if named and len(missing) == len(named) else None
    return CloneVerdict(foreign=foreign, missing=missing)


def refusal(base: BaseInUse, repo: Path, remote: str | None) -> str:
    """The one line a refused worker prints."""
    commit, whose = base
    where = f"nor on remote {remote!r}" if remote else "(and no [git] remote to fetch it from)"
    return (
        f"commit {commit[:12]} ({whose}'s base) is not in {repo} {where}: this clone is of "
        "another repository than the database's agents; run the worker in a clone of that "
        "repository (git clone URL DIR, then grove init in DIR), or point GROVE_DB_URL at "
        "this repository's own database"
    )


class _Bases(Protocol):
    def bases_in_use(self, *, limit: int = ...) -> list[tuple[str, str]]: ...


def check_clone(store: _Bases, repo: Path, remote: str | None, *, limit: int = 20) -> CloneVerdict:
    """Judge ``repo`` against the newest ``limit`` bases of unfinished work in ``store``,
    fetching from ``remote`` (once, every branch into grove's tracking refs) what is missing
    locally. Raises :class:`BadInput` (:func:`refusal`) when the clone is foreign; returns the
    verdict otherwise (its ``missing`` for the caller to report)."""
    bases = [b for b in store.bases_in_use(limit=limit) if _SHA.match(b[0])]
    present = {c for c, _ in bases if remotes.has_commit(repo, c)}
    if remote and len(present) < len(bases):
        remotes.fetch_all(repo, remote)
        present |= {c for c, _ in bases if c not in present and remotes.has_commit(repo, c)}
    verdict = judge_clone(bases, frozenset(present))
    if verdict.foreign is not None:
        raise BadInput(refusal(verdict.foreign, repo, remote))
    return verdict


__all__ = ["BaseInUse", "CloneVerdict", "check_clone", "judge_clone", "refusal"]
