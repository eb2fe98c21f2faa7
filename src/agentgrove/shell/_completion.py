"""Tab completion: command names, options, role names, agent ids and workflow run ids.

The commands are read once from the typer app into a plain :class:`CommandNode` tree, and
:func:`candidates` is a pure function of that tree, the words typed so far and the values of each
kind, so it is tested without a terminal. Which kind of value an argument or option takes is
decided by its parameter name (``role``, ``agent_id``, ``--parent``, ``run_id``...), so a new
command whose parameters follow the existing names completes without any change here.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import typer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from agentgrove.shell._dispatch import EXIT_WORDS, NOT_IN_SHELL

Kind = Literal["role", "agent", "run", "workflow", "status"]
OptionValue = Kind | Literal["text", "flag"]
"""What follows an option: a value of some kind, free text, or nothing (a flag)."""

KIND_OF_PARAM: Mapping[str, Kind] = {
    "role": "role",
    "agent_id": "agent",
    "agent_ids": "agent",
    "parent": "agent",
    "run_id": "run",
    "file": "workflow",
    "status": "status",
}
"""Parameter name (as typer names it) -> the kind of value it takes."""


@dataclass(frozen=True)
class CommandNode:
    """One command or group: its subcommands, options (and which take a value), and the kind
    of each positional argument (None: free text). ``variadic``: the last one repeats."""

    subcommands: Mapping[str, CommandNode] = field(default_factory=dict)
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    arguments: tuple[Kind | None, ...] = ()
    variadic: bool = False


def command_tree(app: typer.Typer) -> CommandNode:
    """The app's commands (minus those the shell refuses) plus the shell's own words:
    ``help [COMMAND]``, ``exit``, ``quit``."""
    root = _node(typer.main.get_command(app))
    commands = {k: v for k, v in root.subcommands.items() if k not in NOT_IN_SHELL}
    words = {"help": CommandNode(subcommands=commands)} | dict.fromkeys(EXIT_WORDS, CommandNode())
    return CommandNode(subcommands=commands | words)


def _node(command: object) -> CommandNode:
    children = getattr(command, "commands", None) or {}
    options: dict[str, OptionValue] = {}
    arguments: list[Kind | None] = []
    variadic = False
    for param in getattr(command, "params", []):
        kind = KIND_OF_PARAM.get(param.name or "")
        if param.param_type_name == "argument":
            arguments.append(kind)
            variadic = param.nargs == -1
        else:
            for opt in param.opts:
                options[opt] = "flag" if param.is_flag else (kind or "text")
    if children or options or arguments:
        options["--help"] = "flag"
    return CommandNode(
        subcommands={name: _node(child) for name, child in children.items()},
        options=options,
        arguments=tuple(arguments),
        variadic=variadic,
    )


def candidates(
    tree: CommandNode, words: Sequence[str], prefix: str, values: Callable[[Kind], Sequence[str]]
) -> list[str]:
    """What may replace ``prefix``, the word being typed after the complete ``words``.

    ``values(kind)`` lists the known values of a kind (role names, agent ids...); it is only
    called for the kind the position needs. Sorted, each starting with ``prefix``.
    """
    node, rest = tree, list(words)
    while rest and rest[0] in node.subcommands:
        node = node.subcommands[rest.pop(0)]
    if node.subcommands:
        # Inside a group (or at the start): only its subcommand names make sense.
        options = node.options if prefix.startswith("-") else {}
        return _matching([*node.subcommands, *options], prefix)
    pending: Kind | Literal["text"] | None = None  # the previous word wants a value
    position = 0
    for word in rest:
        if pending is not None:
            pending = None
            continue
        taken = node.options.get(word) if word.startswith("-") else None
        if taken == "flag":
            continue
        if taken is not None:
            pending = taken
            continue
        position += 1
    if pending == "text":
        return []
    if pending is not None:
        return _matching(values(pending), prefix)
    if prefix.startswith("-"):
        return _matching(node.options, prefix)
    if position < len(node.arguments):
        kind = node.arguments[position]
    elif node.variadic and node.arguments:
        kind = node.arguments[-1]
    else:
        kind = None
    return _matching(values(kind), prefix) if kind is not None else []


def _matching(words: Iterable[str], prefix: str) -> list[str]:
    return sorted({w for w in words if w.startswith(prefix)})


class GroveCompleter(Completer):
    """prompt_toolkit completer over :func:`candidates`; ``values`` is read at each Tab."""

    def __init__(self, tree: CommandNode, values: Callable[[Kind], Sequence[str]]) -> None:
        self._tree = tree
        self._values = values

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        before = document.text_before_cursor
        try:
            words = shlex.split(before)
        except ValueError:
            return  # inside an open quote: free text
        prefix = "" if not before or before[-1].isspace() else (words.pop() if words else "")
        if words[:1] == ["grove"]:
            words = words[1:]
        try:
            found = candidates(self._tree, words, prefix, self._values)
        except Exception:
            return  # the store may be briefly unavailable: complete nothing rather than crash
        for word in found:
            # Each candidate is a whole word: the space after it is typed too, as in bash, so
            # the next word (or Tab) follows at once.
            yield Completion(word + " ", start_position=-len(prefix), display=word)
