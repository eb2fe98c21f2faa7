"""The processes an agent started, found and stopped through the process table.

Every CLI process grove starts carries ``GROVE_AGENT_ID=<agent id>`` and
``GROVE_AGENT_ATTEMPT=<attempt>`` in its environment, and so does everything it starts in turn
(Bash commands, servers an agent left running, their children), even after they re-parent to
init. Scanning ``/proc/*/environ`` for that marker finds the whole tree without relying on
process groups, which the CLI's own children may leave. The attempt keeps attempts apart: a
worker presumed dead that wakes up kills only its own attempt's processes, never those of the
attempt that replaced it. Linux only; elsewhere nothing is found.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

AGENT_ENV = "GROVE_AGENT_ID"
ATTEMPT_ENV = "GROVE_AGENT_ATTEMPT"
_PROC = Path("/proc")


def marker_env(agent_id: str, attempt: int) -> dict[str, str]:
    """The environment that marks the processes of one attempt of one agent."""
    return {AGENT_ENV: agent_id, ATTEMPT_ENV: str(attempt)}


def agent_processes(
    agent_id: str | None = None,
    *,
    attempt: int | None = None,
    before_attempt: int | None = None,
) -> dict[int, str]:
    """PIDs of processes carrying the marker -> their agent id: of ``agent_id`` (or any agent),
    of exactly ``attempt``, or of attempts before ``before_attempt`` (a process marked without
    an attempt counts as attempt 0)."""
    found: dict[int, str] = {}
    agent_key, attempt_key = f"{AGENT_ENV}=".encode(), f"{ATTEMPT_ENV}=".encode()
    needle = agent_key + (agent_id or "").encode()
    own = os.getpid()
    for entry in _PROC.iterdir() if _PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        # Most processes are no agent's (or not this one's): one substring search drops them
        # before the split, which cost ~7 ms a scan of a few hundred processes.
        if (needle if agent_id is not None else agent_key) not in environ:
            continue
        marked: str | None = None
        marked_attempt = 0
        for item in environ.split(b"\0"):
            if item.startswith(agent_key):
                marked = item[len(agent_key) :].decode(errors="replace")
            elif item.startswith(attempt_key):
                value = item[len(attempt_key) :]
                marked_attempt = int(value) if value.isdigit() else 0
        if marked is None or (agent_id is not None and marked != agent_id):
            continue
        if attempt is not None and marked_attempt != attempt:
            continue
        if before_attempt is not None and marked_attempt >= before_attempt:
            continue
        found[int(entry.name)] = marked
    return found


def kill_agent_processes(
    agent_id: str, *, attempt: int | None = None, before_attempt: int | None = None
) -> list[int]:
    """SIGKILL the processes of ``agent_id`` (of one attempt, or of the attempts before one, as
    :func:`agent_processes` selects them); the PIDs signalled."""
    killed = []
    for pid in agent_processes(agent_id, attempt=attempt, before_attempt=before_attempt):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


def kill_until_gone(agent_id: str, timeout_s: float = 2.0) -> None:
    """SIGKILL every process carrying ``agent_id``'s marker, again, until none is left (a
    killed process keeps its environment until it has really exited, and one forked between
    two scans is caught by the next) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while kill_agent_processes(agent_id) and time.monotonic() < deadline:
        time.sleep(0.005)  # the kernel tears the killed processes down; nothing to wait on


def available_memory_mb() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in MB (``None`` where it cannot be read)."""
    try:
        for line in (_PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
