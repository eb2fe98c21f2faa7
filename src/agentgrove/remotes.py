"""A shared git remote (``[git] remote``): how agents' work travels between machines.

Every machine's worker runs agents in its own clone; what one machine committed reaches another
only through the remote. Grove pushes an agent's branch (``grove/<agent-id>``) after its commits,
so a completed agent's head is always on the remote before dependents start, and fetches a
commit it lacks (a base, a dependency's head, a child's head) before using it. Fetched branches
land under ``refs/remotes/grove-remote/`` — never in the user's branches — and only ``grove/``
branches are ever pushed, never with ``--force``: the user's own branches are never pushed.

Git runs through :mod:`agentgrove.gitexec` with the transports allowed
(:data:`agentgrove.gitexec.REMOTE_CONFIG`), always in the main repository, never in an agent's
worktree.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Literal

from agentgrove.errors import BadInput, GroveError
from agentgrove.gitexec import run

log = logging.getLogger(__name__)

TRACKING = "refs/remotes/grove-remote/"
"""Where branches fetched from the remote are kept (never the user's ``refs/heads``)."""
PUSHABLE = "grove/"
"""The only branches grove pushes: its own (agents', runs', the merge queue's)."""
REACH_TIMEOUT_S = 20.0
FETCH_TIMEOUT_S = 120.0
PUSH_TIMEOUT_S = 120.0


class PushFailed(GroveError):
    """A push failed; ``kind`` says whether trying again could help."""

    def __init__(self, message: str, kind: Literal["transient", "rejected"]) -> None:
        super().__init__(message)
        self.kind = kind


def _looks_like_url(remote: str) -> bool:
    """A URL (``scheme://``), an scp-like ``host:path``, or a path (absolute, relative, ``~``)."""
    if "://" in remote or remote.startswith(("/", "./", "../", "~")):
        return True
    return bool(re.match(r"^[^/:]+@?[^/:]*:", remote)) and not remote.endswith(":")


def resolve_remote(repo: Path, remote: str) -> str:
    """Validate ``[git] remote`` at start-up and return it: the name of a remote ``repo`` has,
    or a URL/path. Raises :class:`BadInput` (one line) when it is neither, or when the remote
    does not answer ``git ls-remote`` within :data:`REACH_TIMEOUT_S`."""
    if not remote.strip() or remote.startswith("-"):
        raise BadInput(f"[git] remote {remote!r} is not a remote name or URL: fix grove.toml")
    names = run(["remote"], repo).stdout.split()
    if remote not in names and not _looks_like_url(remote):
        raise BadInput(
            f"[git] remote {remote!r} names no remote of {repo}: add it "
            f"(git remote add {remote} URL) or give a URL"
        )
    try:
        proc = run(["ls-remote", "--heads", remote], repo, remote=True, timeout_s=REACH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BadInput(
            f"[git] remote {remote!r} did not answer within {REACH_TIMEOUT_S:g} s: "
            "check the URL and the network"
        ) from None
    if proc.returncode != 0:
        words = " ".join(proc.stderr.split())[:300]
        raise BadInput(f"[git] remote {remote!r} is unreachable: {words}")
    return remote


def has_commit(repo: Path, commit: str) -> bool:
    """``commit`` names a commit ``repo`` has."""
    return run(["cat-file", "-e", f"{commit}^{{commit}}"], repo).returncode == 0


def _fetch(repo: Path, remote: str, refspec: str) -> subprocess.CompletedProcess[str]:
    """One ``git fetch`` of ``refspec`` from ``remote`` (no tags, no FETCH_HEAD), bounded by
    :data:`FETCH_TIMEOUT_S`; the caller reads its return code."""
    return run(
        ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote, refspec],
        repo,
        remote=True,
        timeout_s=FETCH_TIMEOUT_S,
    )


def fetch_commit(repo: Path, remote: str, commit: str, branch_hint: str | None = None) -> bool:
    """Make ``commit`` present in ``repo``; whether it now is. Fetches (no ``--force`` needed:
    tracking refs only) the remote's ``grove/`` branches, then ``branch_hint``, then all its
    branches, into :data:`TRACKING`, stopping once the commit is there. A fetch failing is
    logged, not raised: the caller reports the commit missing."""
    if has_commit(repo, commit):
        return True
    specs = [f"+refs/heads/{PUSHABLE}*:{TRACKING}{PUSHABLE}*"]
    if branch_hint:
        specs.append(f"+refs/heads/{branch_hint}:{TRACKING}{branch_hint}")
    specs.append(f"+refs/heads/*:{TRACKING}*")
    for spec in specs:
        proc = _fetch(repo, remote, spec)
        if proc.returncode != 0:
            log.warning("git fetch %s %s failed: %s", remote, spec, proc.stderr.strip())
        if has_commit(repo, commit):
            return True
    return False


def fetch_all(repo: Path, remote: str) -> bool:
    """Fetch every branch of the remote into :data:`TRACKING` (one ``git fetch``); whether it
    succeeded. A failure is logged, not raised."""
    proc = _fetch(repo, remote, f"+refs/heads/*:{TRACKING}*")
    if proc.returncode != 0:
        log.warning("git fetch %s failed: %s", remote, proc.stderr.strip())
    return proc.returncode == 0


def remote_tip(repo: Path, remote: str, branch: str) -> str | None:
    """Fetch ``branch`` from the remote into :data:`TRACKING`; its tip there, or ``None`` when
    the remote has no such branch (or cannot be reached)."""
    proc = _fetch(repo, remote, f"+refs/heads/{branch}:{TRACKING}{branch}")
    if proc.returncode != 0:
        return None
    tip = run(["rev-parse", "-q", "--verify", f"{TRACKING}{branch}^{{commit}}"], repo)
    return tip.stdout.strip() or None


BranchSource = Literal["local", "tracking"]


def branch_source(
    local_tip: str | None, local_holds_head: bool, tracking_tip: str | None
) -> BranchSource | None:
    """Where to read an agent's branch from in this clone: its own ``refs/heads`` branch when
    that holds the recorded head (the agent ran here), else the remote's copy fetched into
    :data:`TRACKING` (it ran on another machine), else whichever exists; ``None``: neither.
    ``tracking_tip`` is only looked up (a fetch) when the local branch does not hold the head."""
    if local_tip and local_holds_head:
        return "local"
    if tracking_tip:
        return "tracking"
    return "local" if local_tip else None


_REJECTED = ("non-fast-forward", "[rejected]", "rejected", "denied", "fetch first", "stale info")
_TRANSIENT = (
    "could not read from remote",
    "does not appear to be a git repository",
    "connection",
    "timed out",
    "timeout",
    "unable to access",
    "could not resolve host",
    "lock",
    "temporarily",
    "early eof",
    "the remote end hung up",
)


def push_failure_kind(stderr: str) -> Literal["transient", "rejected"]:
    """Classify a failed push from git's words: ``rejected`` (the remote refused it: not a
    fast-forward, permission denied; trying again cannot help) or ``transient`` (it could not be
    reached, a lock was held; anything unrecognised counts as transient, retried within the
    deadline)."""
    words = stderr.lower()
    if any(t in words for t in ("lock", "unable to lock")) and "denied" not in words:
        return "transient"
    if any(r in words for r in _REJECTED):
        return "rejected"
    return "transient"


def push_branch(
    repo: Path,
    remote: str,
    branch: str,
    *,
    retry_s: float,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
) -> str:
    """Push ``refs/heads/<branch>`` to the same name on the remote (never forced); the commit
    pushed. Only ``grove/`` branches: anything else raises :class:`BadInput` and nothing is
    pushed. A transient failure is retried with exponential backoff until ``retry_s`` has
    passed, then raises :class:`PushFailed` (``transient``); a rejection raises it at once
    (``rejected``) with git's message."""
    if not branch.startswith(PUSHABLE) or ".." in branch or branch.startswith("-"):
        raise BadInput(f"grove pushes only its own grove/ branches, not {branch!r}")
    head = run(["rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"], repo)
    if head.returncode != 0:
        raise GroveError(f"branch {branch} does not exist in {repo}: nothing to push")
    commit = head.stdout.strip()
    deadline = time.monotonic() + retry_s
    delay = backoff_s
    while True:
        try:
            proc = run(
                ["push", "--quiet", "--no-verify", remote, f"{commit}:refs/heads/{branch}"],
                repo,
                remote=True,
                timeout_s=PUSH_TIMEOUT_S,
            )
            words = " ".join(proc.stderr.split())
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            ok, words = False, f"git push timed out after {PUSH_TIMEOUT_S:g} s"
        if ok:
            return commit
        kind = push_failure_kind(words)
        if kind == "rejected":
            raise PushFailed(f"git push {branch} to {remote} rejected: {words}", "rejected")
        left = deadline - time.monotonic()
        if left <= 0:
            raise PushFailed(
                f"git push {branch} to {remote} failed for {retry_s:g} s: {words}", "transient"
            )
        log.warning("git push %s to %s failed (retrying): %s", branch, remote, words)
        time.sleep(min(delay, left))  # a backoff between attempts, not a wait for a test
        delay = min(delay * 2, max_backoff_s)


__all__ = [
    "PUSHABLE",
    "TRACKING",
    "BranchSource",
    "PushFailed",
    "branch_source",
    "fetch_all",
    "fetch_commit",
    "has_commit",
    "push_branch",
    "push_failure_kind",
    "remote_tip",
    "resolve_remote",
]
