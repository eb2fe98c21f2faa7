"""Git worktrees, one per agent. Git itself runs only through :mod:`agentgrove.gitexec`.

Each agent works on branch ``grove/<agent-id>`` in ``<grove home>/worktrees/<agent-id>``, created
from a base commit. When its run ends, everything in the worktree is committed on that branch by
grove (agents inside a sandbox cannot commit themselves), with trailers naming the agent.
Outside a git repository an agent runs in the directory itself, unisolated.

Everything in a worktree is the agent's, including its ``.git`` file: commands over a worktree
name the git directory grove registered for it, and repositories the agent nested in its
worktree are neither entered nor committed (the commit's diffstat names them).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from agentgrove import remotes
from agentgrove.checkout_guard import files_in_the_way, in_the_way_refusal
from agentgrove.child_merges import holds_markers
from agentgrove.errors import BadInput, BadRef, GroveError
from agentgrove.gitexec import (
    DIFF_SAFE,
    IDENTITY,
    GitError,
    Worktree,
    common_dir,
    nested_repositories,
    registered_worktree,
    run,
    run_git,
    user_identity,
    worktree,
)
from agentgrove.models import WorkspaceRecord

BRANCH_PREFIX = "grove/"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
"""Git's empty tree: what an unborn HEAD is compared against."""


class MergeConflict(GroveError):
    """A merge conflicted and was undone; ``paths`` name the files."""

    def __init__(self, ref: str, paths: list[str]) -> None:
        super().__init__(
            f"merging {ref[:12] if _is_sha(ref) else ref} conflicts in: "
            f"{', '.join(paths) or '(unknown)'}; nothing was changed"
        )
        self.paths = paths


class ConflictMarkersLeft(GroveError):
    """Files a merge left conflicted still hold conflict markers: grove does not commit them.
    ``paths`` name the files."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(
            f"conflict markers left in: {', '.join(paths)}; remove them (keep what each side "
            "should keep) before the work can be committed"
        )
        self.paths = paths


@dataclass(frozen=True)
class ChildMergeResult:
    """What merging one child's commit into a parent's worktree did: the files it brought in,
    or (``conflicted``) the files that conflict, with the merge left in progress."""

    files: tuple[str, ...] = ()
    conflicted: tuple[str, ...] = ()


def _is_hex(ref: str) -> bool:
    return all(c in "0123456789abcdef" for c in ref.lower())


def _is_sha(ref: str) -> bool:
    return len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)


def branch_name(agent_id: str) -> str:
    return f"{BRANCH_PREFIX}{agent_id}"


class Workspaces:
    """Creates, commits and removes agent worktrees of one repository.

    ``repo`` is ``None`` outside git: then :meth:`create` hands out ``cwd`` itself, unisolated.
    Worktree creation and removal are serialised across threads and processes (a lock file
    beside the worktrees): concurrent ``git worktree add`` calls in one repository otherwise fail
    at random, reading each other's half-written administrative files, and a ``worktree prune``
    could remove a worktree another process is adding.
    """

    _thread_lock = threading.Lock()

    def __init__(
        self,
        repo: Path | None,
        worktrees_dir: Path,
        cwd: Path,
        *,
        remote: str | None = None,
        push_retry_s: float = 600.0,
    ) -> None:
        self.repo = repo
        self.worktrees_dir = worktrees_dir
        self.cwd = cwd
        # ``[git] remote`` (see agentgrove.remotes): commits are fetched from it before use
        # and agents' branches pushed to it.
        self.remote = remote if repo is not None else None
        self.push_retry_s = push_retry_s

    def fetch(self, commit: str | None) -> None:
        """With a remote, make ``commit`` present in the repository (fetched when missing);
        without one, or outside git, nothing."""
        if self.repo is not None and self.remote and commit:
            remotes.fetch_commit(self.repo, self.remote, commit)

    def push(self, ws: WorkspaceRecord) -> WorkspaceRecord:
        """With a remote, push the agent's branch; ``ws`` with ``pushed_commit`` set. Without
        one (or unisolated) ``ws`` unchanged. Raises :class:`agentgrove.remotes.PushFailed`."""
        if self.repo is None or not self.remote or ws.branch is None:
            return ws
        pushed = remotes.push_branch(self.repo, self.remote, ws.branch, retry_s=self.push_retry_s)
        return replace(ws, pushed_commit=pushed)

    @contextmanager
    def _locked(self, timeout_s: float = 60.0) -> Iterator[None]:
        """The worktree lock; :class:`GitError` once one holder has kept it for ``timeout_s``
        rather than hanging behind a process that holds it and is stopped (a dead one releases
        it with its descriptor).

        The timeout runs from the last change of holder, not from when we began to wait:
        under load many processes queue for the lock, each holding it briefly, and a waiter
        may see it pass to others for longer than ``timeout_s`` (flock grants no turns). Each
        holder writes its pid and a fresh token into the lock file, so a waiter sees the lock
        change hands and restarts its clock."""
        self.worktrees_dir.mkdir(parents=True, exist_ok=True)
        path = self.worktrees_dir / ".lock"
        with self._thread_lock:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                self._acquire(fd, path, timeout_s)
                try:
                    # Best effort (a full disk): without it, waiters' clocks merely run on.
                    with suppress(OSError):
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, f"{os.getpid()} {os.urandom(8).hex()}\n".encode(), 0)
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @staticmethod
    def _acquire(fd: int, path: Path, timeout_s: float) -> None:
        """Take the lock on ``fd``, polling; :class:`GitError` when the holder written in the
        file has not changed for ``timeout_s``."""
        seen = os.pread(fd, 64, 0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = os.pread(fd, 64, 0)
                if holder != seen:  # it changed hands: the queue moves
                    seen, deadline = holder, time.monotonic() + timeout_s
                elif time.monotonic() > deadline:
                    pid = holder.split(b" ", 1)[0].decode(errors="replace")
                    who = f"process {pid}" if pid.isdigit() else "another process"
                    raise GitError(
                        f"{who} has held {path} for {timeout_s:g} s (stopped?)"
                    ) from None
                time.sleep(0.01)  # flock offers no timed wait; this is a lock, not a test

    @property
    def isolated(self) -> bool:
        return self.repo is not None

    def resolve_base(self, ref: str | None) -> str | None:
        """The commit ``ref`` names (default: HEAD); ``None`` outside git.

        Raises :class:`BadRef` when it names no commit."""
        if self.repo is None:
            return None
        name = ref or "HEAD"
        if ref is not None and self.remote and len(ref) >= 7 and _is_hex(ref):
            self.fetch(ref)  # a commit only the remote has (another machine's)
        try:
            return run_git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], self.repo)
        except GitError:
            if ref is None:
                raise BadRef(
                    f"repository {self.repo} has no commits yet: commit something first "
                    "(agents branch off a commit) or pass --base REF"
                ) from None
            raise BadRef(
                f"--base {ref!r} does not name a commit in {self.repo}; "
                "give a branch, tag or commit (`git log --oneline` lists commits)"
            ) from None

    def create(
        self, agent_id: str, base: str | None, merge: tuple[str, ...] = ()
    ) -> WorkspaceRecord:
        """The agent's worktree, created on first call and reused on retries.

        ``merge``: commits merged into a new worktree after it branches from ``base`` (several
        dependencies). A conflict removes the worktree again and raises :class:`MergeConflict`.
        """
        if self.repo is None:
            return WorkspaceRecord(
                agent_id=agent_id,
                repo_path=None,
                worktree_path=str(self.cwd),
                branch=None,
                base_ref=None,
                state="unisolated",
            )
        path = self.worktrees_dir / agent_id
        branch = branch_name(agent_id)
        base_commit = base or self.resolve_base(None)
        remote_tip = None
        if self.remote:  # another machine's commits (the base, dependencies, this branch)
            for commit in (base_commit, *merge):
                self.fetch(commit)
            remote_tip = remotes.remote_tip(self.repo, self.remote, branch)
        # Before anything is made: a base or merge commit this clone lacks (and, with a remote,
        # could not fetch) would leave a half-made worktree, or pass for a merge conflict.
        for commit in (base_commit, *merge):
            if not remotes.has_commit(self.repo, str(commit)):
                raise BadRef(
                    self._missing(str(commit), "base" if commit == base_commit else "merge")
                )
        head = None
        with self._locked():
            run_git(["worktree", "prune"], self.repo)
            if registered_worktree(self.repo, path) is None:
                self.worktrees_dir.mkdir(parents=True, exist_ok=True)
                tip = run_git(
                    ["rev-parse", "-q", "--verify", f"refs/heads/{branch}"], self.repo, check=False
                )
                if not tip and remote_tip:  # an earlier attempt's work, from another machine
                    run_git(["branch", branch, remote_tip], self.repo)
                    tip = remote_tip
                if tip and tip not in (base_commit, remote_tip):
                    # Not one grove made for this agent (that one has its worktree): adopting
                    # it would hand the agent someone's work and later commit onto it.
                    raise BadInput(
                        f"branch {branch} already exists and grove did not create it for "
                        f"agent {agent_id}: rename it (git branch -m {branch} NEW) and retry"
                    )
                # Locked: `worktree prune` (any other agent's create) would otherwise drop
                # git's record of this worktree as soon as the agent deletes its .git file.
                add = ["worktree", "add", "--lock"]
                if tip:
                    run_git([*add, str(path), branch], self.repo)
                else:
                    run_git([*add, "-b", branch, str(path), str(base_commit)], self.repo)
                    self._merge(path, branch, merge)
                    if not merge and _is_sha(str(base_commit)):
                        head = str(base_commit)  # the new branch is the base: no git to ask
        head = head or run_git(["rev-parse", f"refs/heads/{branch}"], self.repo)
        return WorkspaceRecord(
            agent_id=agent_id,
            repo_path=str(self.repo),
            worktree_path=str(path),
            branch=branch,
            base_ref=base_commit,
            head_commit=head,
        )

    def _missing(self, commit: str, what: str) -> str:
        """The one line naming a ``what`` commit this clone does not have."""
        shown = commit[:12] if _is_sha(commit) else repr(commit)
        if self.remote:
            return (
                f"{what} commit {shown} is neither in {self.repo} nor on remote "
                f"{self.remote!r}: push it from the clone that has it (git push {self.remote} "
                "BRANCH), or run this worker in a clone of the same repository"
            )
        return (
            f"{what} commit {shown} is not in {self.repo}: set [git] remote so that machines "
            "share commits, or run the agent where the commit is"
        )

    def _merge(self, path: Path, branch: str, refs: tuple[str, ...]) -> None:
        assert self.repo is not None
        tree = worktree(self.repo, path) if refs else None
        for ref in refs:
            merge = ["merge", "--no-verify", "--no-edit", "--no-ff", "-m", f"grove: merge {ref}"]
            try:
                run_git([*merge, ref], path, identity=IDENTITY, tree=tree)
            except GitError:
                conflicted = run_git(
                    ["diff", *DIFF_SAFE, "--name-only", "--diff-filter=U"],
                    path,
                    check=False,
                    tree=tree,
                )
                run_git(["merge", "--abort"], path, check=False, tree=tree)
                self._drop_worktree(path)
                run_git(["branch", "-D", branch], self.repo, check=False)
                raise MergeConflict(ref, conflicted.splitlines()) from None

    def commit(
        self, ws: WorkspaceRecord, message: str, trailers: dict[str, str]
    ) -> WorkspaceRecord:
        """Commit every change in the worktree; the record gains head commit, diffstat, files.

        Nothing to commit is not an error: the head stays where it was. Repositories nested in
        the worktree (a directory holding a ``.git``) are left out, never entered, and named at
        the end of the diffstat.

        With a merge of a child in progress, the commit concludes it (a commit with both
        parents, even when nothing changed) unless a file that conflicted still holds conflict
        markers: then nothing is staged or committed, the merge stays in progress, and
        :class:`ConflictMarkersLeft` names the files.
        """
        if ws.repo_path is None:
            return ws
        repo, path = Path(ws.repo_path), Path(ws.worktree_path)
        tree = worktree(repo, path)
        _on_own_branch(path, tree, ws, "nothing was committed")
        # A merge of a child in progress (a conflict the agent resolves): the commit concludes
        # it, but never with git's conflict markers still in a file (wherever the agent moved
        # them).
        merging = _merge_head(path, tree)
        if merging:
            left = _markers_left(path, tree, merging)
            if left:
                raise ConflictMarkersLeft(left)
        nested = nested_repositories(path)
        skip = [f":(exclude,literal){p}" for p in nested]
        run_git(["add", "-A", "--", ".", *skip], path, tree=tree)
        staged = run(["diff", "--cached", "--quiet", *DIFF_SAFE], path, tree=tree)
        if staged.returncode not in (0, 1):
            raise GitError(f"git diff --cached failed: {staged.stderr.strip()}")
        if staged.returncode == 1 or merging:
            args = ["commit", "--quiet", "--no-verify", "-m", message]
            for key, value in trailers.items():
                args += ["--trailer", f"{key}: {value}"]
            run_git(args, path, identity=IDENTITY, tree=tree)
        return self._recorded(ws, nested)

    def _recorded(self, ws: WorkspaceRecord, nested: list[str]) -> WorkspaceRecord:
        """``ws`` with its branch's head commit, diffstat and files changed since its base."""
        assert ws.repo_path is not None
        repo = Path(ws.repo_path)
        head = run_git(["rev-parse", f"refs/heads/{ws.branch}"], repo)
        span = f"{ws.base_ref}..{head}"
        # Still at its base (nothing committed, the usual one-turn answer): nothing to diff.
        unmoved = head == ws.base_ref
        diffstat = "" if unmoved else run_git(["diff", *DIFF_SAFE, "--stat", span], repo)
        if nested:
            diffstat += (
                f"\nnot committed: {len(nested)} nested git repositor"
                f"{'y' if len(nested) == 1 else 'ies'}: {', '.join(nested)}"
            ).rstrip()
        listed = "" if unmoved else run_git(["diff", *DIFF_SAFE, "--name-only", "-z", span], repo)
        files = tuple(f for f in listed.split("\0") if f)
        return replace(ws, head_commit=head, diffstat=diffstat.strip(), files_changed=files)

    # -- children's work merged into their parent's worktree (see agentgrove.child_merges) --

    def refreshed(self, ws: WorkspaceRecord) -> WorkspaceRecord:
        """``ws`` with its head commit, diffstat and files as its branch has them now (after
        grove merged children into it); nothing is committed."""
        if ws.repo_path is None:
            return ws
        return self._recorded(ws, nested_repositories(Path(ws.worktree_path)))

    def contains(self, ws: WorkspaceRecord, commit: str) -> bool:
        """``commit`` is in the history of the agent's branch (asked of the main repository,
        never of the worktree)."""
        if ws.repo_path is None or not _is_sha(commit):
            return False
        repo = Path(ws.repo_path)
        ancestor = ["merge-base", "--is-ancestor", commit, f"refs/heads/{ws.branch}"]
        return run(ancestor, repo).returncode == 0

    def merge_in_progress(self, ws: WorkspaceRecord) -> bool:
        """A merge is in progress in the agent's worktree (git's MERGE_HEAD, kept in the main
        repository's record of the worktree, out of the agent's reach)."""
        if ws.repo_path is None:
            return False
        path = Path(ws.worktree_path)
        return _merging_in(path, worktree(Path(ws.repo_path), path))

    def merge_child(self, ws: WorkspaceRecord, commit: str, message: str) -> ChildMergeResult:
        """Merge ``commit`` (a child's head) into the agent's worktree, ``--no-ff`` and
        hooks off, committed with grove's identity; its files. On a conflict the merge is left
        in progress (markers in the files) for the agent to resolve, and the result names the
        conflicted files. Git refusing to start (a commit it does not have, changes in the
        way) raises :class:`GitError` with git's words, leaving nothing in progress.

        Commit the worktree first: git refuses to merge over uncommitted changes it would
        overwrite."""
        if ws.repo_path is None:
            raise BadInput(f"agent {ws.agent_id} runs outside git: nothing can be merged into it")
        if not _is_sha(commit):  # only ever a commit id from the store: never an option
            raise GitError(f"not a commit id: {commit!r}")
        repo, path = Path(ws.repo_path), Path(ws.worktree_path)
        self.fetch(commit)  # a child that ran on another machine
        tree = worktree(repo, path)
        _on_own_branch(path, tree, ws, "nothing was merged")
        before = run_git(["rev-parse", f"refs/heads/{ws.branch}"], repo)
        merge = ["merge", "--no-verify", "--no-edit", "--no-ff", "--no-stat", "-m", message]
        proc = run([*merge, commit], path, identity=IDENTITY, tree=tree)
        if proc.returncode != 0:
            conflicted = _unmerged_in(path, tree)
            if conflicted and _merging_in(path, tree):
                return ChildMergeResult(conflicted=tuple(conflicted))
            if _merging_in(path, tree):
                run(["merge", "--abort"], path, tree=tree)
            words = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())
            raise GitError(f"git merge {commit[:12]} refused: {words}")
        after = run_git(["rev-parse", f"refs/heads/{ws.branch}"], repo)
        listed = run_git(["diff", *DIFF_SAFE, "--name-only", "-z", f"{before}..{after}"], repo)
        return ChildMergeResult(files=tuple(f for f in listed.split("\0") if f))

    def abort_merge(self, ws: WorkspaceRecord) -> None:
        """Undo a merge in progress in the agent's worktree (back to its last commit)."""
        if ws.repo_path is None:
            return
        path = Path(ws.worktree_path)
        tree = worktree(Path(ws.repo_path), path)
        if _merging_in(path, tree):
            run_git(["merge", "--abort"], path, tree=tree)

    def branch_ref(self, ws: WorkspaceRecord) -> str | None:
        """The ref naming the agent's branch in *this* clone (which may not be the one the
        agent ran in: another machine's): ``refs/heads/grove/<id>`` when it holds the recorded
        head; otherwise, with a remote, the remote's branch fetched into grove's tracking refs
        (never into the user's branches); otherwise the local branch if any. ``None``: neither
        this clone nor the remote has it (or this is not a git clone, or the agent ran outside
        git). Decided by :func:`agentgrove.remotes.branch_source`."""
        if self.repo is None or ws.branch is None:
            return None
        local = f"refs/heads/{ws.branch}"
        tip = run_git(
            ["rev-parse", "-q", "--verify", f"{local}^{{commit}}"], self.repo, check=False
        )
        head = ws.head_commit
        holds = bool(tip) and (
            not head
            or tip == head
            or (
                _is_sha(head)
                and run(["merge-base", "--is-ancestor", head, tip], self.repo).returncode == 0
            )
        )
        tracking = None
        if not holds and self.remote:
            tracking = remotes.remote_tip(self.repo, self.remote, ws.branch)
        source = remotes.branch_source(tip or None, holds, tracking)
        if source == "tracking":
            return f"{remotes.TRACKING}{ws.branch}"
        return local if source == "local" else None

    def _readable_ref(self, ws: WorkspaceRecord, doing: str) -> tuple[Path, str]:
        """This clone and the ref of the agent's branch in it, or :class:`BadInput` saying why
        there is none."""
        if ws.repo_path is None or ws.branch is None:
            raise BadInput(f"agent {ws.agent_id} has no branch to {doing} (it ran outside git)")
        if self.repo is None:
            raise BadInput(f"not in a git clone: run grove {doing} in a clone of the repository")
        ref = self.branch_ref(ws)
        if ref is None:
            where = f" nor on remote {self.remote!r}" if self.remote else ""
            raise BadInput(
                f"branch {ws.branch} of agent {ws.agent_id} is not in {self.repo}{where}: "
                + (
                    "it ran on another machine whose push did not land (or was removed)"
                    if self.remote
                    else "it was deleted, or the agent ran on another machine (set [git] "
                    "remote to share branches between machines)"
                )
            )
        return self.repo, ref

    def diff(self, ws: WorkspaceRecord) -> str:
        """The patch from the agent's base to its branch head (its committed work), read in
        this clone; the branch (and base) fetched from the remote when another machine ran the
        agent (see :meth:`branch_ref`). :class:`BadInput` when no clone has the branch."""
        if ws.repo_path is None or ws.branch is None:
            return ""
        repo, ref = self._readable_ref(ws, "diff")
        if ws.base_ref:
            self.fetch(ws.base_ref)
        return run_git(["diff", *DIFF_SAFE, f"{ws.base_ref}..{ref}"], repo)

    def merge_into_checkout(self, ws: WorkspaceRecord) -> CheckoutMerge:
        """Merge the agent's branch into this clone's checked-out branch (fetched from the
        remote when another machine ran the agent): see :meth:`merge_branch_into_checkout`.
        :class:`BadInput` when the agent ran outside git or no clone has its branch."""
        repo, ref = self._readable_ref(ws, "merge")
        assert ws.branch is not None
        return merge_branch_into_checkout(repo, ws.branch, ref=ref)

    def remove_path(self, path: Path) -> None:
        """Remove a worktree directory no record owns (see :mod:`agentgrove.cleanup`)."""
        with self._locked():
            self._drop_worktree(path)

    def _drop_worktree(self, path: Path, repo: Path | None = None) -> None:
        """Delete the worktree directory and git's record of it. Never ``git worktree
        remove``, which reads the worktree (the agent's) to decide whether it is clean."""
        repo = repo or self.repo
        assert repo is not None
        admin = registered_worktree(repo, path)
        shutil.rmtree(path, ignore_errors=True)
        if admin is not None:  # grove's own record in the main .git (locked, so prune keeps it)
            shutil.rmtree(admin, ignore_errors=True)
        run_git(["worktree", "prune"], repo)

    def remove(self, ws: WorkspaceRecord) -> WorkspaceRecord:
        """Remove the worktree directory; the branch and its commits stay."""
        if ws.repo_path is None:
            return ws
        with self._locked():
            self._drop_worktree(Path(ws.worktree_path), Path(ws.repo_path))
        return replace(ws, state="removed")


@dataclass(frozen=True)
class CheckoutMerge:
    """What merging a branch into the user's checkout did: the checkout's ``head`` afterwards,
    whether the branch was ``already_merged`` (its tip already in HEAD's history: nothing was
    changed), and every path the merge changed in the checkout (HEAD before .. HEAD after),
    sorted; empty when already merged."""

    head: str
    already_merged: bool
    files: tuple[str, ...] = ()


def merge_branch_into_checkout(repo: Path, branch: str, *, ref: str | None = None) -> CheckoutMerge:
    """Merge ``branch`` into ``repo``'s checked-out branch (``--no-ff``, so the branch's commits
    stay one unit) and say what it did. A branch whose tip is already in HEAD's history changes
    nothing (``already_merged``). Uses the user's git identity, or grove's when none is
    configured. Refuses (:class:`BadInput`) a checkout with a merge in progress, which it never
    touches. A conflict aborts the merge, leaving the checkout as it was, and raises
    :class:`MergeConflict`; a checkout git refuses to merge into (uncommitted changes in the
    way) raises :class:`GitError` with git's words. A detached HEAD is fine. ``ref``: where
    the branch is read from (default ``refs/heads/<branch>``; grove's tracking ref of the
    remote's copy for an agent another machine ran)."""
    ref = ref or f"refs/heads/{branch}"
    if checkout_merge_in_progress(repo):
        # Never touch a merge the user has in progress (an abort would throw their work
        # away): they finish it first.
        raise BadInput(
            f"{repo} has a merge in progress: finish it (`git merge --continue`) or abort "
            f"it (`git merge --abort`), then merge {branch}"
        )
    before = run_git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], repo, check=False)
    tip = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False)
    if not tip:
        raise GitError(f"branch {branch} does not exist in {repo}: nothing to merge")
    if before and is_merged(repo, tip):
        return CheckoutMerge(head=before, already_merged=True)
    blocking = files_in_the_way(repo, before or EMPTY_TREE, tip)
    if blocking:  # git would overwrite the ignored ones silently
        raise GitError(f"git merge {branch} refused: {in_the_way_refusal(blocking)}")
    merge = ["merge", "--no-verify", "--no-ff", "--no-edit", "-m", f"Merge {branch}"]
    proc = run([*merge, tip], repo, identity=user_identity(repo) or IDENTITY)
    if proc.returncode != 0:
        conflicted = _unmerged(repo)
        if conflicted and _merging(repo):  # our merge stopped on conflicts: undo it
            run_git(["merge", "--abort"], repo, check=False)
            raise MergeConflict(branch, conflicted)
        words = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())
        raise GitError(f"git merge {branch} refused: {words}")
    head = run_git(["rev-parse", "HEAD"], repo)
    listed = run_git(
        ["diff", *DIFF_SAFE, "--name-only", "--no-renames", "-z", before or EMPTY_TREE, head],
        repo,
    )
    return CheckoutMerge(
        head=head, already_merged=False, files=tuple(sorted(f for f in listed.split("\0") if f))
    )


def checkout_merge_message(branch: str, merge: CheckoutMerge) -> str:
    """The one line telling the user what merging ``branch`` did (plain text: the file names
    are the agent's, so the caller escapes it for its renderer)."""
    if merge.already_merged:
        return f"{branch} is already merged into HEAD ({merge.head[:10]}): nothing to merge"
    if not merge.files:
        return f"merged {branch} @ {merge.head[:10]}: no files changed"
    count = len(merge.files)
    return (
        f"merged {branch} @ {merge.head[:10]}: {count} file{'' if count == 1 else 's'}: "
        + ", ".join(merge.files)
    )


def checkout_merge_in_progress(repo: Path) -> bool:
    """Whether ``repo``'s checkout is mid-merge (MERGE_HEAD, or unresolved conflicts): the
    user's merge, which grove never touches."""
    return _merging(repo) or bool(_unmerged(repo))


def _merging(repo: Path) -> bool:
    """A merge is in progress in ``repo``'s checkout (MERGE_HEAD exists)."""
    return bool(run_git(["rev-parse", "-q", "--verify", "MERGE_HEAD"], repo, check=False))


def _unmerged(repo: Path) -> list[str]:
    """Paths with unresolved conflicts in ``repo``'s checkout."""
    out = run_git(["diff", *DIFF_SAFE, "--name-only", "--diff-filter=U"], repo, check=False)
    return out.splitlines()


def _on_own_branch(path: Path, tree: Worktree, ws: WorkspaceRecord, nothing: str) -> None:
    """Raise :class:`GitError` unless worktree ``path``'s HEAD names the agent's own branch:
    a HEAD pointed elsewhere (the user's main, detached) by an unconfined agent is refused,
    never followed, by anything that commits there (a commit, a merge)."""
    branch = f"refs/heads/{ws.branch}"
    head_ref = run(["symbolic-ref", "-q", "HEAD"], path, tree=tree).stdout.strip()
    if head_ref != branch:
        raise GitError(
            f"the worktree's HEAD names {head_ref or 'no branch'}, not {branch}: grove "
            f"commits an agent's work only onto its own branch, so {nothing}"
        )


def _merge_head(path: Path, tree: Worktree) -> str:
    """The commit being merged into worktree ``path`` (its MERGE_HEAD, in grove's record);
    empty when no merge is in progress."""
    out = run_git(["rev-parse", "-q", "--verify", "MERGE_HEAD"], path, check=False, tree=tree)
    return out if _is_sha(out) else ""


def _merging_in(path: Path, tree: Worktree) -> bool:
    """A merge is in progress in worktree ``path`` (its MERGE_HEAD, in grove's record)."""
    return bool(_merge_head(path, tree))


def _unmerged_in(path: Path, tree: Worktree) -> list[str]:
    """Paths of worktree ``path`` with unresolved conflicts in the index."""
    out = run_git(
        ["diff", *DIFF_SAFE, "--name-only", "-z", "--diff-filter=U"], path, check=False, tree=tree
    )
    return sorted({f for f in out.split("\0") if f})


def _changed_in(path: Path, tree: Worktree, unmerged: set[str]) -> list[str]:
    """Files of worktree ``path`` a commit would take: ``unmerged``, changed against the index,
    or untracked and not ignored (``ls-files`` and ``diff`` read no agent configuration that
    runs anything)."""
    changed = run_git(["diff", *DIFF_SAFE, "--name-only", "-z"], path, check=False, tree=tree)
    others = ["ls-files", "-z", "--others", "--exclude-standard"]
    untracked = run_git(others, path, check=False, tree=tree)
    listed = {f for f in f"{changed}\0{untracked}".split("\0") if f}
    return sorted(listed | unmerged)


def _markers_left(path: Path, tree: Worktree, theirs: str) -> list[str]:
    """Which files the commit of worktree ``path`` would take hold conflict markers of the
    merge of ``theirs`` in progress (see :mod:`agentgrove.child_merges`)."""
    unmerged = set(_unmerged_in(path, tree))
    return [
        p
        for p in _changed_in(path, tree, unmerged)
        if _file_holds_markers(path, p, theirs, conflicted=p in unmerged)
    ]


MAX_LINE = 8192
"""Longest line the marker check looks at: git's marker lines are short (a marker, a commit
id, a path), and a longer line is never held in memory whole."""


def _bounded_lines(handle: BinaryIO, limit: int = MAX_LINE) -> Iterator[bytes]:
    """The lines of ``handle``, read in chunks; a line longer than ``limit`` comes out empty
    (never a marker), so a huge file without newlines costs one chunk of memory."""
    partial, overlong = b"", False
    while chunk := handle.read(1 << 16):
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            line = partial + piece + b"\n"
            yield b"" if overlong or len(line) > limit else line
            partial, overlong = b"", False
        if overlong or len(partial) + len(rest) > limit:
            partial, overlong = b"", True
        else:
            partial += rest
    if partial and not overlong:
        yield partial


def _file_holds_markers(root: Path, relative: str, theirs: str, *, conflicted: bool) -> bool:
    """Whether regular file ``relative`` under ``root`` holds conflict marker lines. The file
    is found without following any symbolic link on the way and opened without blocking on a
    FIFO (the agent owns every component of the path), and read in bounded memory; missing or
    not a regular file: no markers (git commits a link as its target's name, and a deletion as
    nothing)."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return False
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(parts[-1], flags, dir_fd=directory)
    except OSError:
        return False
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
        os.close(fd)
        return False
    with os.fdopen(fd, "rb") as handle:
        return holds_markers(_bounded_lines(handle), theirs, conflicted=conflicted)


def exclude_from_git(repo: Path, entry: str) -> None:
    """Add ``entry`` to the repository's ``info/exclude`` (ignored without touching .gitignore)."""
    common = common_dir(repo)
    exclude = common / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if entry not in lines:
        exclude.write_text("\n".join([*lines, entry]) + "\n")


def init_repo(path: Path, files: dict[str, str]) -> str:
    """Create a git repository at ``path`` with ``files`` in one initial commit; its sha."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--initial-branch=main"], path)
    for name, content in files.items():
        (path / name).write_text(content)
    run_git(["add", "-A"], path)
    run_git(["commit", "--quiet", "-m", "initial commit"], path, identity=IDENTITY)
    return run_git(["rev-parse", "HEAD"], path)


def delete_branch(repo: Path, branch: str, tip: str | None = None) -> None:
    """Delete ``branch``; with ``tip``, only while it still points there (atomic)."""
    if tip is None:
        run_git(["branch", "-D", branch], repo)
    else:
        run_git(["update-ref", "-d", f"refs/heads/{branch}", tip], repo)


def branch_tips(repo: Path, pattern: str = f"{BRANCH_PREFIX}*") -> dict[str, str]:
    """Each branch matching ``pattern``: its full commit id."""
    out = run_git(["branch", "--list", "--format=%(refname:short) %(objectname)", pattern], repo)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def is_merged(repo: Path, commit: str) -> bool:
    """``commit`` is in the history of the checkout's ``HEAD``."""
    return run(["merge-base", "--is-ancestor", commit, "HEAD"], repo).returncode == 0


def list_branches(repo: Path, pattern: str = f"{BRANCH_PREFIX}*") -> list[str]:
    out = run_git(
        ["branch", "--list", "--format=%(refname:short) %(objectname:short)", pattern], repo
    )
    return [line for line in out.splitlines() if line]
