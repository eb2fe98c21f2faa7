"""Deferred coercion (agentgrove.cli._coercion): a parameter's value reaches the command, or is
refused, exactly as typer's own coercion does it; only when typer builds it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from agentgrove.cli._help import GroveGroup


def _root(cls: type[TyperGroup], seen: list[Any]) -> Any:
    app = typer.Typer(cls=cls, add_completion=False)

    @app.command()
    def take(
        name: str,
        count: int = 1,
        tags: list[str] | None = None,
        where: Path | None = None,
        ratio: float | None = None,
        flag: bool = False,
    ) -> None:
        seen.append((name, count, tags, where, ratio, flag))

    @app.command()
    def other() -> None:
        seen.append("other")

    return typer.main.get_command(app)


def _outcome(cls: type[TyperGroup], argv: list[str]) -> object:
    seen: list[Any] = []
    try:
        _root(cls, seen).main(argv, prog_name="grove", standalone_mode=False)
    except Exception as exc:  # a usage error: compare what the user is told
        return (type(exc).__name__, exc.format_message())  # type: ignore[attr-defined]
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["take", "x"],
        ["take", "ünï", "--count", "3", "--tags", "a", "--tags", "b"],
        ["take", "x", "--where", "some/dir", "--ratio", "0.5", "--flag"],
        ["take", "x", "--count", "abc"],
        ["take", "x", "--count", "1.5"],
        ["take", "x", "--ratio", "much"],
        ["other"],
    ],
    ids=" ".join,
)
def test_values_and_refusals_are_typers_own(argv: list[str]) -> None:
    deferred = _outcome(GroveGroup, argv)
    assert deferred == _outcome(TyperGroup, argv)
    assert deferred  # something ran, or something was refused


def test_only_a_value_to_coerce_builds_typers_coercion() -> None:
    root = _root(GroveGroup, [])
    take = root.commands["take"]
    root.main(["take", "x"], prog_name="grove", standalone_mode=False)
    built = {p.name: bool(p._runtime_param.built) for p in take.params}
    # `name` is a plain str (passed as it is); `count`'s default 1 is coerced as typer does;
    # the options left at None, and the bool flag, are not.
    assert built == {
        "name": False,
        "count": True,
        "tags": False,
        "where": False,
        "ratio": False,
        "flag": False,
    }
    root.main(["take", "x", "--ratio", "2"], prog_name="grove", standalone_mode=False)
    assert take.params[4]._runtime_param.built
