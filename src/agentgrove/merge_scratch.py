"""The merge queue's git side: a queue validated against the repository, then run in a scratch
worktree (decisions and wording: :mod:`agentgrove.merge_queue`).

Every entry is merged (``--no-ff``) in ``<grove home>/merges/<id>``, never in the user's
checkout, starting from BRANCH's tip. After each merge the check runs there, confined like an
agent's Bash (:func:`agentgrove.checks.run_check`; unconfined only with ``[runtime] sandbox =
"off"``). An entry that conflicts or turns the check red is undone in the scratch worktree.

With ``resolve``, grove commits the scratch state as it is (a conflicted merge with both
parents and its markers), an ``integrator`` agent starts from that commit
(``SpawnRequest(base=...)``) and runs here, inline, and its result commit lands only when it
descends from that commit, leaves no conflict marker in the paths that conflicted, and passes
the check again.

At the end BRANCH moves in one compare-and-swap on its old tip. When BRANCH is the user's
checked-out branch, the checkout is brought there by ``git merge --ff-only`` (a fast-forward git
refuses when uncommitted changes are in the way; it never overwrites them); when it refuses, or
BRANCH moved meanwhile, BRANCH is left alone and the result is kept on ``grove/queue/<id>``.

With ``[git] remote``, an entry's commit that is not here (it ran on another machine) is
fetched while planning, and the ``grove/`` branches the queue made or moved are pushed at the
end (:func:`agentgrove.merge_queue.branches_to_push`).
"""

from __future__ import annotations

import fcntl
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from agentgrove import remotes
from agentgrove.checkout_guard import files_in_the_way, in_the_way_refusal
from agentgrove.checks import CheckRun, run_check
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
from agentgrove.merge_queue import (
    CHECK_TIMEOUT_S,
    INTEGRATOR,
    KEEP_PREFIX,
    Entry,
    EntryResult,
    Outcome,
    QueuePlan,
    QueueReport,
    Step,
    branches_to_push,
    entry_for,
    integrator_task,
    marker_paths,
    next_step,
    refusal,
    run_entries,
)
from agentgrove.models import SpawnRequest
from agentgrove.roles import check_command_refusal
from agentgrove.run_branches import checked_out, worktrees_on
from agentgrove.text import one_line
from agentgrove.workspaces import checkout_merge_in_progress

if TYPE_CHECKING:
    from agentgrove.grove import Grove

log = logging.getLogger(__name__)


Checker = Callable[..., CheckRun]
"""Runs the check: :func:`agentgrove.checks.run_check` or a stand-in with its signature."""


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
    reason = None if check is None else check_command_refusal(check)
    if reason is not None:  # the wording of --check on spawn and run
        raise BadInput(f"--check: {reason}")
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
    remote = grove.service.workspaces.remote
    for entry in entries:
        if remote is not None:  # another machine's result: on the remote since it ended
            remotes.fetch_commit(repo, remote, entry.commit, entry.branch)
        if run(["cat-file", "-e", f"{entry.commit}^{{commit}}"], repo).returncode != 0:
            raise BadInput(
                f"agent {entry.agent_id}'s result {entry.commit[:12]} is not in {repo} (it ran "
                "in another clone): fetch its branch first"
            )
    head_ref = run_git(["symbolic-ref", "-q", "HEAD"], repo, check=False)
    if into is None:
        if not head_ref.startswith("refs/heads/"):
            raise BadInput(
                f"{repo} has no branch checked out (detached HEAD): name one with --into BRANCH"
            )
        into = head_ref.removeprefix("refs/heads/")
    ref = f"refs/heads/{into}"
    if into.startswith("-") or run(["check-ref-format", ref], repo).returncode != 0:
        # Not a branch name (``main~0``, ``main^{commit}``): it would resolve as a revision,
        # and no branch of that name could be moved at the end.
        raise BadInput(f"--into {into!r} is not a branch name: name a branch, like main")
    old_tip = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False)
    if not old_tip:
        raise BadInput(
            f"--into {into!r}: no such branch in {repo}; create it first (`git branch {into}`)"
        )
    checked_out = head_ref == ref
    here = repo.resolve()
    elsewhere = next((p for p in worktrees_on(repo, ref) if p.resolve() != here), None)
    if elsewhere is not None:
        raise BadInput(
            f"--into {into}: that branch is checked out in another worktree ({elsewhere}); "
            "merge into a branch checked out here or in none"
        )
    if checked_out and checkout_merge_in_progress(repo):
        raise BadInput(
            f"{repo} has a merge in progress: finish it (`git merge --continue`) or abort it "
            "(`git merge --abort`), then run the queue"
        )
    return QueuePlan(into, old_tip, checked_out, tuple(entries), tuple(skipped), check, resolve)


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
        return self._push(self._land(tuple(results), tip))

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
        self._git("clean", "-ffdqx")

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
        checker = self._checker or run_check
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
        # What the check wrote is not part of the entry: the next merge starts clean, ignored
        # files too (an entry's check could leave an ignored conftest.py for the next one).
        self._git("reset", "--quiet", "--hard", "HEAD")
        self._git("clean", "-ffdqx")
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

    def _push(self, report: QueueReport) -> QueueReport:
        """With ``[git] remote``, ``report`` once its grove branches are pushed, or with
        ``push_error`` (the first failure, git's words; the branches stay here)."""
        workspaces = self.grove.service.workspaces
        if workspaces.remote is None:
            return report
        for branch in branches_to_push(report):
            try:
                remotes.push_branch(
                    self.repo, workspaces.remote, branch, retry_s=workspaces.push_retry_s
                )
            except remotes.PushFailed as exc:
                log.warning("merge queue: %s", exc)
                return replace(report, push_error=str(exc))
        return report

    def _update(self, tip: str) -> str | None:
        """Move BRANCH from its old tip to ``tip`` atomically; why not, or ``None``."""
        plan, ref = self.plan, f"refs/heads/{self.plan.branch}"
        if not plan.checked_out:
            if checked_out(self.repo, ref):
                # Checked out since the plan: moving it would leave that checkout's files
                # behind its HEAD.
                return f"it was checked out while the queue ran ({ref})"
            proc = run(["update-ref", ref, tip, plan.old_tip], self.repo)
            return None if proc.returncode == 0 else f"it moved while the queue ran ({ref})"
        head = run_git(["rev-parse", "-q", "--verify", "HEAD"], self.repo, check=False)
        current = run_git(["symbolic-ref", "-q", "HEAD"], self.repo, check=False)
        if current != ref or head != plan.old_tip:
            return "your checkout moved while the queue ran"
        blocking = files_in_the_way(self.repo, plan.old_tip, tip)
        if blocking:  # git would overwrite the ignored ones silently
            return in_the_way_refusal(blocking)
        # git's fast-forward: refused, with nothing touched, when uncommitted changes are in
        # the way; changes it does not touch stay as they are. It moves HEAD only from the
        # HEAD it read, so a commit made meanwhile makes it refuse too.
        proc = run(["merge", "--ff-only", "--no-verify", "--quiet", tip], self.repo)
        if proc.returncode != 0:
            words = one_line(proc.stderr or proc.stdout, 400)
            return f"git could not fast-forward your checkout: {words}"
        return None


async def merge_queue(
    grove: Grove, plan: QueuePlan, *, checker: Checker | None = None
) -> QueueReport:
    """Run ``plan`` (from :func:`plan_queue`); see :class:`MergeQueue`."""
    return await MergeQueue(grove, plan, checker=checker).run()


def run_queue(grove: Grove, plan: QueuePlan, *, checker: Checker | None = None) -> QueueReport:
    """:func:`merge_queue` in a new event loop."""
    return anyio.run(lambda: merge_queue(grove, plan, checker=checker))


__all__ = ["Checker", "MergeQueue", "merge_queue", "plan_queue", "run_queue"]
