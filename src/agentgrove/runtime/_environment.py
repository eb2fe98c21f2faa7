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
import os
import re
import shutil
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
    import claude_agent_sdk  # the runtime imports it anyway; kept local to stay a leaf here

    bundled = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    if bundled.is_file():
        return str(bundled)
    found = shutil.which("claude")
    if found is None:
        raise FileNotFoundError("the Claude Code CLI was not found (bundled or on PATH)")
    return found


def wrapper_for(cli: str) -> Path:
    """A wrapper script that drops ``$GROVE_CLI_DROP`` and execs ``cli``; written once per
    CLI path (content-addressed, atomically), executable, private to this user."""
    script = (
        "#!/bin/sh\n"
        "# agentgrove: run the Claude CLI with an allow-listed environment.\n"
        "set -f\n"
        f'for name in ${DROP_ENV}; do unset "$name"; done\n'
        f"unset {DROP_ENV}\n"
        f'exec {_sh_quote(cli)} "$@"\n'
    )
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"agentgrove-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"claude-env-{digest}.sh"
    if not path.exists():
        staging = folder / f".{path.name}.{os.getpid()}"
        staging.write_text(script)
        staging.chmod(0o755)
        staging.replace(path)
    return path


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
