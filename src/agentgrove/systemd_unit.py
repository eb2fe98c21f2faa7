"""The systemd unit ``grove worker --print-systemd-unit`` prints: a pure function of the
options and the environment, no database and no file written.

Contracts of the unit it renders:

* ``WorkingDirectory`` is the repository root and ``ExecStart`` the absolute path of the grove
  executable with ``worker`` and the options given (``--roles``, ``--repo``, ``--concurrency``,
  ``--grace``), so the service runs what the operator ran.
* ``KillSignal=SIGTERM`` with ``KillMode=mixed``: ``systemctl stop`` signals the worker alone,
  which stops claiming and lets its agents finish (or returns them to pending) within its
  grace; the agents' own processes are left to it and killed only when ``TimeoutStopSec``
  (the grace plus :data:`STOP_MARGIN_S`) runs out.
* ``Restart=on-failure``: a worker that crashed comes back; one stopped cleanly does not.
* ``GROVE_DB_URL`` / ``GROVE_HOME`` are carried over when set (the database URL may hold a
  password: the unit file is a secret then); anything else secret (``ANTHROPIC_API_KEY``) goes in
  the optional :data:`ENV_FILE`.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_MARGIN_S = 30
"""Seconds past the worker's grace before systemd kills what is left: the worker needs a moment
to return agents to pending and close its connections after the grace runs out."""

ENV_FILE = "/etc/grove/worker.env"
"""Read if it exists (``KEY=value`` lines, mode 0600): where secrets the unit should not show go."""

_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def grove_executable() -> list[str]:
    """The command that runs this grove: the ``grove`` script this process was started as (made
    absolute), else ``grove`` on ``PATH``, else this Python with ``-m agentgrove``."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started is not None and started.name == "grove" and started.exists():
        return [str(started.resolve())]
    found = shutil.which("grove")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).resolve()), "-m", "agentgrove"]


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER in the environment and no passwd entry
        return str(os.getuid())


def quote(word: str, *, command: bool = True) -> str:
    """``word`` as one systemd argument: specifiers (``%``) escaped, and variable expansion
    (``$``) too in a ``command`` line (``ExecStart``; ``Environment`` expands none),
    double-quoted when it holds anything but plain path characters."""
    escaped = word.replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    if _BARE.fullmatch(word):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_unit(
    *,
    repo: Path,
    worker_args: Sequence[str],
    grace_s: float,
    env: Mapping[str, str] | None = None,
    executable: Sequence[str] | None = None,
    user: str | None = None,
) -> str:
    """The unit text for a worker on the clone at ``repo`` (absolute) run with ``worker_args``
    (what follows ``grove worker``). ``env`` (default: ``os.environ``) supplies GROVE_DB_URL,
    GROVE_HOME and PATH; ``executable`` and ``user`` default to this process's."""
    env = os.environ if env is None else env
    command = [*(executable or grove_executable()), "worker", *worker_args]
    lines = [
        "[Unit]",
        f"Description=agentgrove worker for {repo}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user or _user()}",
        # The whole value is the path (no quoting); only specifiers need escaping.
        "WorkingDirectory=" + str(repo).replace("%", "%%"),
    ]
    for name in ("GROVE_DB_URL", "GROVE_HOME", "PATH"):
        value = env.get(name)
        if value:
            if name == "GROVE_HOME":
                value = str(Path(value).resolve())
            lines.append(f"Environment={quote(f'{name}={value}', command=False)}")
    lines += [
        f"EnvironmentFile=-{ENV_FILE}",
        "ExecStart=" + " ".join(quote(word) for word in command),
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={math.ceil(grace_s) + STOP_MARGIN_S}",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
