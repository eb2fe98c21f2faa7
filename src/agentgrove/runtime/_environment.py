"""The Claude CLI's environment is an allow-list, not grove's whole environment.

The SDK starts the CLI with ``os.environ`` merged under the options' ``env``; it has no way to
leave variables out. So grove points ``cli_path`` at a two-line ``sh`` wrapper that unsets every
inherited variable not on the allow-list (named to it in ``GROVE_CLI_DROP``) and then ``exec``s
the real CLI. What the CLI, its tools and an agent's Bash commands see is therefore: the
variables grove sets itself (``ClaudeAgentOptions.env``), plus the inherited ones that match
:data:`DEFAULT_ALLOW` or the project's ``[runtime] env_allow`` patterns. A database password,
a cloud token or any other secret in the worker's environment never reaches an agent.

Only names that are shell identifiers can be unset by ``sh``; the environment of a normal
process holds nothing else.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

DROP_ENV = "GROVE_CLI_DROP"

DEFAULT_ALLOW: tuple[str, ...] = (
    # What programs need to run at all.
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "PWD",
    # Network set-up the model API may need.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    # The model endpoint and key, and the CLI's own settings.
    "ANTHROPIC_*",
    "CLAUDE_*",
    # Trace context the SDK propagates to the CLI.
    "TRACEPARENT",
    "TRACESTATE",
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def allowed(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the (case-sensitive, ``fnmatch``) ``patterns``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def dropped_names(
    inherited: Mapping[str, str], patterns: Iterable[str], given: Collection[str]
) -> list[str]:
    """The inherited variables the CLI must not see: neither allowed nor set by grove."""
    patterns = tuple(patterns)
    return sorted(
        name
        for name in inherited
        if name not in given and _IDENTIFIER.match(name) and not allowed(name, patterns)
    )


def real_cli() -> str:
    """The Claude Code CLI the SDK would start: its bundled binary, else ``claude`` on PATH."""
    # Found, not imported: importing the SDK takes ~0.5 s (see _cli_start).
    sdk = importlib.util.find_spec("claude_agent_sdk")
    folders = list(sdk.submodule_search_locations or []) if sdk is not None else []
    if folders and (bundled := Path(folders[0]) / "_bundled" / "claude").is_file():
        return str(bundled)
    found = shutil.which("claude")
    if found is None:
        raise FileNotFoundError("the Claude Code CLI was not found (bundled or on PATH)")
    return found


WRAPPER_DIR = "runtime"
"""The wrapper's folder inside the grove home (mode 0700)."""


def wrapper_for(cli: str, home: Path | None = None) -> Path:
    """The wrapper script that drops ``$GROVE_CLI_DROP`` and execs ``cli``, verified for use.

    It lives in ``<home>/runtime/`` (without a grove home, ``$XDG_CACHE_HOME/agentgrove`` or
    ``~/.cache/agentgrove``), a folder of this user's with mode 0700. Before every use: each
    folder above it is owned by this user or root and not writable by others (a sticky
    folder such as /tmp excepted), the folder itself is ours and private (tightened if it is
    not), and the file is ours, not writable by others, with exactly the content grove would
    write; anything else is replaced atomically. Raises :class:`PermissionError` naming the
    folder when it cannot be made safe (owned by someone else, or a parent others can write).
    """
    script = (
        "#!/bin/sh\n"
        "# agentgrove: run the Claude CLI with an allow-listed environment.\n"
        "set -f\n"
        f'for name in ${DROP_ENV}; do unset "$name"; done\n'
        f"unset {DROP_ENV}\n"
        f'exec {_sh_quote(cli)} "$@"\n'
    )
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    folder = _private_folder(home / WRAPPER_DIR if home is not None else _cache_dir())
    path = folder / f"claude-env-{digest}.sh"
    if not _is_ours(path, script):
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".claude-env-")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(script)
            os.chmod(staging, 0o700)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    return path


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentgrove"


def _private_folder(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    for parent in reversed(folder.parents):
        if parent.exists():
            _check_parent(parent)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(
            f"{folder} is not a folder: remove it, grove keeps its CLI wrapper there"
        )
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"{folder} is owned by uid {info.st_uid}, not by this user ({os.getuid()}): "
            "remove it, grove keeps its CLI wrapper there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)
    return folder


def _check_parent(folder: Path) -> None:
    info = folder.stat()
    if info.st_uid not in (0, os.getuid()):
        raise PermissionError(
            f"{folder} is owned by uid {info.st_uid}: grove will not run its CLI wrapper from "
            "below a folder another user controls (set GROVE_HOME elsewhere)"
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise PermissionError(
            f"{folder} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            f"chmod go-w {folder}, or set GROVE_HOME elsewhere"
        )


def _is_ours(path: Path, content: str) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return False
    try:
        return path.read_bytes() == content.encode()
    except OSError:
        return False


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
