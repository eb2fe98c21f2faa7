"""The merge queue: completed agents' work lands on one branch, one entry at a time, checked.

``grove merge ID... [--run RUN] [--into BRANCH] [--check CMD] [--resolve]``. Every entry is
merged (``--no-ff``) in a scratch worktree under the grove home, never in the user's checkout,
starting from BRANCH's tip. After each merge the check runs there, confined like an agent's
Bash (:func:`agentgrove.checks.run_check`). An entry that conflicts or turns the check red is
undone in the scratch worktree and reported (conflicted paths, check tail); the queue goes on
with the next one, so BRANCH keeps everything that passed.

With ``resolve``, such an entry is handed to an ``integrator`` agent instead: grove commits the
scratch state as it is (a conflicted merge is committed with both parents and its markers), the
integrator starts from that commit (``SpawnRequest(base=...)``) and runs here, inline, and its
result commit lands only when it descends from that commit, leaves no conflict marker in the
paths that conflicted, and passes the check again.

At the end BRANCH moves in one compare-and-swap on its old tip. When BRANCH is the user's
checked-out branch, the checkout is brought there by ``git merge --ff-only`` (a fast-forward git
refuses when uncommitted changes are in the way; it never overwrites them); when it refuses, or
BRANCH moved meanwhile, BRANCH is left alone and the result is kept on ``grove/queue/<id>``.

Decisions are the pure functions at the top; :class:`MergeQueue` carries them out with git.
Everything an entry brings (file names, markers, check output) is the agent's text: callers
render it escaped.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from agentgrove.errors import BadInput
from agentgrove.gitexec import (
    DIFF_SAFE,
    IDENTITY,
    Worktree,
    common_dir,
    run,
    run_git,
    user_identity,
    worktree,
)
from agentgrove.models import AgentRecord, AgentStatus, RunRecord, SpawnRequest
from agentgrove.runtime._policy import SandboxMode
from agentgrove.text import one_line

if TYPE_CHECKING:
    from agentgrove.grove import Grove

log = logging.getLogger(__name__)

INTEGRATOR = "integrator"
CHECK_TIMEOUT_S = 600.0
"""How long the queue's check may run after each merge before it is killed (a red check)."""
KEEP_PREFIX = "grove/queue/"
"""Where a result is kept when BRANCH could not take it (``grove/queue/<queue id>``)."""
TAIL_SHOWN = 20
"""Lines of a red check's output the report shows (the integrator's task gets the whole tail)."""
_MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


# -- plain data and decisions ------------------------------------------------------------------


class CheckResult(Protocol):
    """What the queue reads of a check run (:class:`agentgrove.checks.CheckRun`)."""

    @property
    def passed(self) -> bool: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def output_tail(self) -> str: ...
    @property
    def error(self) -> str | None: ...


class Checker(Protocol):
    """Runs a check in ``cwd`` (the signature of :func:`agentgrove.checks.run_check`)."""

    def __call__(
        self,
        command: str,
        cwd: Path,
        *,
        timeout_s: float,
        home: Path | None,
        git_dir: Path | None,
        sandbox: SandboxMode,
        env_allow: Iterable[str] = (),
    ) -> CheckResult: ...


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
    landed_count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "landed_count", sum(r.outcome.landed for r in self.results))

    @property
    def exit_code(self) -> int:
        """0: every entry landed and BRANCH holds them; 1 otherwise (an entry was skipped, or
        BRANCH could not be updated)."""
        skipped = self.plan.skipped or any(not r.outcome.landed for r in self.results)
        return 1 if skipped or self.refusal else 0


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
    assert ws is not None and ws.branch is not None and ws.head_commit is not None
    return Entry(agent.id, ws.branch, ws.head_commit, label or ws.branch)


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
        lines += [f"- {p}" for p in paths]
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
    return "\n".join(lines)


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
    return lines


# -- validation (reads only) -------------------------------------------------------------------


def plan_queue(
    grove: Grove,
    agent_ids: Sequence[str],
    *,
    run_id: str | None = None,
    into: str | None = None,
    check: str | None = None,
    resolve: bool = False,
) -> QueuePlan:
    """Validate a queue completely, writing nothing: :class:`BadInput` names the first thing
    wrong (an unknown or unfinished agent, a branch that does not exist, an empty check, a
    checkout mid-merge)."""
    repo = grove.service.workspaces.repo
    if repo is None:
        raise BadInput(f"{grove.config.root} is not a git repository: there is nothing to merge")
    if check is not None and not check.strip():
        raise BadInput(
            "--check is empty: give the command to run after each merge, or leave it out"
        )
    if not agent_ids and run_id is None:
        raise BadInput("nothing to merge: give agent ids, or --run RUN")
    if resolve and INTEGRATOR not in grove.config.roles:
        raise BadInput(f"--resolve needs the {INTEGRATOR} role, which grove.toml removed")
    entries: list[Entry] = []
    skipped: list[EntryResult] = []
    for given in agent_ids:
        agent = grove.get(given)
        why = refusal(agent)
        if why is not None:
            raise BadInput(f"agent {agent.id} {why}; leave it out of the queue")
        entries.append(entry_for(agent))
    if run_id is not None:
        from_run, skipped = run_entries(grove.store.get_run(run_id))
        if not from_run and not skipped:
            raise BadInput(f"workflow run {run_id} has no nodes to merge")
        entries += from_run
    head_ref = run_git(["symbolic-ref", "-q", "HEAD"], repo, check=False)
    if into is None:
        if not head_ref.startswith("refs/heads/"):
            raise BadInput(
                f"{repo} has no branch checked out (detached HEAD): name one with --into BRANCH"
            )
        into = head_ref.removeprefix("refs/heads/")
    ref = f"refs/heads/{into}"
    old_tip = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False)
    if not old_tip:
        raise BadInput(
            f"--into {into!r}: no such branch in {repo}; create it first (`git branch {into}`)"
        )
    checked_out = head_ref == ref
    elsewhere = _checked_out_elsewhere(repo, ref)
    if elsewhere is not None:
        raise BadInput(
            f"--into {into}: that branch is checked out in another worktree ({elsewhere}); "
            "merge into a branch checked out here or in none"
        )
    if checked_out and _merge_in_progress(repo):
        raise BadInput(
            f"{repo} has a merge in progress: finish it (`git merge --continue`) or abort it "
            "(`git merge --abort`), then run the queue"
        )
    return QueuePlan(into, old_tip, checked_out, tuple(entries), tuple(skipped), check, resolve)


def _checked_out_elsewhere(repo: Path, ref: str) -> str | None:
    """The path of another worktree (not ``repo``'s checkout) that has ``ref`` checked out."""
    listing = run_git(["worktree", "list", "--porcelain", "-z"], repo).split("\0")
    here = repo.resolve()
    path: str | None = None
    for item in listing:
        if item.startswith("worktree "):
            path = item.removeprefix("worktree ")
        elif item == f"branch {ref}" and path is not None and Path(path).resolve() != here:
            return path
    return None


def _merge_in_progress(repo: Path) -> bool:
    merging = run_git(["rev-parse", "-q", "--verify", "MERGE_HEAD"], repo, check=False)
    unmerged = run_git(["diff", *DIFF_SAFE, "--name-only", "--diff-filter=U"], repo, check=False)
    return bool(merging or unmerged)


# -- carrying it out ---------------------------------------------------------------------------


class MergeQueue:
    """Runs one :class:`QueuePlan` in a scratch worktree at ``<grove home>/merges/<id>``,
    removed at the end whatever happens. ``checker``: runs the check (default
    :func:`agentgrove.checks.run_check`, confined by ``[runtime] sandbox``)."""

    def __init__(self, grove: Grove, plan: QueuePlan, *, checker: Checker | None = None) -> None:
        repo = grove.service.workspaces.repo
        assert repo is not None
        self.grove = grove
        self.plan = plan
        self.repo = repo
        self.id = uuid.uuid4().hex[:12]
        self.path = grove.config.home / "merges" / self.id
        self._checker = checker
        self._identity = user_identity(repo) or IDENTITY
        self._tree: Worktree | None = None

    async def run(self) -> QueueReport:
        """Merge every entry, then update BRANCH (see the module docstring)."""
        merges = self.path.parent
        merges.mkdir(parents=True, exist_ok=True)
        with (merges / f"{self.id}.lock").open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # a new name: nobody else holds it
            self._sweep(merges)
            try:
                self._add_worktree()
                results = []
                for entry in self.plan.entries:
                    results.append(await self._one(entry))
                tip = self._head()
            finally:
                self.grove.service.workspaces.remove_path(self.path)
                (merges / f"{self.id}.lock").unlink(missing_ok=True)
        return self._land(tuple(results), tip)

    # -- the scratch worktree --

    def _sweep(self, merges: Path) -> None:
        """Remove scratch worktrees of queues that died (killed, a crash): each running queue
        holds the lock file named after its worktree, so an unheld one is stale."""
        for path in sorted(merges.iterdir()):
            if not path.is_dir() or path.name == self.id:
                continue
            lock = merges / f"{path.name}.lock"
            with lock.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # that queue is running
                log.info("removing a dead merge queue's scratch worktree", extra={"path": path})
                self.grove.service.workspaces.remove_path(path)
                lock.unlink(missing_ok=True)

    def _add_worktree(self) -> None:
        # The worktree lock serialises `git worktree add` with the agents' (see Workspaces).
        with self.grove.service.workspaces._locked():
            run_git(
                ["worktree", "add", "--detach", "--lock", str(self.path), self.plan.old_tip],
                self.repo,
            )
        self._tree = worktree(self.repo, self.path)

    def _git(self, *args: str, check: bool = True) -> str:
        return run_git(list(args), self.path, check=check, tree=self._tree, identity=self._identity)

    def _head(self) -> str:
        return self._git("rev-parse", "HEAD")

    def _undo(self, commit: str) -> None:
        """Bring the scratch worktree back to ``commit``: no merge in progress, no file the
        merge, the check or an integrator left behind."""
        self._git("merge", "--abort", check=False)
        self._git("reset", "--quiet", "--hard", commit)
        self._git("clean", "-ffdq")

    def _changed(self, old: str, new: str) -> tuple[str, ...]:
        out = self._git("diff", *DIFF_SAFE, "--name-only", "-z", f"{old}..{new}")
        return tuple(sorted(f for f in out.split("\0") if f))

    # -- one entry --

    async def _one(self, entry: Entry) -> EntryResult:
        before = self._head()
        if run(["merge-base", "--is-ancestor", entry.commit, before], self.repo).returncode == 0:
            return EntryResult(entry, Outcome.ALREADY_MERGED)
        proc = run(
            [
                "merge",
                "--no-verify",
                "--no-ff",
                "--no-edit",
                "-m",
                f"Merge {entry.branch}",
                entry.commit,
            ],
            self.path,
            tree=self._tree,
            identity=self._identity,
        )
        paths: tuple[str, ...] = ()
        if proc.returncode != 0:
            listed = self._git("diff", *DIFF_SAFE, "--name-only", "-z", "--diff-filter=U")
            paths = tuple(p for p in listed.split("\0") if p)
            if not paths:  # git refused for another reason: nothing to resolve
                self._undo(before)
                words = one_line(proc.stderr or proc.stdout, 300)
                return EntryResult(entry, Outcome.CONFLICTED, note=f"git merge failed: {words}")
        passed, code, tail = (False, None, None) if paths else self._check()
        step = next_step(conflicted=bool(paths), check_passed=passed, resolve=self.plan.resolve)
        if step is Step.LAND:
            after = self._head()
            return EntryResult(entry, Outcome.MERGED, self._changed(before, after), head=after)
        failed = Outcome.CONFLICTED if paths else Outcome.CHECK_FAILED
        if step is Step.SKIP:
            self._undo(before)
            return EntryResult(entry, failed, paths=paths, exit_code=code, check_tail=tail)
        return await self._resolve(entry, before, failed, paths, code, tail)

    def _check(self) -> tuple[bool, int | None, str | None]:
        """Run the check on the scratch state: (passed, exit code, output tail); no check
        passes. The scratch worktree is restored to its commit afterwards."""
        command = self.plan.check
        if command is None:
            return True, None, None
        checker = self._checker or _default_checker()
        config = self.grove.config
        done = checker(
            command,
            self.path,
            timeout_s=CHECK_TIMEOUT_S,
            home=config.home,
            git_dir=common_dir(self.repo),
            sandbox=config.runtime.sandbox,
            env_allow=config.runtime.env_allow,
        )
        # What the check wrote is not part of the entry: the next merge starts clean.
        self._git("reset", "--quiet", "--hard", "HEAD")
        self._git("clean", "-ffdq")
        tail = done.output_tail
        if done.error:
            tail = f"{tail.rstrip()}\n{done.error}".lstrip()
        return done.passed, done.exit_code, tail

    async def _resolve(
        self,
        entry: Entry,
        before: str,
        failed: Outcome,
        paths: tuple[str, ...],
        code: int | None,
        tail: str | None,
    ) -> EntryResult:
        """Hand the scratch state to an integrator; land its result once it holds up."""
        skipped = EntryResult(entry, failed, paths=paths, exit_code=code, check_tail=tail)
        if paths:  # the conflicted merge as it is: both parents, markers in the files
            self._git("add", "-A", "--", ".")
            message = f"grove: conflicted merge of {entry.branch}, for the integrator"
            self._git("commit", "--quiet", "--no-verify", "-m", message)
        start = self._head()
        task = integrator_task(entry, self.plan.branch, paths, self.plan.check, tail)
        service = self.grove.service
        agent = service.spawn(SpawnRequest(INTEGRATOR, task, base=start, check=self.plan.check))
        await self.grove.execute_async([agent.id])
        final = self.grove.store.get_agent(agent.id)
        skipped = replace(skipped, integrator=agent.id)
        if refusal(final) is not None:
            self._undo(before)
            error = f" ({final.error_kind}: {one_line(final.error, 200)})" if final.error else ""
            return replace(skipped, note=f"the integrator ended {final.status.value}{error}")
        assert final.workspace is not None and final.workspace.head_commit is not None
        result = final.workspace.head_commit
        self._git("merge", "--ff-only", "--no-verify", "--quiet", result, check=False)
        if self._head() != result:
            self._undo(before)
            return replace(skipped, note="the integrator's result does not descend from the merge")
        left = marker_paths({p: self._blob(result, p) for p in paths})
        if left:
            self._undo(before)
            return replace(skipped, note=f"conflict markers left in {', '.join(left)}")
        passed, code, tail = self._check()
        if not passed:
            self._undo(before)
            after = EntryResult(
                entry, Outcome.CHECK_FAILED, paths=paths, exit_code=code, check_tail=tail
            )
            return replace(after, integrator=agent.id, note="still red after the integrator")
        return EntryResult(
            entry,
            Outcome.RESOLVED,
            self._changed(before, result),
            paths,
            head=result,
            integrator=agent.id,
        )

    def _blob(self, commit: str, path: str) -> str:
        """``path``'s content in ``commit`` (empty when it is gone or not a file)."""
        proc = run(["cat-file", "blob", f"{commit}:{path}"], self.repo)
        return proc.stdout if proc.returncode == 0 else ""

    # -- the end --

    def _land(self, results: tuple[EntryResult, ...], tip: str) -> QueueReport:
        plan = self.plan
        report = QueueReport(plan, results, tip, updated=False)
        if tip == plan.old_tip:
            return report
        refusal_text = self._update(tip)
        if refusal_text is None:
            return QueueReport(plan, results, tip, updated=True)
        kept = f"{KEEP_PREFIX}{self.id}"
        # Create only: an all-zero old value makes update-ref refuse an existing ref.
        run_git(["update-ref", f"refs/heads/{kept}", tip, "0" * 40], self.repo)
        log.info("merge queue result kept", extra={"branch": kept, "reason": refusal_text})
        return QueueReport(plan, results, tip, updated=False, refusal=refusal_text, kept=kept)

    def _update(self, tip: str) -> str | None:
        """Move BRANCH from its old tip to ``tip`` atomically; why not, or ``None``."""
        plan, ref = self.plan, f"refs/heads/{self.plan.branch}"
        if not plan.checked_out:
            proc = run(["update-ref", ref, tip, plan.old_tip], self.repo)
            return None if proc.returncode == 0 else f"it moved while the queue ran ({ref})"
        head = run_git(["rev-parse", "-q", "--verify", "HEAD"], self.repo, check=False)
        current = run_git(["symbolic-ref", "-q", "HEAD"], self.repo, check=False)
        if current != ref or head != plan.old_tip:
            return "your checkout moved while the queue ran"
        # git's fast-forward: refused, with nothing touched, when uncommitted changes are in
        # the way; changes it does not touch stay as they are. It moves HEAD only from the
        # HEAD it read, so a commit made meanwhile makes it refuse too.
        proc = run(["merge", "--ff-only", "--no-verify", "--quiet", tip], self.repo)
        if proc.returncode != 0:
            words = one_line(proc.stderr or proc.stdout, 400)
            return f"git could not fast-forward your checkout: {words}"
        return None


def _default_checker() -> Checker:
    from agentgrove.checks import run_check

    return run_check


async def merge_queue(
    grove: Grove, plan: QueuePlan, *, checker: Checker | None = None
) -> QueueReport:
    """Run ``plan`` (from :func:`plan_queue`); see :class:`MergeQueue`."""
    return await MergeQueue(grove, plan, checker=checker).run()


def run_queue(grove: Grove, plan: QueuePlan, *, checker: Checker | None = None) -> QueueReport:
    """:func:`merge_queue` in a new event loop."""
    return anyio.run(lambda: merge_queue(grove, plan, checker=checker))


__all__ = [
    "CHECK_TIMEOUT_S",
    "INTEGRATOR",
    "Checker",
    "Entry",
    "EntryResult",
    "MergeQueue",
    "Outcome",
    "QueuePlan",
    "QueueReport",
    "Step",
    "entry_for",
    "integrator_task",
    "marker_paths",
    "merge_queue",
    "next_step",
    "plan_queue",
    "refusal",
    "report_lines",
    "result_lines",
    "run_entries",
    "run_queue",
]
