"""Per-role Bash policy, decided before the CLI runs a command. Pure.

``full``: any command (confined by the sandbox when it is on). ``read-only``: one command from
a list of readers, with no redirection, command substitution or chaining that could reach a
writer (a reviewer may look, not touch). ``none``: no Bash at all.
"""

from __future__ import annotations

import re
import shlex
from typing import Literal

BashPolicy = Literal["full", "read-only", "none"]

READERS = frozenset(
    {
        "ls",
        "cat",
        "head",
        "tail",
        "wc",
        "grep",
        "rg",
        "find",
        "tree",
        "pwd",
        "stat",
        "file",
        "diff",
        "git",
        "echo",
        "sort",
        "uniq",
        "cut",
        "du",
    }
)
_GIT_READERS = frozenset(
    {
        "log",
        "show",
        "diff",
        "status",
        "blame",
        "branch",
        "ls-files",
        "grep",
        "rev-parse",
        "describe",
        "shortlog",
    }
)
_FIND_WRITERS = frozenset(
    {"-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf", "-fls"}
)
# Options of the readers that write a file or run a program (an option's value may follow it
# in the same word, as in ``--output=x`` or ``-ox``).
_WRITING_OPTIONS: dict[str, tuple[str, ...]] = {
    "sort": ("-o", "--output", "--compress-program"),
    "tree": ("-o",),
    "file": ("-C", "--compile"),
    "rg": ("--pre",),
    "git": ("--output", "-O", "--open-files-in-pager", "--ext-diff", "--exec"),
}
_GIT_BRANCH_LISTING = frozenset(
    {"-a", "--all", "-r", "--remotes", "-v", "-vv", "--verbose", "--list", "--show-current"}
)
_SHELL_SYNTAX = re.compile(r"[;&`<>]|\$\(|\|\||\n")


def bash_refusal(policy: BashPolicy, command: str) -> str | None:
    """Why ``command`` is refused under ``policy``, or ``None`` when it may run."""
    if policy == "full":
        return None
    if policy == "none":
        return "this role may not run commands"
    if _SHELL_SYNTAX.search(command):
        return "read-only role: no redirection, chaining or command substitution"
    for part in command.split("|"):
        try:
            words = shlex.split(part)
        except ValueError:
            return "read-only role: the command does not parse"
        if not words:
            return "read-only role: empty command"
        if words[0] not in READERS:
            return f"read-only role: {words[0]!r} is not a read-only command"
        if words[0] == "git" and (len(words) < 2 or words[1] not in _GIT_READERS):
            return "read-only role: only git commands that read (log, show, diff, status...)"
        if words[0] == "find" and _FIND_WRITERS.intersection(words):
            return "read-only role: find may not delete, execute or write files"
        refusal = _option_refusal(words)
        if refusal is not None:
            return refusal
    return None


def _option_refusal(words: list[str]) -> str | None:
    """Why a reader's options make it a writer (or a launcher), or ``None``."""
    name, args = words[0], words[1:]
    for arg in args:
        for option in _WRITING_OPTIONS.get(name, ()):
            if _has_option(arg, option):
                return f"read-only role: {name} {option} writes a file or runs a program"
    if name == "uniq" and len([a for a in args if not a.startswith("-")]) > 1:
        return "read-only role: uniq with an output file writes it"
    if name == "git" and args[:1] == ["branch"] and not _GIT_BRANCH_LISTING.issuperset(args[1:]):
        return "read-only role: git branch may only list (-a, -r, -v, --list)"
    return None


def _has_option(arg: str, option: str) -> bool:
    """Whether the word ``arg`` gives ``option``: ``--output``, ``--output=x``; a short ``-o``
    also inside a cluster of short options (``-ro``) or with its value attached (``-ox``)."""
    if option.startswith("--"):
        return arg == option or arg.startswith(option + "=")
    return arg.startswith("-") and not arg.startswith("--") and option[1] in arg[1:]


SandboxMode = Literal["auto", "required", "off"]
"""``auto`` (default): an agent whose role can run Bash needs the sandbox, one without Bash does
not. ``required``: every agent needs it. ``off``: agents run unconfined (the user said so)."""

SANDBOX_MISSING = (
    "{role} can run Bash, which grove runs only in the bubblewrap sandbox, and bubblewrap/socat "
    "are not installed: apt-get install bubblewrap socat (or, to run agents unconfined, set "
    '[runtime] sandbox = "off" in grove.toml)'
)


def can_run_bash(tools: tuple[str, ...] | list[str], bash: BashPolicy) -> bool:
    """Whether a role with ``tools`` and Bash policy ``bash`` can run any command."""
    return "Bash" in tools and bash != "none"


def needs_sandbox(mode: SandboxMode, tools: tuple[str, ...] | list[str], bash: BashPolicy) -> bool:
    """Whether an agent with these powers may start only inside the sandbox."""
    if mode == "off":
        return False
    return mode == "required" or can_run_bash(tools, bash)
