"""The merge queue's decisions: what is queued, what happens to each entry, how it is reported.

``grove merge ID... [--run RUN] [--into BRANCH] [--check CMD] [--resolve]`` merges completed
agents one at a time onto BRANCH in a scratch worktree, checking each
(:mod:`agentgrove.merge_scratch` runs it with git). An entry that conflicts or turns the check
red is skipped and reported (conflicted paths, check tail) and the queue goes on, so BRANCH
keeps everything that passed; with ``resolve`` it goes to an ``integrator`` agent instead,
whose result lands only after it is checked again. Everything here is pure: plain data in,
plain data out.

With ``[git] remote``, the ``grove/`` branches the queue makes or moves (the kept result
``grove/queue/<id>``; BRANCH when it is one of grove's) are pushed (:func:`branches_to_push`);
the user's own branches never are. A push that fails is part of the report, with git's words,
and makes the queue exit 1.

Everything an entry brings (file names, markers, check output) is the agents' text: the lines
of :func:`report_lines` are plain text that callers render escaped.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentgrove.models import AgentRecord, AgentStatus, RunRecord
from agentgrove.remotes import PUSHABLE
from agentgrove.text import visible

INTEGRATOR = "integrator"
CHECK_TIMEOUT_S = 600.0
"""How long the queue's check may run after each merge before it is killed (a red check)."""
KEEP_PREFIX = "grove/queue/"
"""Where a result is kept when BRANCH could not take it (``grove/queue/<queue id>``)."""
TAIL_SHOWN = 20
"""Lines of a red check's output the report shows (the integrator's task gets the whole tail)."""
_MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


class Outcome(enum.StrEnum):
    """What became of one entry. The first three landed on BRANCH; the others were skipped."""

    MERGED = "merged"
    ALREADY_MERGED = "already merged"
    RESOLVED = "resolved"
    CONFLICTED = "conflicted"
    CHECK_FAILED = "check failed"
    NOT_COMPLETED = "not completed"

    @property
    def landed(self) -> bool:
        return self in (Outcome.MERGED, Outcome.ALREADY_MERGED, Outcome.RESOLVED)


class Step(enum.Enum):
    LAND = "land"
    SKIP = "skip"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Entry:
    """One queued agent: its branch and the commit it held when the queue was planned (the
    commit is merged, so a branch moved meanwhile cannot slip other work in)."""

    agent_id: str
    branch: str
    commit: str
    label: str = ""
    """How the report names it: the branch, or a run's node key and branch."""


@dataclass(frozen=True)
class EntryResult:
    entry: Entry
    outcome: Outcome
    files: tuple[str, ...] = ()
    """Every path the entry changed on BRANCH (landed), sorted."""
    paths: tuple[str, ...] = ()
    """The paths that conflicted (also for an entry the integrator resolved)."""
    head: str | None = None
    """The commit that landed it in the queue (the merge, or the integrator's result)."""
    exit_code: int | None = None
    check_tail: str | None = None
    """The tail of the red check's output (attacker-controlled text)."""
    integrator: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class QueuePlan:
    """A validated queue: nothing has been written yet."""

    branch: str
    old_tip: str
    checked_out: bool
    entries: tuple[Entry, ...]
    skipped: tuple[EntryResult, ...] = ()
    """A run's nodes that did not complete: reported, never merged."""
    check: str | None = None
    resolve: bool = False


@dataclass(frozen=True)
class QueueReport:
    plan: QueuePlan
    results: tuple[EntryResult, ...]
    new_tip: str
    updated: bool
    """BRANCH (and the checkout, when it is checked out) now points at ``new_tip``."""
    refusal: str | None = None
    """Why BRANCH was not updated although entries landed (the result is on ``kept``)."""
    kept: str | None = None
    push_error: str | None = None
    """Why a branch the queue made or moved is not on ``[git] remote`` (git's words)."""
    landed_count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "landed_count", sum(r.outcome.landed for r in self.results))

    @property
    def exit_code(self) -> int:
        """0: every entry landed and BRANCH holds them; 1 otherwise (an entry was skipped,
        BRANCH could not be updated, or a branch to push did not reach the remote)."""
        skipped = self.plan.skipped or any(not r.outcome.landed for r in self.results)
        return 1 if skipped or self.refusal or self.push_error else 0


def branches_to_push(report: QueueReport) -> list[str]:
    """The branches the queue made or moved that go to ``[git] remote``: the kept result, and
    BRANCH when it was updated and is one of grove's (``grove/...``), never the user's. Pure."""
    found = [report.kept] if report.kept else []
    if report.updated and report.plan.branch.startswith(PUSHABLE):
        found.append(report.plan.branch)
    return found


def refusal(agent: AgentRecord) -> str | None:
    """Why ``agent`` cannot be queued (the end of a sentence starting with its id), or
    ``None``. Pure."""
    ws = agent.workspace
    if agent.status is not AgentStatus.COMPLETED:
        return (
            f"is {agent.status.value}, not completed: its branch may hold partial work; "
            f"`grove diff {agent.id}` shows it"
        )
    if ws is None or ws.branch is None or ws.head_commit is None:
        return "has no git branch to merge (it ran outside git)"
    return None


def entry_for(agent: AgentRecord, label: str = "") -> Entry:
    """The queue entry of an agent :func:`refusal` accepted. Pure."""
    ws = agent.workspace
    assert ws is not None and ws.branch is not None and ws.shared_commit is not None
    return Entry(agent.id, ws.branch, ws.shared_commit, label or ws.branch)


def run_entries(run: RunRecord) -> tuple[list[Entry], list[EntryResult]]:
    """A workflow run's queue: each completed node's result, in the run's node order (so a
    conflict or a red check names the node that brought it; a node's result holds its
    dependencies' work, so later nodes often land as "already merged"); nodes that did not
    complete are reported as skipped. Pure."""
    entries: list[Entry] = []
    skipped: list[EntryResult] = []
    for node in run.nodes:
        agent = node.agent
        ws = agent.workspace if agent else None
        label = f"node {node.key}" + (f" ({ws.branch})" if ws and ws.branch else "")
        why = refusal(agent) if agent else "has not started"
        if agent is None or why is not None:
            placeholder = Entry(agent.id if agent else "", "", "", label)
            skipped.append(EntryResult(placeholder, Outcome.NOT_COMPLETED, note=why))
            continue
        entries.append(entry_for(agent, label))
    return entries, skipped


def next_step(*, conflicted: bool, check_passed: bool, resolve: bool) -> Step:
    """What to do with an entry once merged and checked in the scratch worktree. Pure."""
    if not conflicted and check_passed:
        return Step.LAND
    return Step.RESOLVE if resolve else Step.SKIP


def marker_paths(contents: dict[str, str]) -> list[str]:
    """The paths whose text still holds a conflict marker line (``<<<<<<<`` or ``>>>>>>>``
    at a line's start). ``=======`` alone is not counted: it is a heading underline in
    reStructuredText and Markdown. Pure."""
    return sorted(path for path, text in contents.items() if _MARKER.search(text))


def integrator_task(
    entry: Entry, branch: str, paths: Sequence[str], check: str | None, tail: str | None
) -> str:
    """The integrator's task: what conflicted, the check and the red check's output. The paths
    and the tail are the agents' text, passed on as data for the model to read."""
    lines = [f"Grove merged {entry.branch} (agent {entry.agent_id}) onto {branch} and it did "]
    if paths:
        lines[0] += "not merge cleanly. These files hold git conflict markers:"
        # One line each: a name's newline or control character is shown escaped, so a name
        # cannot add items (or instructions) of its own.
        lines += [f"- {visible(p, newlines=False)}" for p in paths]
        lines.append(
            "Resolve every conflict: keep what both sides meant, and remove every marker "
            "line (<<<<<<<, =======, >>>>>>>)."
        )
    else:
        lines[0] += "not pass the check."
    if check:
        lines.append(f"Then make the check pass; run it with Bash: {check}")
    if tail:
        lines += ["The check's output after the merge (its last lines):", "```", tail, "```"]
    lines.append("Do not commit: grove commits your work. Finish with what you changed.")
    # A NUL from a check's output cannot be stored (models.unstorable): show it, as text.
    return "\n".join(lines).replace("\x00", "\\x00")


def _tail(text: str | None, lines: int = TAIL_SHOWN) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def _files(files: Sequence[str]) -> str:
    """Every file, counted first (the wording of ``grove merge`` for one agent)."""
    if not files:
        return "no files changed"
    return f"{len(files)} file{'' if len(files) == 1 else 's'}: {', '.join(files)}"


def result_lines(result: EntryResult, branch: str) -> list[str]:
    """How the report states one entry landed on (or skipped from) ``branch``: plain text,
    which the caller escapes."""
    e, o = result.entry, result.outcome
    at = f" @ {result.head[:10]}" if result.head else ""
    by = f" by integrator {result.integrator}" if result.integrator else ""
    if o is Outcome.MERGED:
        return [f"merged {e.label}{at}: {_files(result.files)}"]
    if o is Outcome.ALREADY_MERGED:
        return [f"{e.label} is already merged into {branch}: nothing to merge"]
    if o is Outcome.RESOLVED:
        how = f"conflicts in {', '.join(result.paths)}" if result.paths else "a red check"
        return [f"resolved {e.label}{by} ({how}){at}: {_files(result.files)}"]
    if o is Outcome.NOT_COMPLETED:
        return [f"skipped {e.label}: {e.agent_id or 'no agent'} {result.note}"]
    head = f"skipped {e.label}{by}: "
    if o is Outcome.CONFLICTED:
        head += f"conflicts in {', '.join(result.paths) or '(unknown paths)'}"
    else:
        code = "no exit code" if result.exit_code is None else f"exit {result.exit_code}"
        head += f"check failed ({code})"
    if result.note:
        head += f"; {result.note}"
    shown = _tail(result.check_tail)
    return [head] + [f"    {line}" for line in shown.splitlines()]


def report_lines(report: QueueReport) -> list[str]:
    """The whole report: each entry, then what became of BRANCH and the checkout."""
    plan = report.plan
    lines = [ln for r in (*plan.skipped, *report.results) for ln in result_lines(r, plan.branch)]
    total = len(plan.entries) + len(plan.skipped)
    summary = f"{plan.branch}: {report.landed_count} of {total} landed"
    if report.refusal:
        lines.append(f"{summary}; {plan.branch} not updated: {report.refusal}")
        if report.kept:
            lines.append(
                f"the result is kept on {report.kept}: `git merge --ff-only {report.kept}` takes it"
            )
    elif report.new_tip == plan.old_tip:
        lines.append(f"{summary}; {plan.branch} unchanged at {plan.old_tip[:10]}")
    else:
        moved = f"{plan.old_tip[:10]} -> {report.new_tip[:10]}"
        where = "your checkout was fast-forwarded" if plan.checked_out else "not checked out"
        lines.append(f"{summary}; {plan.branch} {moved} ({where})")
    if report.push_error:
        lines.append(f"not on the remote: {report.push_error}")
    return lines


__all__ = [
    "CHECK_TIMEOUT_S",
    "INTEGRATOR",
    "KEEP_PREFIX",
    "Entry",
    "EntryResult",
    "Outcome",
    "QueuePlan",
    "QueueReport",
    "Step",
    "branches_to_push",
    "entry_for",
    "integrator_task",
    "marker_paths",
    "next_step",
    "refusal",
    "report_lines",
    "result_lines",
    "run_entries",
]
