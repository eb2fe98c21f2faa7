"""Which module defines each ``grove`` command, so that a process imports (and typer builds)
only the command it runs.

Importing every command module and turning all ~35 typer commands into click commands cost
each ``grove`` invocation ~40 ms before it did anything (issue 13: read commands within 1.3x of
their floor). :func:`root_command` builds the root group with the one command the arguments
name; with an unknown one, it builds them all, so "No such command" and its suggestions read
as before; with none (``grove``, ``grove --help``), the root holds the placeholders of
:mod:`._listing`, which show as the commands do. The in-process users of the whole tree
(the shell, docs/cli.md, tests) take :func:`full_app`.

``tests/test_cli_registry.py`` checks :data:`WHERE` against what the modules register.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer
import typer.main
from typer._click import Command  # typer bundles its own click
from typer.core import TyperGroup
from typer.models import CommandInfo

from agentgrove.cli._app import app
from agentgrove.cli._listing import placeholders

MODULES = (
    "_agents",
    "_approvals",
    "_dashboard",
    "_inbox",
    "_record",
    "_setup",
    "_shell",
    "_stats",
    "_up",
    "_workflows",
)
"""Every command module, in the order their commands are listed (registration order)."""

_AGENTS = ("_agents",)
WHERE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("spawn", "run", "ls", "show", "logs", "wait", "cancel", "answer", "diff", "merge"),
        _AGENTS,
    ),
    "gc": _AGENTS,
    "budget": _AGENTS,
    "approve": ("_approvals",),
    "reject": ("_approvals",),
    "dashboard": ("_dashboard",),
    "inbox": ("_inbox",),
    **dict.fromkeys(("init", "roles", "doctor", "worker", "demo"), ("_setup",)),
    "shell": ("_shell",),
    "stats": ("_stats",),
    "up": ("_up",),
    "dev": ("_record", "_setup"),
    "workflow": ("_workflows",),
}
"""The modules that register each top-level command or group (a group: all its commands)."""


def _load(modules: Sequence[str]) -> None:
    # In MODULES order whatever the caller's, so the registration order never depends on
    # which command a process ran first.
    for module in MODULES:
        if module in modules:
            importlib.import_module(f"agentgrove.cli.{module}")


def full_app() -> typer.Typer:
    """The ``grove`` typer app with every command registered."""
    _load(MODULES)
    return app


def command_name(info: CommandInfo) -> str:
    """The name a registered command is invoked by (typer's rule for an unnamed one)."""
    assert info.callback is not None
    return info.name or typer.main.get_command_name(info.callback.__name__)


def _named(argv: Sequence[str]) -> str | None:
    """The command the arguments name: the first one that is not an option (grove's own
    options, ``--version`` and ``--help``, take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


@contextmanager
def _only(name: str | None) -> Iterator[None]:
    """``app`` with just the command or group ``name`` registered (``None``: none), until the
    block ends."""
    commands, groups = app.registered_commands, app.registered_groups
    app.registered_commands = [c for c in commands if command_name(c) == name]
    app.registered_groups = [g for g in groups if g.name == name]
    try:
        yield
    finally:
        app.registered_commands, app.registered_groups = commands, groups


def root_command(argv: Sequence[str]) -> Command:
    """The root click group for running ``grove`` with ``argv`` (without the program name):
    holding the named command alone when there is one grove knows; with no command (``grove``,
    ``grove --help``, ``--version``), the listing's placeholders (:mod:`._listing`); with an
    unknown one, every command (for "No such command" and its suggestions)."""
    name = _named(argv)
    if name is None:
        with _only(None):
            root = typer.main.get_command(app)
        assert isinstance(root, TyperGroup)
        for placeholder in placeholders():
            root.add_command(placeholder)
        return root
    modules = WHERE.get(name)
    if modules is None:
        return typer.main.get_command(full_app())
    _load(modules)
    with _only(name):
        return typer.main.get_command(app)
