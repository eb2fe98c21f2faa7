"""A completed workflow run's result: branch ``grove/run/<run-id>``.

The branch is a pure function of the run's sink nodes (the nodes nothing depends on) and their
result commits. One distinct result (sinks whose commits are in another sink's history add
nothing): the branch points at it. Several: at a merge commit whose parents are those results in
the workflow's node order, made without a worktree (``git merge-tree --write-tree`` and
``commit-tree``, through :mod:`agentgrove.gitexec`). Sinks that conflict get no branch; the
result names the conflicting paths.

Because it is a function of what the database holds, creation is idempotent and safe to repeat:
:func:`ensure_run_branch` is called right after the transaction that completes the run (the
worker's hook, :func:`after_node_completed`) and again wherever the branch is read (``grove
workflow show``, ``grove workflow merge``), so a crash between the two loses nothing. Two
processes creating it at once cannot both win: the ref is created only where none exists, and
the loser checks that the branch holds what it would have made.

A branch that already exists and is not this run's result is replaced only when grove made it
for this run (a result from before a ``workflow rerun``: a commit of grove's identity carrying
``Grove-Run: <id>``, or a result commit of a node of the run); anything else is someone's own
work and is left alone, with a message saying how to make room.

With ``[git] remote`` (several machines), the sinks' commits are fetched when they are not
here, a merge the remote's branch already holds (made by another machine) is taken as it is
rather than made again, and the branch is pushed (:func:`agentgrove.remotes.push_branch`,
never forced) each time it is made or found. A push that fails is reported in
:attr:`RunBranch.push_error` with git's words; the worker's hook also records it as the run's
event ``run.push_failed``.

The decisions (:func:`sink_keys`, :func:`sink_commits`) are pure; git runs only in
:func:`ensure_run_branch` and its helpers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from agentgrove import remotes
from agentgrove.gitexec import IDENTITY, GitError, run_git
from agentgrove.gitexec import run as git_run
from agentgrove.models import RunRecord, RunStatus
from agentgrove.store import Store

log = logging.getLogger(__name__)

RUN_BRANCH_PREFIX = "grove/run/"
"""Run branches live under ``grove/run/``; agent branches are ``grove/<12 hex digits>``, so
no agent id can name one (and ``grove/run`` itself is never an agent's branch)."""


def run_branch_name(run_id: str) -> str:
    return f"{RUN_BRANCH_PREFIX}{run_id}"


def run_id_of(branch: str) -> str | None:
    """The run id a ``grove/run/<id>`` branch name carries; ``None`` for any other name."""
    if not branch.startswith(RUN_BRANCH_PREFIX):
        return None
    rest = branch.removeprefix(RUN_BRANCH_PREFIX)
    return rest if rest and "/" not in rest else None


@dataclass(frozen=True)
class RunBranch:
    """A run's result branch, or why it has none. ``branch`` and ``commit`` are set together;
    otherwise ``problem`` says why (the run is not completed, the sinks conflict, ...) and
    ``conflicts`` lists the paths when the sinks conflict. With a remote, ``push_error`` says
    why the branch (made here all the same) is not on the remote: git's words."""

    branch: str | None = None
    commit: str | None = None
    problem: str | None = None
    conflicts: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()
    push_error: str | None = None


# -- decisions (pure) ------------------------------------------------------------------------


def sink_keys(run: RunRecord) -> list[str]:
    """The run's nodes that no node depends on, in the workflow's order."""
    needed = {dep for node in run.nodes for dep in node.depends_on}
    return [node.key for node in run.nodes if node.key not in needed]


def sink_commits(run: RunRecord) -> tuple[list[tuple[str, str]], str | None]:
    """Each sink's ``(key, result commit)``, or ``([], why not)`` when the run has no result
    yet: it is not completed, or a sink has no commit (it ran outside git)."""
    if run.status is not RunStatus.COMPLETED:
        return [], f"run {run.id} is {run.status.value}, not completed"
    nodes = {node.key: node for node in run.nodes}
    found: list[tuple[str, str]] = []
    for key in sink_keys(run):
        agent = nodes[key].agent
        ws = agent.workspace if agent else None
        if ws is None or ws.shared_commit is None or ws.branch is None:
            return [], f"node {key} has no result commit (it ran outside a git repository)"
        found.append((key, ws.shared_commit))
    return found, None


# -- git -------------------------------------------------------------------------------------


def ensure_run_branch(
    repo: Path | None, run: RunRecord, *, remote: str | None = None, push_retry_s: float = 0.0
) -> RunBranch:
    """Make sure ``grove/run/<id>`` holds the completed run's result; what it holds, or why
    there is none. Idempotent; never raises :class:`GitError` (a git failure is the problem).

    ``remote`` (``[git] remote``): the sinks' commits are fetched from it when missing, its
    branch is adopted when it already holds the result, and the branch is pushed to it
    (transient failures retried for ``push_retry_s``); a failed push is ``push_error``."""
    sinks, why_not = sink_commits(run)
    keys = tuple(key for key, _ in sinks)
    if why_not is not None:
        return RunBranch(problem=why_not)
    if repo is None:
        return RunBranch(problem="the grove is not in a git repository", sinks=keys)
    missing = _missing(repo, run, sinks, remote)
    if missing is not None:
        return RunBranch(problem=missing, sinks=keys)
    branch = run_branch_name(run.id)
    try:
        result = _result_commit(repo, run, sinks)
        if isinstance(result, RunBranch):
            return replace(result, sinks=keys)
        commit, tree, parents = result
        if remote is not None and commit is None:
            # Another machine may have made (and pushed) this merge: the same result, taken
            # as it is, so both machines' branches and the remote's agree.
            theirs = remotes.remote_tip(repo, remote, branch)
            if theirs is not None and _holds(repo, theirs, None, tree, parents):
                commit = theirs
        made = replace(_put_branch(repo, run, branch, commit, tree, parents), sinks=keys)
        if remote is None or made.commit is None:
            return made
        return _pushed(repo, run, made, remote, push_retry_s, (commit, tree, parents))
    except GitError as exc:
        return RunBranch(problem=f"git failed making {branch}: {exc}", sinks=keys)


def with_result(
    repo: Path | None, run: RunRecord, *, remote: str | None = None, push_retry_s: float = 0.0
) -> tuple[RunRecord, RunBranch]:
    """``run`` with ``result_branch`` / ``result_commit`` filled in by :func:`ensure_run_branch`
    (only for a completed run: any other has no result yet), and the branch itself."""
    made = ensure_run_branch(repo, run, remote=remote, push_retry_s=push_retry_s)
    return replace(run, result_branch=made.branch, result_commit=made.commit), made


def existing_results(repo: Path | None, runs: Sequence[RunRecord]) -> list[RunRecord]:
    """``runs`` with the result branches that exist now (one git call, nothing made)."""
    if repo is None:
        return list(runs)
    out = run_git(
        ["for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads/grove/run/"],
        repo,
    )
    tips = dict(line.split(" ", 1) for line in out.splitlines() if line)
    return [
        replace(r, result_branch=run_branch_name(r.id), result_commit=tips[run_branch_name(r.id)])
        if run_branch_name(r.id) in tips and r.status is RunStatus.COMPLETED
        else r
        for r in runs
    ]


def _missing(
    repo: Path, run: RunRecord, sinks: list[tuple[str, str]], remote: str | None
) -> str | None:
    """Why the sinks' commits cannot be used here, or ``None``. Without a remote, a sink that
    ran in another clone (sharing the database) has commits that are not here; with one, a
    commit missing here is fetched, and only one the remote lacks too is a problem."""
    if remote is None:
        elsewhere = _elsewhere(repo, run, tuple(key for key, _ in sinks))
        return None if elsewhere is None else f"its nodes ran in another repository, {elsewhere}"
    for key, commit in sinks:
        branch = _branch_of(run, key)
        if not remotes.fetch_commit(repo, remote, commit, branch):
            return (
                f"node {key}'s result {commit[:12]} is neither in {repo} nor on the remote "
                f"{remote}: push its branch {branch} from the machine that ran it"
            )
    return None


def _pushed(
    repo: Path, run: RunRecord, made: RunBranch, remote: str, retry_s: float, result: _Made
) -> RunBranch:
    """``made`` once its branch is pushed to ``remote``, or with ``push_error``. A rejection
    because another machine pushed the same merge first (its dates differ) is no error: the
    local branch moves to the remote's commit."""
    assert made.branch is not None and made.commit is not None
    try:
        remotes.push_branch(repo, remote, made.branch, retry_s=retry_s)
        return made
    except remotes.PushFailed as exc:
        commit, tree, parents = result
        theirs = remotes.remote_tip(repo, remote, made.branch) if exc.kind == "rejected" else None
        if theirs is not None and commit is None and _holds(repo, theirs, None, tree, parents):
            ref = f"refs/heads/{made.branch}"
            if not checked_out(repo, ref) and _grove_made(repo, made.commit, run):
                moved = git_run(["update-ref", ref, theirs, made.commit], repo)
                if moved.returncode == 0:
                    return replace(made, commit=theirs)
        log.warning("run %s: %s", run.id, exc)
        return replace(made, push_error=str(exc))


def _elsewhere(repo: Path, run: RunRecord, keys: tuple[str, ...]) -> str | None:
    """The repository a sink of ``run`` ran in, when that is not ``repo``; else ``None``."""
    here = repo.resolve()
    for node in run.nodes:
        ws = node.agent.workspace if node.agent else None
        if node.key in keys and ws and ws.repo_path and Path(ws.repo_path).resolve() != here:
            return ws.repo_path
    return None


_Made = tuple[str | None, str, tuple[str, ...]]
"""What the run's result is: a commit (``None``: a merge still to be made), its tree, and the
parents a merge has."""


def _result_commit(repo: Path, run: RunRecord, sinks: list[tuple[str, str]]) -> _Made | RunBranch:
    """The one result commit, or the tree and parents of the merge to make, or the conflict."""
    commits = list(dict.fromkeys(commit for _, commit in sinks))
    if len(commits) > 1:
        # A sink whose result is already in another's history adds nothing to the merge.
        independent = set(run_git(["merge-base", "--independent", *commits], repo).split())
        commits = [c for c in commits if c in independent]
    if len(commits) == 1:
        return commits[0], run_git(["rev-parse", f"{commits[0]}^{{tree}}"], repo), ()
    left = commits[0]
    tree = ""
    for i, right in enumerate(commits[1:], start=2):
        proc = git_run(
            ["merge-tree", "--write-tree", "--no-messages", "--name-only", "-z", left, right],
            repo,
        )
        fields = proc.stdout.split("\0")
        if proc.returncode == 1:
            paths = tuple(dict.fromkeys(f for f in fields[1:] if f))
            named = [key for key, commit in sinks if commit in commits]
            branches = [_branch_of(run, key) for key in named]
            return RunBranch(
                problem=f"the results of its sink nodes {', '.join(named)} conflict in: "
                f"{', '.join(paths) or '(unknown)'}; merge their branches yourself "
                f"({', '.join(branches)})",
                conflicts=paths,
            )
        if proc.returncode != 0:
            raise GitError(f"git merge-tree failed: {proc.stderr.strip()}")
        tree = fields[0]
        if i < len(commits):
            # merge-tree in git 2.39 merges commits only: carry the partial merge as one.
            left = _commit_tree(repo, tree, (left, right), f"grove: partial result of {run.id}")
    return None, tree, tuple(commits)


def _branch_of(run: RunRecord, key: str) -> str:
    agent = next(n.agent for n in run.nodes if n.key == key)
    ws = agent.workspace if agent else None
    return (ws.branch if ws else None) or key


def _commit_tree(repo: Path, tree: str, parents: tuple[str, ...], message: str) -> str:
    args = ["commit-tree", tree, "-m", message]
    for parent in parents:
        args += ["-p", parent]
    return run_git(args, repo, identity=IDENTITY)


def _merge_message(run: RunRecord, sinks: tuple[str, ...]) -> str:
    return (
        f"grove: result of workflow run {run.id} ({run.name})\n\n"
        f"Merges the results of its sink nodes {', '.join(sinks)}.\n\n"
        f"Grove-Run: {run.id}"
    )


def _put_branch(
    repo: Path, run: RunRecord, branch: str, commit: str | None, tree: str, parents: tuple[str, ...]
) -> RunBranch:
    ref = f"refs/heads/{branch}"
    tip = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False)
    if tip and _holds(repo, tip, commit, tree, parents):
        return RunBranch(branch=branch, commit=tip)
    if tip and not _grove_made(repo, tip, run):
        return RunBranch(
            problem=f"branch {branch} already exists and does not hold this run's result: "
            f"rename it (git branch -m {branch} NEW), then `grove workflow show {run.id}` "
            "makes it again"
        )
    if tip and checked_out(repo, ref):
        # Moving a checked-out branch would leave that checkout's files behind its HEAD.
        return RunBranch(
            problem=f"branch {branch} holds an earlier result and is checked out: switch to "
            f"another branch, then `grove workflow show {run.id}` moves it to this one"
        )
    if commit is None:
        commit = _commit_tree(repo, tree, parents, _merge_message(run, tuple(sink_keys(run))))
    # Created only where nothing is (or replaced only from the tip checked above): of two
    # processes making it at once, one wins and the other finds the winner's result.
    proc = git_run(["update-ref", ref, commit, tip or ""], repo)
    if proc.returncode != 0:
        tip = run_git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False)
        if tip and _holds(repo, tip, commit, tree, parents):
            return RunBranch(branch=branch, commit=tip)
        raise GitError(f"git update-ref {ref} failed: {proc.stderr.strip()}")
    log.info("run %s: result branch %s at %s", run.id, branch, commit[:12])
    return RunBranch(branch=branch, commit=commit)


def _holds(repo: Path, tip: str, commit: str | None, tree: str, parents: tuple[str, ...]) -> bool:
    """Whether ``tip`` is the run's result: that commit, or a merge of exactly those parents
    with that tree (one made by another process differs only in its dates)."""
    if commit is not None:
        return tip == commit
    shape = run_git(["show", "-s", "--format=%T %P", tip], repo).split()
    return shape[0] == tree and tuple(shape[1:]) == parents


def worktrees_on(repo: Path, ref: str) -> list[Path]:
    """The checkouts (the repository's own and its worktrees') that have branch ``ref``
    checked out, read from the main repository's records, never from a worktree."""
    found: list[Path] = []
    path: str | None = None
    for item in run_git(["worktree", "list", "--porcelain", "-z"], repo).split("\0"):
        if item.startswith("worktree "):
            path = item.removeprefix("worktree ")
        elif item == f"branch {ref}" and path is not None:
            found.append(Path(path))
    return found


def checked_out(repo: Path, ref: str) -> bool:
    """Whether ``ref`` is the checked-out branch of the repository or of any of its worktrees
    (read from the main repository's records, never from a worktree)."""
    return bool(worktrees_on(repo, ref))


def _grove_made(repo: Path, tip: str, run: RunRecord) -> bool:
    """Whether ``tip`` is a result grove made (for this run, before a rerun changed it): a
    commit of grove's identity that is this run's merge (``Grove-Run: <id>``) or an agent's
    result (``Grove-Agent``, whose own branch still holds it). Nobody's own work is either."""
    made = run_git(
        [
            "show",
            "-s",
            "--format=%ce%n%(trailers:key=Grove-Run,valueonly,separator=%x2C)"
            "%n%(trailers:key=Grove-Agent,valueonly,separator=%x2C)",
            tip,
        ],
        repo,
    ).split("\n")
    committer, run_trailer, agent_trailer = [*made, "", ""][:3]  # stdout comes stripped
    if committer != IDENTITY[1]:
        return False
    return run_trailer.strip() == run.id or bool(agent_trailer.strip())


# -- the worker's hook -----------------------------------------------------------------------


async def after_node_completed(
    store: Store,
    repo: Path | None,
    run_id: str,
    *,
    remote: str | None = None,
    push_retry_s: float = 0.0,
) -> None:
    """Called by the worker after a node of ``run_id`` completed (its transaction committed):
    when that completed the run, make its result branch (and, with ``remote``, push it). On a
    thread; any failure is logged as a warning and nothing else (the branch is made, and
    pushed, again wherever it is read); a failed push is also recorded as the run's event
    ``run.push_failed`` with git's words. Outside git there is nothing to make, and nothing
    to warn about."""
    if repo is None:
        return

    def make() -> None:
        if store.run_status(run_id) is not RunStatus.COMPLETED:
            return
        made = ensure_run_branch(
            repo, store.get_run(run_id), remote=remote, push_retry_s=push_retry_s
        )
        if made.branch is None:
            log.warning("run %s: no result branch: %s", run_id, made.problem)
        elif made.push_error is not None:
            data = {"branch": made.branch, "commit": made.commit, "error": made.push_error}
            store.append_event(None, "run.push_failed", data, run_id=run_id)

    try:
        await anyio.to_thread.run_sync(make)
    except Exception as exc:  # the agent's result is recorded; this must never undo it
        log.warning("run %s: making the result branch failed: %s", run_id, exc)


__all__ = [
    "RUN_BRANCH_PREFIX",
    "RunBranch",
    "after_node_completed",
    "checked_out",
    "ensure_run_branch",
    "existing_results",
    "run_branch_name",
    "run_id_of",
    "sink_commits",
    "sink_keys",
    "with_result",
    "worktrees_on",
]
