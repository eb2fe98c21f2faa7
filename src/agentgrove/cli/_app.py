"""The typer application object and what every command shares (opening the grove, output)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agentgrove.cli._help import GroveGroup
from agentgrove.text import visible

if TYPE_CHECKING:
    from agentgrove.grove import Grove

app = typer.Typer(
    name="grove",
    help="Orchestrate teams of LLM coding agents, each in its own git worktree.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=GroveGroup,
)
dev_app = typer.Typer(
    help="Developer tools: the scripted model server, recording and replaying conversations.",
    no_args_is_help=True,
)
app.add_typer(dev_app, name="dev")

PIPE_WIDTH = 1000
"""Output width when the stream is not a terminal and COLUMNS is unset: wide enough that no table
row or message is wrapped (80 would break ``grove ls | grep``); rich still sizes tables to
their content."""


def _width(stream: object) -> int | None:
    isatty = getattr(stream, "isatty", None)
    if (isatty is not None and isatty()) or os.environ.get("COLUMNS"):
        return None  # rich asks the terminal (or reads COLUMNS)
    return PIPE_WIDTH


# No emoji codes: ``:warning:`` in an agent's text stays text (see agentgrove.text).
console = Console(width=_width(sys.stdout), emoji=False)
err_console = Console(stderr=True, width=_width(sys.stderr), emoji=False)


def print_error(message: object) -> None:
    """One ``grove: error: ...`` line on stderr, escaped and redacted (a message may quote
    agent text or a URL with its password)."""
    from agentgrove.secrets import redact  # on the error path only: its patterns take ~4 ms

    print(f"grove: error: {visible(redact(str(message)))}", file=sys.stderr)


def print_table(table: object) -> None:
    """Print a rich table; piped (no terminal), without the spaces rich pads every line with
    to the widest row (a long output made every line of ``show`` 159 columns wide)."""
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


LOG_FORMAT_HELP = (
    "How grove logs on stderr: text (lines for people) or json (one object per line with "
    "time, level, event, agent, run, worker and message, for log shippers)."
)


def log_format(value: str, worker: str | None = None) -> None:
    """Send the core's log records to stderr as ``--log-format`` says, or :class:`BadInput`."""
    from agentgrove.errors import BadInput
    from agentgrove.logs import LOG_FORMATS, configure

    if value not in LOG_FORMATS:
        raise BadInput(f"--log-format {value!r}: use one of {', '.join(LOG_FORMATS)}")
    configure("json" if value == "json" else "text", worker=worker)


ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        metavar="N",
        help="Agents run at once (default: [worker] concurrency in grove.toml, else 2).",
    ),
]
"""``--concurrency`` of the commands that run a worker; checked by :func:`check_concurrency`."""


def check_concurrency(value: int | None) -> None:
    """:class:`BadInput` unless ``--concurrency`` is unset or at least 1."""
    from agentgrove.errors import BadInput

    if value is not None and value < 1:
        raise BadInput(f"--concurrency {value}: give at least 1")


def print_exports(env: Mapping[str, str]) -> None:
    """Print ``env`` as one ``export`` line to paste into the shell that will run grove
    (values quoted for the shell)."""
    print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()), flush=True)


def open_grove(**kwargs: Any) -> Grove:
    # Imported here: `grove roles`, `init` and `--help` need no store (issue 13).
    from agentgrove.grove import Grove

    return Grove.open(**kwargs)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def is_tty() -> bool:
    return sys.stdout.isatty()


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        print(f"grove {version('agentgrove')}")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False,
        "--version",
        help="Print grove's version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    # grove's own options, before any command (typer calls this for every command).
    pass
