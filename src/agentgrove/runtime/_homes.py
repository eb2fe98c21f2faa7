"""Folders of the worker's user that an agent's sandboxed Bash may not read: the user's home
(but the toolchains and the CLI's own shell snapshot) and the parent of every ``grove demo``
repository (one per user, mode 0700)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

TOOLCHAINS = (
    ".local/bin",
    ".local/lib",
    ".local/share/uv",
    ".cargo/bin",
    ".rustup",
    ".nvm",
    ".pyenv",
    ".volta",
    ".bun",
    ".deno",
    ".asdf",
    "go/bin",
    ".claude/shell-snapshots",
)
"""Under ``$HOME``, what an agent's Bash may still read: interpreters and tools installed per
user, and the shell snapshot the CLI sources before every command."""


def demo_parent() -> Path:
    """``$TMPDIR/agentgrove-demo-<uid>``, created 0700: where ``grove demo`` puts its
    temporary repositories, so that another grove's agents (which may not read it) and other
    users cannot. Raises :class:`OSError` when it exists and is not a private folder of ours."""
    path = Path(tempfile.gettempdir()) / f"agentgrove-demo-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{path} is not a folder of this user's: remove it and run again")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_homes(worktree: Path, git_dir: Path | None) -> tuple[list[str], list[str]]:
    """``(deny, allow)`` read lists for the sandbox: ``$HOME``, the demo parent and the workers'
    wake-up sockets denied;
    the toolchains under ``$HOME``, the worktree and the main git directory readable again
    (they may lie under ``$HOME``)."""
    deny: list[str] = []
    allow: list[str] = []
    home = Path(os.path.expanduser("~")).resolve()
    if home != Path("/") and home.is_dir():
        deny.append(str(home))
        allow += [str(home / p) for p in TOOLCHAINS if (home / p).exists()]
    demo = Path(tempfile.gettempdir()) / f"agentgrove-demo-{os.getuid()}"
    if demo.is_dir():
        deny.append(str(demo.resolve()))
    wake = Path(tempfile.gettempdir()) / f"grove-wake-{os.getuid()}"
    if wake.is_dir():  # the workers' wake-up sockets (store/_wake_socket.py): not an agent's
        deny.append(str(wake.resolve()))
    allow.append(str(worktree))
    if git_dir is not None:
        allow.append(str(git_dir.resolve()))
    return deny, allow
