"""The ``grove`` command. Exit codes: 0 ok, 1 an agent failed, 2 bad input or configuration."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from agentgrove.cli._app import print_error
from agentgrove.cli._registry import full_app, root_command
from agentgrove.errors import GroveError

if TYPE_CHECKING:
    from agentgrove.cli._app import app

__all__ = ["app", "dispatch", "main"]


def __getattr__(name: str) -> Any:
    """``app``, the typer app, with every command registered (PEP 562): ``main`` imports only
    the module of the command it runs (see :mod:`._registry`)."""
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point (``grove``, ``python -m agentgrove``): :func:`dispatch`, then the process
    ends with its status, without the interpreter's teardown (see :mod:`agentgrove.cli._exit`).
    It never returns to its caller."""
    from agentgrove.cli._exit import leave

    try:
        dispatch()
    except SystemExit as exc:
        leave(exc.code)


def dispatch() -> None:
    """Run the command in ``sys.argv``, turning any GroveError into one line and exit code 2;
    always raises :class:`SystemExit` with the status (for a caller that keeps its process)."""
    from agentgrove.logs import configure

    configure("text")  # the core's warnings on stderr, as lines (worker and up may choose json)
    try:
        # Without standalone mode, typer returns a command's exit code instead of exiting.
        code = root_command(sys.argv[1:])(standalone_mode=False)
    except GroveError as exc:
        print_error(exc)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("grove: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Usage errors (missing argument, unknown option...). typer bundles its own click, so
        # they are recognised by shape rather than by class.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
