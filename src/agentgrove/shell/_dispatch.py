"""Running one shell line through the ``grove`` typer app, in-process, without ever raising.

Contracts:

* :meth:`Dispatcher.__call__` never raises (``KeyboardInterrupt`` included): every failure —
  a :class:`~agentgrove.errors.GroveError`, a usage error, ``SystemExit``, any other
  exception — becomes an :class:`Outcome` whose ``error`` is the one line already printed
  to stderr, so the shell can go on.
* :meth:`Dispatcher.interrupt` may be called from any thread while a command runs; the command
  then stops with ``KeyboardInterrupt`` at its next Python instruction (a blocking C call
  finishes first), and the outcome says ``interrupted``. Called when no command runs, it does
  nothing and returns False.
"""

from __future__ import annotations

import ctypes
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import typer

from agentgrove.errors import GroveError
from agentgrove.text import one_line

EXIT_WORDS = frozenset({"exit", "quit"})
NOT_IN_SHELL = frozenset({"shell", "up", "worker", "dashboard"})
"""Commands that start their own prompt or long-running services (which want the main
thread's signals): refused inside the shell, which runs commands in a worker thread."""

SHELL_HELP = (
    "Shell: type a grove command without `grove` (spawn, run, ls, show, logs, cancel, "
    "answer, workflow run/show, approve, reject, budget, ...); Tab completes commands, roles and "
    "ids; Up recalls history; Ctrl-C clears the line or interrupts a command; exit, quit or "
    "Ctrl-D leaves."
)


@dataclass(frozen=True)
class Outcome:
    """What one line did: the command's exit code, the error line shown (if any), and whether
    the user asked to leave the shell."""

    exit_code: int = 0
    error: str | None = None
    quit: bool = False


class Dispatcher:
    """Runs shell lines as ``grove`` commands through ``app`` (the CLI's typer app)."""

    def __init__(self, app: typer.Typer, *, write_error: Callable[[str], None] | None = None):
        self._app = app
        self._write_error = write_error or _to_stderr
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._interrupt_sent = False

    def __call__(self, line: str) -> Outcome:
        try:
            return self._run_line(line)
        except KeyboardInterrupt:
            # An interrupt delivered just as the command ended, outside its own handler.
            return self._fail(130, "interrupted")

    def interrupt(self) -> bool:
        """Stop the running command (see module doc); False when none is running."""
        with self._lock:
            if self._thread is None:
                return False
            _async_raise(self._thread, KeyboardInterrupt)
            self._interrupt_sent = True
            return True

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def _run_line(self, line: str) -> Outcome:
        try:
            args = shlex.split(line)
        except ValueError as exc:
            return self._fail(2, f"cannot read that line ({exc}): check the quotes")
        if args[:1] == ["grove"]:
            args = args[1:]  # typed out of habit
        if not args:
            return Outcome()
        if args[0] in EXIT_WORDS:
            return Outcome(quit=True)
        if args == ["help"]:
            print(SHELL_HELP)
            print(self._command_list())
            return Outcome()
        if args[0] == "help":
            args = [*args[1:], "--help"]
        if args[0] in NOT_IN_SHELL:
            return self._fail(2, f"`{args[0]}` cannot run inside the shell: run it from a terminal")
        with self._lock:
            self._thread = threading.get_ident()
        try:
            return self._invoke(args)
        finally:
            with self._lock:
                self._thread = None
                pending, self._interrupt_sent = self._interrupt_sent, False
            if pending:
                # The interrupt may not have been delivered yet: take it back, so that it
                # cannot fire later in whatever this thread does next.
                _async_raise(threading.get_ident(), None)

    def _invoke(self, args: list[str]) -> Outcome:
        try:
            code = self._app(args, standalone_mode=False, prog_name="grove")
        except GroveError as exc:
            return self._fail(2, f"error: {exc}")
        except KeyboardInterrupt:
            return self._fail(130, "interrupted")
        except SystemExit as exc:
            return Outcome(exc.code if isinstance(exc.code, int) else 1)
        except typer.Exit as exc:
            return Outcome(exc.exit_code)
        except typer.Abort:
            return self._fail(130, "aborted")
        except Exception as exc:
            # Usage errors (unknown command, missing argument...). typer bundles its own
            # click, so they are recognised by shape, as in ``agentgrove.cli.main``.
            message, exit_code = (
                getattr(exc, "format_message", None),
                getattr(exc, "exit_code", None),
            )
            if callable(message) and isinstance(exit_code, int):
                where = f"{args[0]} --help" if args[0] in self._command_names() else "help"
                return self._fail(exit_code, f"error: {message()} (`{where}` shows the usage)")
            return self._fail(1, f"internal error: {type(exc).__name__}: {exc}")
        if code == 130:
            # typer turns a KeyboardInterrupt inside a command into exit code 130.
            return self._fail(130, "interrupted")
        return Outcome(code if isinstance(code, int) else 0)

    def _command_list(self) -> str:
        """The commands this shell runs, one per line with their one-line help."""
        group = typer.main.get_command(self._app)
        commands = getattr(group, "commands", {})
        names = sorted(name for name in commands if name not in NOT_IN_SHELL)
        width = max(map(len, names), default=0)
        return "\n".join(
            f"  {name.ljust(width)}  {commands[name].get_short_help_str(limit=70)}"
            for name in names
        )

    def _command_names(self) -> set[str]:
        command = typer.main.get_command(self._app)
        return set(getattr(command, "commands", {}))

    def _fail(self, code: int, message: str) -> Outcome:
        line = "grove: " + one_line(message, 10_000)  # one line, whatever the message held
        self._write_error(line)
        return Outcome(code, line)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in another thread (None withdraws a scheduled one). CPython only."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )
