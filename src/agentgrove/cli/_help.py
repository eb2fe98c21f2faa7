"""Help texts as a user reads them: whole sentences, no Python types, every parameter described.

Command docstrings are wrapped at 100 columns in the source; the help shows each paragraph as
one reflowed paragraph (rich kept the source's line breaks, so descriptions broke
mid-sentence). Text is shown literally: ``[containing TEXT]`` is not rich markup. Flags show
no value placeholder and options show a click-style one (``INTEGER``, not ``<int>``).
Positional arguments take their description from :data:`ARGUMENT_HELP` by parameter name, so a
new command whose arguments follow the existing names is described without any change here
(and ``tests/test_cli_help.py`` fails for one that is not).

:class:`GroveGroup` applies all this when typer builds the command tree, so ``grove --help``,
the shell's ``help`` and ``docs/cli.md`` (:mod:`agentgrove.cli._docs`) show the same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup

from agentgrove.cli._coercion import defer

__all__ = ["ARGUMENT_HELP", "GroveGroup", "commands", "plain", "reflow", "set_help"]

ARGUMENT_HELP: Mapping[str, str] = {
    "role": "The agent's role (`grove roles` lists them).",
    "task": "What the agent is asked to do, in plain words.",
    "agent_id": "An agent's id, as `grove ls` prints it.",
    "agent_ids": "Agents' ids, as `grove ls` prints them.",
    "run_id": "A workflow run's id, as `grove workflow ls` prints it.",
    "file": "A workflow YAML file, or a built-in's name (`grove workflow templates`).",
    "node": "A node's key in the run's workflow.",
    "text": "The text to send.",
    "reply": "The answer to the agent's question, in plain words: its next message.",
}
"""Description of each positional argument, by its parameter name."""

EXAMPLES: Mapping[str, tuple[str, ...]] = {
    "grove": (
        "grove init",
        "grove run file-writer 'Create hello.txt containing hi'",
        "grove spawn implementer 'Add a --verbose flag'; grove worker --drain",
        "grove workflow run feature --input feature='CSV export' --wait",
        "grove up",
    ),
    "grove spawn": (
        "grove spawn implementer 'Add a --verbose flag' --check 'pytest -q'",
        "grove spawn tester 'Test the parser' --parent 3f2a91c0",
    ),
    "grove run": ("grove run file-writer 'Create hello.txt containing hi' --budget-usd 0.5",),
    "grove ls": ("grove ls --status failed", "grove ls --json"),
    "grove logs": ("grove logs -f 3f2a91c0",),
    "grove wait": ("grove wait 3f2a91c0 9b1e4d77 --timeout 600",),
    "grove answer": ("grove answer 3f2a91c0 'Blue, like the logo'",),
    "grove merge": (
        "grove merge 3f2a91c0",
        "grove merge 3f2a91c0 9b1e4d77 --check 'pytest -q' --resolve",
    ),
    "grove worker": ("grove worker --concurrency 4", "grove worker --drain --roles tester"),
    "grove dashboard": ("grove dashboard --port 8420 --token-file ~/.grove-token",),
    "grove dev model-server": ("grove dev model-server --port 0",),
    "grove workflow run": (
        "grove workflow run feature --input feature='CSV export' --input check='pytest -q'",
        "grove workflow run my-flow.yaml --wait --budget-usd 5",
    ),
    "grove workflow rerun": ("grove workflow rerun 7c01d2e4 --from test --wait",),
    "grove approve": ("grove approve 7c01d2e4 plan --comment 'looks right'",),
    "grove reject": ("grove reject 7c01d2e4 implement --comment 'handle the empty file too'",),
}
"""Examples shown under each command's help (and in docs/cli.md), by full command name."""

_PLACEHOLDER = {"integer": "INTEGER", "float": "NUMBER", "path": "PATH", "text": "TEXT"}
_MARK = "_grove_help_plain"  # the unescaped help, kept for docs/cli.md


class _Argument(TyperArgument):
    """A positional argument shown the usual way: ``AGENT_ID``, ``[AGENT_IDS]...``, no type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _rich_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def reflow(text: str) -> str:
    """``text`` with the line breaks inside each paragraph replaced by spaces; paragraphs
    (blank-line separated) and ``\\b`` blocks (click's "keep as written") stay as they are."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    out = []
    for paragraph in paragraphs:
        if paragraph.startswith("\b"):
            out.append(paragraph)
        else:
            out.append(" ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(out)


def plain(obj: object) -> str:
    """The help of a command or parameter as written (reflowed, not escaped for rich)."""
    return str(getattr(obj, _MARK, None) or getattr(obj, "help", None) or "")


def set_help(obj: Any, text: str) -> None:
    """Give ``obj`` (a command or parameter) ``text`` as its help, reflowed and escaped."""
    text = reflow(text)
    setattr(obj, _MARK, text)
    obj.help = escape(text)


def _polish_param(param: Any) -> None:
    if getattr(param, _MARK, None) is not None:
        return  # already polished (typer may hand the same object to two groups)
    defer(param)
    if param.param_type_name == "argument":
        param.help = param.help or ARGUMENT_HELP.get(param.name or "")
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
        param.__class__ = _Argument
    if param.param_type_name == "option" and param.metavar is None:
        if param.is_flag:
            param.metavar = ""  # a flag takes no value: no <bool>
        else:
            kind = param.type_descriptor.annotation if hasattr(param, "type_descriptor") else None
            param.metavar = _placeholder(kind)
    set_help(param, param.help or "")


def _placeholder(annotation: object) -> str:
    name = getattr(annotation, "__name__", "") or ""
    if name == "list":
        return "TEXT"
    return {"int": "INTEGER", "float": "NUMBER", "Path": "PATH", "PosixPath": "PATH"}.get(
        name, _PLACEHOLDER.get(name.lower(), "TEXT")
    )


def _polish(command: Any, name: str = "grove") -> None:
    if command.help and getattr(command, _MARK, None) is None:
        set_help(command, command.help)
        examples = EXAMPLES.get(name, ())
        if examples:
            # typer keeps single line breaks in an epilog (it doubles blank lines).
            command.epilog = "\n".join(["Examples:", *(escape(f"  {e}") for e in examples)])
    for param in command.params:
        _polish_param(param)
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        help_option.metavar = ""
        defer(help_option)
    for child_name, child in getattr(command, "commands", {}).items():
        _polish(child, f"{name} {child_name}")


def commands(root: Any, prefix: tuple[str, ...] = ("grove",)) -> Iterator[tuple[str, Any]]:
    """Every command and group under ``root`` (itself first), depth first, with its full name."""
    yield " ".join(prefix), root
    for name, child in getattr(root, "commands", {}).items():
        yield from commands(child, (*prefix, name))


class GroveGroup(TyperGroup):
    """The root group: polishes every command's help as typer builds the tree."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _polish(self)
