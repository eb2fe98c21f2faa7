"""The only place grove executes ``git``, always in the hardened mode.

Grove runs git over content an agent controls (its worktree, its branch), outside any sandbox,
as the worker's user. Git obeys configuration, and configuration can run programs: fsmonitor,
hooks, clean/smudge/process filters, textconv and external diff drivers, trailer commands,
credential helpers, ssh and proxy commands, pagers, editors. ``.gitattributes`` (which the agent
writes) only picks drivers that configuration defines, and submodules bring their own
configuration. So every call here:

* reads configuration only from grove (``-c`` below) and the main repository's own config:
  system and global files are off (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``),
  and the worker's ``GIT_*`` variables (``GIT_DIR``, ``GIT_CONFIG_COUNT``, ``GIT_EXTERNAL_DIFF``,
  ...) are dropped with the rest of its environment;
* never lets git discover a repository inside a worktree: worktree commands name the git
  directory grove registered for it (:func:`worktree_args`), since the worktree's ``.git`` file
  lies in the agent's worktree and the agent can point it at a git directory of its own;
* switches off what could still run: fsmonitor, hooks (``core.hooksPath=/dev/null``, and
  ``--no-verify``), the untracked cache, submodule recursion, signing, transports
  (``protocol.allow=never``), prompts, pagers and editors, automatic gc and maintenance.
  Diff commands also pass ``--no-ext-diff --no-textconv`` (see :data:`DIFF_SAFE`).

Reading the user's identity for a merge commit is the one call that reads their global config
(:func:`user_identity`), and it runs ``git config --get``, which executes nothing.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agentgrove.errors import GroveError


class GitError(GroveError):
    """A git command failed; the message carries git's own words."""


@dataclass(frozen=True)
class Worktree:
    """A worktree named explicitly: its git directory (from the main repository's side) and
    its work tree. Commands given one never discover a repository from the files."""

    git_dir: Path
    work_tree: Path


_HARDENED = {
    "core.fsmonitor": "false",
    "core.hooksPath": "/dev/null",
    "core.untrackedCache": "false",
    "core.attributesFile": "/dev/null",
    "core.pager": "cat",
    "core.editor": "true",
    "core.sshCommand": "false",
    "credential.helper": "",
    "protocol.allow": "never",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
    "diff.ignoreSubmodules": "all",
    "status.submoduleSummary": "false",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "gc.auto": "0",
    "maintenance.auto": "false",
    "safe.bareRepository": "explicit",
}
CONFIG = [arg for key, value in _HARDENED.items() for arg in ("-c", f"{key}={value}")]
"""The ``-c`` overrides every grove git call starts with."""

_TRANSPORT_KEYS = ("core.sshCommand", "credential.helper", "protocol.allow")
REMOTE_CONFIG = [
    *(arg for k, v in _HARDENED.items() if k not in _TRANSPORT_KEYS for arg in ("-c", f"{k}={v}")),
    *("-c", "protocol.allow=never"),
    *(arg for p in ("file", "ssh", "https", "git") for arg in ("-c", f"protocol.{p}.allow=always")),
]
"""The overrides of a call that talks to a remote (:mod:`agentgrove.remotes`): the same, except
that the file, ssh, https and git transports are allowed and ssh and credentials are left to the
user's own configuration (hooks, including ``pre-push``, stay off)."""

DIFF_SAFE = ["--no-ext-diff", "--no-textconv", "--ignore-submodules=all"]
"""Options for every ``git diff`` grove runs."""

IDENTITY = ("agentgrove", "agents@agentgrove.invalid")

_KEPT_ENV = ("PATH", "HOME", "TMPDIR", "SYSTEMROOT")


def environment(*, user_config: bool = False) -> dict[str, str]:
    """The environment of a grove git process: only what git needs, nothing of the worker's
    secrets, no ``GIT_*`` of the worker."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(
        LC_ALL="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_ATTR_NOSYSTEM="1",
        GIT_PAGER="cat",
        GIT_EDITOR="true",
    )
    if not user_config:
        env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    return env


def run(
    args: list[str],
    cwd: Path,
    *,
    tree: Worktree | None = None,
    identity: tuple[str, str] | None = None,
    user_config: bool = False,
    remote: bool = False,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run git once, hardened; the finished process (any exit code).

    ``tree``: name the repository instead of letting git discover it from ``cwd`` (required
    for anything run in an agent's worktree). ``remote``: a call that talks to a remote
    (:data:`REMOTE_CONFIG`, the user's configuration read); run it in the main repository only.
    ``timeout_s``: raises :class:`subprocess.TimeoutExpired` past it."""
    command = ["git", "--no-pager", *(REMOTE_CONFIG if remote else CONFIG)]
    if identity is not None:
        command += ["-c", f"user.name={identity[0]}", "-c", f"user.email={identity[1]}"]
    if tree is not None:
        command += [f"--git-dir={tree.git_dir}", f"--work-tree={tree.work_tree}"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=environment(user_config=user_config or remote),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )


def run_git(
    args: list[str],
    cwd: Path,
    *,
    check: bool = True,
    tree: Worktree | None = None,
    identity: tuple[str, str] | None = None,
) -> str:
    """Run git once, hardened; its stdout, stripped. Raises :class:`GitError` with stderr when
    ``check`` and git failed."""
    proc = run(args, cwd, tree=tree, identity=identity)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


@functools.lru_cache(maxsize=64)
def common_dir(repo: Path) -> Path:
    """The main repository's git directory (shared by all its worktrees; cached, it does
    not move while grove runs)."""
    out = run_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo)
    return Path(out)


def registered_worktree(repo: Path, path: Path) -> Path | None:
    """The administrative directory git keeps (in the main repository, out of the agent's
    reach) for the worktree at ``path``; ``None`` when no worktree is registered there.

    Found from the main repository's side (each entry's ``gitdir`` names its worktree), never
    from the worktree's own ``.git`` file."""
    admin = common_dir(repo) / "worktrees"
    if not admin.is_dir():
        return None
    target = (path / ".git").resolve()

    def names_target(entry: Path) -> bool:
        try:
            named = Path((entry / "gitdir").read_text().strip())
        except OSError:
            return False
        return named.resolve() == target and (entry / "HEAD").is_file()

    # Git names the entry after the worktree's directory (adding a number on a clash): try
    # that first, so a repository with many worktrees is not scanned on every call.
    if names_target(admin / path.name):
        return admin / path.name
    for entry in sorted(admin.iterdir()):
        if names_target(entry):
            return entry
    return None


def worktree(repo: Path, path: Path) -> Worktree:
    """The worktree ``path`` of ``repo``, named explicitly. Raises :class:`GitError` when git
    has no worktree registered there."""
    admin = registered_worktree(repo, path)
    if admin is None:
        raise GitError(f"{path} is not a worktree of {repo} (was it removed?)")
    return Worktree(git_dir=admin, work_tree=path)


def user_identity(repo: Path) -> tuple[str, str] | None:
    """The user's ``user.name``/``user.email`` as their own git would see it (global config
    included), or ``None`` when either is unset."""
    name, email = (
        run(["config", "--get", key], repo, user_config=True).stdout.strip()
        for key in ("user.name", "user.email")
    )
    return (name, email) if name and email else None


def nested_repositories(root: Path) -> list[str]:
    """Directories under ``root`` that hold a ``.git`` of their own (a directory, a file or a
    link): repositories an agent nested in its worktree. Relative paths, sorted; the walk does
    not enter them or follow links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root and (".git" in dirnames or ".git" in filenames):
            found.append(str(here.relative_to(root)))
            dirnames.clear()
            continue
        dirnames[:] = [d for d in dirnames if d != ".git"]
    return sorted(found)


__all__ = [
    "CONFIG",
    "DIFF_SAFE",
    "IDENTITY",
    "REMOTE_CONFIG",
    "GitError",
    "Worktree",
    "common_dir",
    "environment",
    "nested_repositories",
    "registered_worktree",
    "run",
    "run_git",
    "user_identity",
    "worktree",
]
