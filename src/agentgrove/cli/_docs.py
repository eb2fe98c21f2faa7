"""docs/cli.md, generated from the help texts: ``python -m agentgrove.cli._docs > docs/cli.md``.

:func:`render` is a pure function of the command tree; ``tests/test_cli_help.py`` fails when the
checked-in file differs from it, so the reference cannot drift from ``--help``.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from agentgrove.cli._help import EXAMPLES, commands, plain

__all__ = ["render"]

HEADER = """\
# grove command reference

Generated from the commands' help texts by `python -m agentgrove.cli._docs > docs/cli.md`
(a test fails when this file is not current). `grove COMMAND --help` shows the same text.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_names(param: Any) -> str:
    names = " / ".join(
        ", ".join(f"`{o}`" for o in opts) for opts in (param.opts, param.secondary_opts) if opts
    )
    return names


def _default(param: Any) -> str:
    if param.is_flag or param.default is None or callable(param.default):
        return ""
    if isinstance(param.default, (list, tuple)) and not param.default:
        return ""
    return f"`{param.default}`"


def _command(name: str, command: Any) -> list[str]:
    ctx = typer.Context(command, info_name=name)
    pieces = " ".join(command.collect_usage_pieces(ctx))
    out = [f"## `{name}`", "", "```", f"{name} {pieces}".rstrip(), "```", ""]
    out += [plain(command), ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option"]
    if arguments:
        out += ["| Argument | Description |", "|---|---|"]
        out += [
            f"| `{p.metavar}`{'' if p.required else ' (optional)'} | {_cell(plain(p))} |"
            for p in arguments
        ]
        out.append("")
    if options:
        out += ["| Option | Value | Description | Default |", "|---|---|---|---|"]
        out += [
            f"| {_option_names(p)} | {_cell(p.metavar or '')} | {_cell(plain(p))} | {_default(p)} |"
            for p in options
        ]
        out.append("")
    examples = EXAMPLES.get(name, ())
    if examples:
        out += ["Examples:", "", "```", *examples, "```", ""]
    return out


def render() -> str:
    """The whole reference: every command, group first, in the order ``--help`` lists them."""
    from agentgrove.cli import app

    root = typer.main.get_command(app)
    lines = [HEADER]
    for name, command in commands(root):
        if getattr(command, "hidden", False):
            continue
        lines += _command(name, command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
