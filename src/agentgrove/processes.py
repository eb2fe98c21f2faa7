"""The processes an agent started, found and stopped through the process table.

Every CLI process grove starts carries ``GROVE_AGENT_ID=<agent id>`` in its environment, and so
does everything it starts in turn (Bash commands, servers an agent left running, their
children), even after they re-parent to init. Scanning ``/proc/*/environ`` for that marker finds
the whole tree without relying on process groups, which the CLI's own children may leave.
Linux only; elsewhere nothing is found.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

AGENT_ENV = "GROVE_AGENT_ID"
_PROC = Path("/proc")


def agent_processes(agent_id: str | None = None) -> dict[int, str]:
    """PIDs of processes carrying the marker (of ``agent_id``, or of any agent) -> agent id."""
    found: dict[int, str] = {}
    prefix = f"{AGENT_ENV}=".encode()
    own = os.getpid()
    for entry in _PROC.iterdir() if _PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                marked = item[len(prefix) :].decode(errors="replace")
                if agent_id is None or marked == agent_id:
                    found[int(entry.name)] = marked
                break
    return found


def kill_agent_processes(agent_id: str) -> list[int]:
    """SIGKILL every process of ``agent_id``; the PIDs signalled."""
    killed = []
    for pid in agent_processes(agent_id):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


def available_memory_mb() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in MB (``None`` where it cannot be read)."""
    try:
        for line in (_PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
