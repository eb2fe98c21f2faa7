"""A check: a shell command grove runs in an agent's worktree after the agent ends; exit 0 passes.

The command is the project's (``--check``, a node's ``check:``, a role's ``check``) but it runs
over the agent's files, so it runs like the agent's Bash (THREATS.md 3): inside bubblewrap with
only the worktree and a private ``/tmp`` writable, everything else read-only, ``$HOME`` (but
its toolchains), the grove home (the database, other worktrees) and ``grove demo``'s folder
hidden, ``/run``'s sockets hidden, its own pid, network and IPC namespaces, and the allow-listed
environment without the model's key. With ``[runtime] sandbox = "off"`` the user opted out and
it runs unconfined.

Nothing it starts outlives it: bubblewrap runs in a session of its own with
``--die-with-parent``; at the end (exit or timeout) grove kills that whole process group and
every process carrying the check's marker (one that called ``setsid``, unconfined), and in the
sandbox the pid namespace dies with its first process.

:func:`run_check` is synchronous (callers run it on a thread) and never raises for the
command's sake: a command that cannot start is a :class:`CheckRun` with ``error`` set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agentgrove.processes import kill_until_gone, marker_env
from agentgrove.runtime._environment import DEFAULT_ALLOW, allowed
from agentgrove.runtime._homes import private_homes
from agentgrove.runtime._policy import SandboxMode

log = logging.getLogger(__name__)

TAIL_LINES = 200
TAIL_BYTES = 20_000
"""What is kept of a check's output: its last 200 lines, at most 20 kB of them."""

NOT_FOUND_EXIT = 127
"""What ``sh`` exits with when the command is not found."""

SANDBOX_MISSING = (
    "the check runs only in the bubblewrap sandbox and bwrap is not installed: apt-get install "
    'bubblewrap (or, to run checks unconfined, set [runtime] sandbox = "off" in grove.toml)'
)

SANDBOX_FAILED = (
    "the check's sandbox could not start ({detail}): make bubblewrap work here (user "
    'namespaces), or set [runtime] sandbox = "off" in grove.toml to run checks unconfined'
)

_MODEL_KEYS = ("ANTHROPIC_*", "CLAUDE_*")
"""On the CLI's allow-list but not a check's: a check has no use for the model's key, and its
output is stored."""

_PROXIES: tuple[str, ...] = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
_PROXIES += tuple(name.lower() for name in _PROXIES)
"""Not a confined check's either: it has no network to use a proxy on, and a proxy URL may
carry a password."""

_SHELL = "/bin/sh"
_KEEP_RAW = 4 * TAIL_BYTES
"""Bytes of output held while the check runs (the tail is cut from them at the end)."""
_DRAIN_S = 5.0
"""How long the output is read after every process of the check was killed."""
_MARK_PREFIX = "check-"
_CANCEL_POLL_S = 0.05
"""How often a running check looks at its ``cancel`` event."""


@dataclass(frozen=True)
class CheckRun:
    """One run of a check. ``passed``: it exited 0. ``exit_code``: ``None`` when it could not
    start or was killed at its timeout. ``output_tail``: stdout and stderr interleaved, last
    :data:`TAIL_LINES` lines / :data:`TAIL_BYTES` bytes (attacker-controlled text: render it
    escaped). ``error``: why the command could not run at all (not found, no sandbox), else
    ``None``; a failing or timed-out command is not an error. ``timed_out``: killed at its
    timeout."""

    passed: bool
    exit_code: int | None
    duration_ms: int
    output_tail: str
    error: str | None
    timed_out: bool = False


def output_tail(data: bytes, *, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``lines`` lines of ``data`` (decoded as UTF-8, bad bytes replaced), cut to at
    most ``max_bytes`` bytes from the end, never in the middle of a character; a NUL becomes
    U+FFFD like a bad byte (PostgreSQL stores no NUL in text, and the tail is stored). Pure."""
    text = data.decode("utf-8", errors="replace").replace("\0", "\ufffd")
    kept = text.splitlines(keepends=True)[-lines:] if lines > 0 else []
    tail = "".join(kept).encode("utf-8")
    if len(tail) > max_bytes:
        tail = tail[-max_bytes:]
        # Drop a partial character left at the cut.
        while tail and (tail[0] & 0xC0) == 0x80:
            tail = tail[1:]
    return tail.decode("utf-8", errors="replace")


def check_env(
    environ: Mapping[str, str], env_allow: Iterable[str] = (), *, confined: bool = True
) -> dict[str, str]:
    """A check's environment: the inherited variables on the CLI's allow-list (plus
    ``env_allow``), without the model's key; in the sandbox ``TMPDIR`` is its private /tmp
    and the proxy settings are gone too. Pure."""
    dropped = _MODEL_KEYS + (_PROXIES if confined else ())
    patterns = [p for p in DEFAULT_ALLOW if p not in dropped] + list(env_allow)
    env = {name: value for name, value in environ.items() if allowed(name, patterns)}
    if confined:
        env["TMPDIR"] = "/tmp"
    return env


def sandbox_argv(
    bwrap: str,
    command: str,
    cwd: Path,
    *,
    deny: Iterable[Path],
    allow: Iterable[Path],
    status_fd: int,
) -> list[str]:
    """The bubblewrap command line that runs ``command`` in ``cwd``: the root read-only, fresh
    ``/dev``, ``/proc`` (of its own pid namespace), ``/tmp`` and ``/run``; each of ``deny``
    hidden under an empty tmpfs, each of ``allow`` (existing, resolved paths) bound read-only
    again over it, and ``cwd`` writable last (it may lie below a hidden folder). Pure."""
    cwd = Path(os.path.abspath(cwd))
    argv = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        # Unix sockets (a PostgreSQL server's, a Docker daemon's) do not need the network.
        "--tmpfs",
        "/run",
    ]
    hidden = [Path("/tmp"), Path("/run")]
    for path in deny:
        if not any(path == h or h in path.parents for h in hidden):
            argv += ["--tmpfs", str(path)]
            hidden.append(path)
    for path in allow:
        if path != cwd and any(path == h or h in path.parents for h in hidden):
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd)]
    argv += ["--json-status-fd", str(status_fd), "--", _SHELL, "-c", command]
    return argv


def hidden_paths(
    cwd: Path, home: Path | None, git_dir: Path | None
) -> tuple[list[Path], list[Path]]:
    """``(deny, allow)`` for :func:`sandbox_argv`: the agent sandbox's decisions
    (:func:`~agentgrove.runtime._homes.private_homes`) plus the grove home hidden, kept to
    folders that exist, resolved."""
    deny_raw, allow_raw = private_homes(cwd, git_dir)
    if home is not None:
        deny_raw.append(str(home))
    deny = [Path(p).resolve() for p in deny_raw if Path(p).is_dir()]
    allow = [Path(p).resolve() for p in allow_raw if Path(p).exists()]
    return deny, allow


def run_check(
    command: str,
    cwd: Path,
    *,
    timeout_s: float,
    home: Path | None,
    git_dir: Path | None,
    sandbox: SandboxMode,
    env_allow: Iterable[str] = (),
    cancel: threading.Event | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> CheckRun:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd`` (the agent's worktree), confined unless
    ``sandbox`` is ``"off"``, killed with everything it started after ``timeout_s`` seconds.
    ``home``: the grove home (hidden from it); ``git_dir``: the main repository's git
    directory (readable, not writable). Never raises for the command: a command that cannot
    start is a run with ``error`` set. ``cancel``: once set (from another thread), the check
    is killed like at its timeout, at once. ``extra_env``: variables grove sets for it
    (``GROVE_AGENT_ID``, ``GROVE_PORT_BASE``)."""
    started = time.monotonic()
    cwd = cwd.resolve()
    confined = sandbox != "off"
    token = f"{_MARK_PREFIX}{uuid.uuid4().hex}"
    env = {
        **check_env(os.environ, env_allow, confined=confined),
        **(extra_env or {}),
        **marker_env(token, 0),
    }
    status_r = status_w = -1
    if confined:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return CheckRun(False, None, _ms_since(started), "", SANDBOX_MISSING)
        status_r, status_w = os.pipe()
        deny, allow = hidden_paths(cwd, home, git_dir)
        argv = sandbox_argv(bwrap, command, cwd, deny=deny, allow=allow, status_fd=status_w)
    else:
        argv = [_SHELL, "-c", command]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(status_w,) if confined else (),
        )
    except OSError as exc:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        return CheckRun(False, None, _ms_since(started), "", f"the check cannot start: {exc}")
    if status_w >= 0:
        os.close(status_w)
    assert proc.stdout is not None
    reader = _Tail(proc.stdout)
    reader.start()
    try:
        timed_out = not _wait_unreaped(proc.pid, started + timeout_s, cancel)
    finally:
        # The leader is not reaped yet, so its process group id cannot be reused: killing
        # the group reaches exactly what the check left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        kill_until_gone(token)
        code = proc.wait()
        reader.join(_DRAIN_S)
        if not reader.is_alive():
            proc.stdout.close()
    duration = _ms_since(started)
    tail = output_tail(reader.data())
    status = _read_status(status_r) if confined else {"child-pid": proc.pid}
    if confined and "child-pid" not in status:
        detail = tail.strip().splitlines()[-1] if tail.strip() else f"bwrap exited {code}"
        return CheckRun(False, None, duration, tail, SANDBOX_FAILED.format(detail=detail))
    if timed_out:
        log.info("check killed at its timeout", extra={"command": command, "timeout_s": timeout_s})
        return CheckRun(False, None, duration, tail, None, timed_out=True)
    if code == NOT_FOUND_EXIT:
        first = tail.strip().splitlines()[-1] if tail.strip() else command
        return CheckRun(
            False, code, duration, tail, f"the check's command was not found (exit 127): {first}"
        )
    return CheckRun(code == 0, code, duration, tail, None)


def fix_prompt(command: str, run: CheckRun, *, tries_left: int) -> str:
    """What an agent whose check failed is told in its next round: the exit code first, then
    the output's tail (the agent's own doing, shown to the agent as it is). Pure."""
    if run.timed_out:
        opening = "The check was killed at its timeout (no exit code)"
    else:
        opening = f"The check failed with exit code {run.exit_code}"
    after = (
        f"{tries_left} more {'try' if tries_left == 1 else 'tries'} after this one"
        if tries_left
        else "this is the last try"
    )
    return (
        f"{opening}: {command}\n\n"
        f"The last lines of its output:\n--- check output ---\n{run.output_tail.rstrip()}\n"
        "--- end of check output ---\n\n"
        "Fix the cause in your worktree. When you finish, grove runs the check again "
        f"({after}). Finish with a summary of what you changed."
    )


class _Tail(threading.Thread):
    """Reads a pipe to its end, holding only the last :data:`_KEEP_RAW` bytes."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True, name="check-output")
        self._pipe = pipe
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self._pipe.fileno(), 65536):
                with self._lock:
                    self._buffer += chunk
                    del self._buffer[:-_KEEP_RAW]

    def data(self) -> bytes:
        with self._lock:
            return bytes(self._buffer)


def _wait_unreaped(pid: int, deadline: float, cancel: threading.Event | None) -> bool:
    """Wait until ``pid`` exits, ``deadline`` (monotonic) passes or ``cancel`` is set, leaving
    it a zombie; whether it exited. A thread blocks in ``waitid`` for the exit, so it is seen
    at once (polling would add up to a poll interval to every check)."""
    exited = threading.Event()

    def watch() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        exited.set()

    threading.Thread(target=watch, daemon=True, name="check-exit").start()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (cancel is not None and cancel.is_set()):
            return exited.is_set()
        if exited.wait(min(left, _CANCEL_POLL_S)):
            return True


def _read_status(fd: int) -> dict[str, object]:
    """What bubblewrap wrote on its ``--json-status-fd`` (one JSON object a line), merged."""
    os.set_blocking(fd, False)
    raw = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(fd)
    status: dict[str, object] = {}
    for line in raw.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict):
                status.update(item)
    return status


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
