"""A worktree's environment: ignored files copied in, a setup command, a block of TCP ports.

``[workspace]`` in grove.toml (:class:`~agentgrove.settings.WorkspaceSettings`) prepares each
agent's worktree before the agent starts:

- ``copy``: git-ignored files (``.env``, a local certificate) copied from the main checkout.
  A path must be relative and stay inside the repository (:func:`copy_path_problem`, refused
  when the config is read); at copy time a source that resolves (through a symlink) outside
  the repository, or a destination folder that resolves outside the worktree, is skipped with
  a warning, never followed. A missing source is a warning. Copying is idempotent: a file the
  worktree already has is left alone (a retry reusing the worktree keeps the agent's edits).
  The mode is preserved.
- ``setup``: a shell command run in the worktree, confined like a check
  (:func:`agentgrove.checks.run_check`). It runs once per worktree: a marker in grove's home
  (``setup-done/<agent id>``, never in the worktree) records success, so a retry that reuses
  the worktree does not run it again; a failed setup leaves no marker.
- ports: :func:`hold_ports` takes an exclusive ``flock`` on one lock file per block in a
  host-wide folder, so no two running agents on the host (of any grove, same user) hold the
  same block; the block is held until the context exits (the attempt's end).

Every agent's CLI, setup and check get :func:`agent_env`: ``GROVE_AGENT_ID``,
``GROVE_PORT_BASE`` and ``GROVE_PORT_COUNT``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentgrove.private_dirs import refusal, warn_once

log = logging.getLogger(__name__)

MAX_PORT = 65535


def copy_path_problem(path: str) -> str | None:
    """Why ``path`` (a ``[workspace] copy`` entry) is refused, or ``None``: it must be a
    non-empty relative path with no ``..`` component. Pure."""
    if not path.strip():
        return "an empty path"
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        return f"{path!r} is absolute: list paths relative to the repository root"
    if ".." in pure.parts:
        return f"{path!r} leaves the repository ('..'): list files inside it"
    if pure.parts and pure.parts[0] == ".git":
        return f"{path!r} is inside .git: list working-tree files"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def copy_files(root: Path, worktree: Path, paths: list[str]) -> list[str]:
    """Copy each of ``paths`` from ``root`` (the main checkout) into ``worktree`` where the
    worktree does not have it yet; the warnings (skipped or missing files), one per path.
    Never reads a file outside ``root`` nor writes outside ``worktree``."""
    warnings: list[str] = []
    real_root, real_tree = root.resolve(), worktree.resolve()
    for entry in paths:
        problem = copy_path_problem(entry)
        if problem is not None:
            warnings.append(f"[workspace] copy: skipped {problem}")
            continue
        source = root / entry
        if not source.exists() and not source.is_symlink():
            warnings.append(f"[workspace] copy: {entry} does not exist in {root}: not copied")
            continue
        real_source = source.resolve()
        if not _inside(real_source, real_root):
            warnings.append(f"[workspace] copy: {entry} resolves outside the repository: skipped")
            continue
        if not real_source.is_file():
            warnings.append(f"[workspace] copy: {entry} is not a regular file: skipped")
            continue
        target = worktree / entry
        if not _inside(target.parent.resolve(), real_tree):
            warnings.append(f"[workspace] copy: {entry}'s folder leaves the worktree: skipped")
            continue
        if target.exists() or target.is_symlink():
            continue  # already there (a retry): the agent's copy is kept
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _inside(target.parent.resolve(), real_tree):  # raced by a symlink
            warnings.append(f"[workspace] copy: {entry}'s folder leaves the worktree: skipped")
            continue
        # O_EXCL|O_NOFOLLOW: never writes through a symlink planted at the target.
        mode = stat.S_IMODE(real_source.stat().st_mode)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out, real_source.open("rb") as src:
            shutil.copyfileobj(src, out)
            os.fchmod(out.fileno(), mode)
    return warnings


def setup_marker(home: Path, agent_id: str) -> Path:
    """Where grove records that ``agent_id``'s worktree was set up (in grove's home)."""
    return home / "setup-done" / agent_id


def mark_setup_done(home: Path, agent_id: str) -> None:
    marker = setup_marker(home, agent_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok\n")


@dataclass(frozen=True)
class PortBlock:
    """``count`` TCP ports from ``base`` held by this process while its lock is held."""

    base: int
    count: int


def agent_env(agent_id: str, block: PortBlock | None) -> dict[str, str]:
    """The variables every command of an agent gets (its CLI, setup, check). Pure."""
    env = {"GROVE_AGENT_ID": agent_id}
    if block is not None:
        env["GROVE_PORT_BASE"] = str(block.base)
        env["GROVE_PORT_COUNT"] = str(block.count)
    return env


_HELD_HERE: set[tuple[str, int, int]] = set()
"""The blocks ``(folder, base, count)`` this process holds now (see :func:`hold_ports`)."""


class NoFreePorts(RuntimeError):
    """Every block of the range is held by another agent on this host (or bound)."""


def ports_dir() -> Path:
    """The host-wide folder of port locks of this user, ``/tmp/agentgrove-ports-<uid>``, made
    private; :class:`NoFreePorts` if it is not ours or open to others (see
    :mod:`agentgrove.private_dirs`: not under ``$XDG_RUNTIME_DIR``, which not every process
    of the user has, or has alike: two folders would hand two agents one block)."""
    folder = Path("/tmp") / f"agentgrove-ports-{os.getuid()}"
    problem = refusal(folder, create=True)
    if problem is not None:
        warn_once(f"no port blocks for agents: {problem}")
        raise NoFreePorts(f"{problem}: remove it and retry")
    return folder


def _bindable(base: int, count: int) -> bool:
    """Whether every port of the block can be bound on loopback now (nobody listens)."""
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@contextlib.contextmanager
def hold_ports(
    count: int, start: int, *, folder: Path | None = None, bind_test: bool = True
) -> Iterator[PortBlock]:
    """Hold the first block of ``count`` ports from ``start`` (blocks at ``start + i*count``)
    whose lock no other process holds and (``bind_test``) whose ports are free, until the
    context exits. Raises :class:`NoFreePorts` when the range up to 65535 is used up."""
    folder = folder or ports_dir()
    where = str(folder)
    base = start
    while base + count - 1 <= MAX_PORT:
        if (where, base, count) in _HELD_HERE:
            # Ours already: no lock file to open nor ports to bind for it (a worker running
            # 64 agents would otherwise try 64 held blocks before each free one).
            base += count
            continue
        fd = os.open(folder / f"block-{base}-{count}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            base += count
            continue
        if bind_test and not _bindable(base, count):
            os.close(fd)
            base += count
            continue
        _HELD_HERE.add((where, base, count))
        try:
            yield PortBlock(base, count)
        finally:
            _HELD_HERE.discard((where, base, count))
            os.close(fd)  # closing the only descriptor releases the lock
        return
    raise NoFreePorts(f"no free block of {count} ports from {start}: too many agents running")
