"""The command registry: a process builds only the command it runs, and that command is the
one the whole tree holds (same help, same parameters)."""

from __future__ import annotations

import pytest
import typer

from agentgrove.cli._help import commands, plain
from agentgrove.cli._listing import LISTING, source
from agentgrove.cli._registry import MODULES, WHERE, command_name, full_app, root_command


def _registered() -> dict[str, set[str]]:
    app = full_app()
    found: dict[str, set[str]] = {}
    for info in app.registered_commands:
        assert info.callback is not None
        found.setdefault(command_name(info), set()).add(info.callback.__module__)
    for group in app.registered_groups:
        assert group.name is not None and group.typer_instance is not None
        for info in group.typer_instance.registered_commands:
            assert info.callback is not None
            found.setdefault(group.name, set()).add(info.callback.__module__)
    return found


def test_where_names_every_command_and_the_modules_that_register_it() -> None:
    expected = {name: {f"agentgrove.cli.{m}" for m in mods} for name, mods in WHERE.items()}
    assert _registered() == expected
    assert {m for mods in WHERE.values() for m in mods} == set(MODULES)


def _shape(command: object) -> list[tuple[str, str, list[tuple[object, ...]]]]:
    """What a user sees of a command tree: names, help and each parameter."""
    return [
        (
            name,
            plain(cmd),
            [(p.name, plain(p), p.metavar, p.opts, p.default) for p in cmd.params],
        )
        for name, cmd in commands(command)
    ]


@pytest.mark.parametrize("name", sorted(WHERE))
def test_a_command_built_alone_is_the_one_in_the_whole_tree(name: str) -> None:
    whole = typer.main.get_command(full_app())
    alone = root_command([name, "--help"])
    assert list(alone.commands) == [name]  # type: ignore[attr-defined]
    assert _shape(alone.commands[name]) == _shape(whole.commands[name])  # type: ignore[attr-defined]
    assert plain(alone) == plain(whole)


@pytest.mark.parametrize(
    "argv", [[], ["--help"], ["--version"], ["no-such-command"], ["--help", "lss"]]
)
def test_without_a_known_command_every_command_is_listed(argv: list[str]) -> None:
    """An unknown command builds the whole tree (its suggestions need it); none lists the
    placeholders of cli._listing, under the same names."""
    whole = typer.main.get_command(full_app())
    assert list(root_command(argv).commands) == list(whole.commands)  # type: ignore[attr-defined]


def test_the_listing_is_each_commands_first_paragraph() -> None:
    whole = typer.main.get_command(full_app())
    actual = tuple(
        (name, plain(cmd).split("\n\n")[0])
        for name, cmd in whole.commands.items()  # type: ignore[attr-defined]
    )
    assert actual == LISTING, (
        "src/agentgrove/cli/_listing.py is out of date; its LISTING should read:\n" + source(actual)
    )


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_grove_help_from_the_listing_prints_what_the_whole_tree_prints(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))

    def printed(root: object) -> str:
        root.main(["--help"], prog_name="grove", standalone_mode=False)  # type: ignore[attr-defined]
        return capsys.readouterr().out

    from_listing = printed(root_command(["--help"]))
    assert "List agents, oldest first." in from_listing
    assert from_listing == printed(typer.main.get_command(full_app()))


def test_options_before_the_command_are_skipped() -> None:
    assert list(root_command(["--version", "ls"]).commands) == ["ls"]  # type: ignore[attr-defined]


def test_building_one_command_leaves_the_app_whole() -> None:
    before = _registered()
    root_command(["ls"])
    assert _registered() == before
