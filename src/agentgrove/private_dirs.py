"""Per-user directories in a place every local user shares (the temporary directory): the
workers' wake-up sockets (:mod:`agentgrove.store._wake_socket`) and the agents' port locks
(:mod:`agentgrove.worktree_env`).

Such a directory is used only when it is a real directory (not a link), owned by us and closed
to group and others; grove makes it so (mode ``0700``) when it is missing. One that another
user made first, or that is open to others, is refused: another user could otherwise bind
sockets, see who listens, or hold lock files there. Neither location is read from
``$XDG_RUNTIME_DIR``: these are rendezvous points of every grove process of the user, and that
variable is missing (cron, ``su``, system services), different, or removed at logout in some of
them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path

__all__ = ["refusal", "warn_once"]

log = logging.getLogger(__name__)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def refusal(path: Path, *, create: bool) -> str | None:
    """``None`` when ``path`` is a private directory of ours (``create``: made ``0700`` first
    when missing); otherwise why it is not, naming it."""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != os.getuid():
        return f"{path} belongs to user {info.st_uid}, not to this user ({os.getuid()})"
    if info.st_mode & 0o077:
        return f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}, not 700)"
    return None


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process meets it."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)
