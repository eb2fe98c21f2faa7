"""Wake-ups across processes on SQLite: a Unix datagram socket per listening worker.

SQLite has no NOTIFY, so each long-lived worker binds a datagram socket in a directory of the
database's own (:func:`wake_dir`), and a transaction that may make work claimable sends one
byte to every socket there once it has committed (:func:`poke`). A worker that gets one
claims at once instead of at its next poll; polling stays the fallback, so a lost datagram
(a full buffer, a worker between two binds) costs at most one poll interval.

The directory lives under the system's temporary directory, named after the database file
(a socket's path must stay under 108 bytes, and a repository's may not): ``/tmp/grove-wake-
<uid>/<hash>``, made ``0700`` by its owner. One owned by someone else, or open to others, is
not used (a local user could otherwise read who listens or bind sockets of their own there):
a warning names it, and workers poll (see :mod:`agentgrove.private_dirs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from agentgrove.private_dirs import refusal, warn_once

__all__ = ["listen_for_pokes", "poke", "wake_dir"]

_CHECK_STOP_S = 0.5
_MIN_GAP_S = 0.005
"""Least time between two wake-ups: pokes that come meanwhile are one more wake-up."""


def _drain(receiver: socket.socket) -> None:
    receiver.setblocking(False)
    try:
        while True:
            receiver.recv(64)
    except OSError:  # BlockingIOError: nothing more queued
        pass
    finally:
        receiver.settimeout(_CHECK_STOP_S)


def wake_dir(database: str) -> Path:
    """Where the sockets of the workers of the SQLite file ``database`` are."""
    digest = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"grove-wake-{os.getuid()}" / digest


def _private(directory: Path, create: bool) -> bool:
    """Whether ``directory`` (and its parent) are ours and closed to others; ``create``: make
    them first when missing, and say once why not (the listener's side: pokes stay silent)."""
    for path in (directory.parent, directory):
        problem = refusal(path, create=create)
        if problem is not None:
            if create:
                warn_once(f"wake-up sockets not used: {problem}; workers poll instead")
            return False
    return True


def poke(directory: Path) -> None:
    """Send a wake-up to every worker listening in ``directory``; never raises, never
    blocks. A socket nobody is bound to any more (its worker was killed) is removed."""
    try:
        if not _private(directory, create=False):
            return
        names = os.listdir(directory)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # EMFILE, a seccomp filter
    except OSError:
        return
    with sender:
        sender.setblocking(False)
        for name in names:
            if not name.endswith(".sock"):
                continue
            path = directory / name
            try:
                sender.sendto(b"w", str(path))
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):
                    path.unlink()  # left by a worker that died
            except OSError:
                continue  # a full buffer, a socket just gone: polling covers a lost hint


def listen_for_pokes(directory: Path, on_work: Callable[[], None], stop: threading.Event) -> None:
    """Block, calling ``on_work`` for each wake-up, until ``stop`` is set (checked every half
    second). Returns at once when the directory cannot be made private (workers poll)."""
    if not _private(directory, create=True):
        return
    path = directory / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        try:
            receiver.bind(str(path))
        except OSError:
            return
        try:
            receiver.settimeout(_CHECK_STOP_S)
            while not stop.is_set():
                try:
                    receiver.recv(64)
                except TimeoutError:
                    continue
                _drain(receiver)  # a burst of pokes is one wake-up
                on_work()
                stop.wait(_MIN_GAP_S)  # a flood of pokes cannot spin the claim loop
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
