"""Help texts: whole sentences, literal text, described parameters, and docs/cli.md current."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from agentgrove.cli import app
from agentgrove.cli._docs import render
from agentgrove.cli._help import commands, plain

ROOT = Path(__file__).resolve().parents[1]
TREE = list(commands(typer.main.get_command(app)))


def _help(*args: str, columns: int = 100) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "agentgrove", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_docs_cli_md_is_current() -> None:
    checked_in = (ROOT / "docs" / "cli.md").read_text()
    assert checked_in == render(), (
        "docs/cli.md is out of date: run `python -m agentgrove.cli._docs > docs/cli.md`"
    )


@pytest.mark.parametrize("name", [name for name, _ in TREE])
def test_every_parameter_is_described(name: str) -> None:
    command = dict(TREE)[name]
    assert plain(command), f"{name} has no help text"
    for param in command.params:
        assert plain(param), f"{name}: {param.name} has no description"


def test_no_python_types_show_through() -> None:
    # One subprocess per group keeps this cheap; every leaf command's help is rendered too.
    for name, command in TREE:
        if getattr(command, "commands", None):
            continue
        text = _help(*name.split()[1:])
        assert not re.search(r"<(int|str|bool|float|path|list\[[a-z]+\])>", text), (name, text)
        assert "{" not in text.split("\n", 3)[1], (name, text)  # usage names, not {agent_id}


def test_descriptions_are_whole_sentences_and_literal() -> None:
    wide = _help(columns=300)
    # The logs docstring is wrapped in the source; the command list shows one sentence.
    assert "with -f, stream them as they happen until the agent finishes" in wide
    worker = _help("worker", columns=300)
    assert "(default: [worker] concurrency in grove.toml" in worker  # not eaten as markup
    model_server = _help("dev", "model-server", columns=300)
    assert "With --script FILE.yaml, agents do what the script says" in model_server


def test_defaults_and_choices_are_stated() -> None:
    worker = _help("worker", columns=300)
    assert "default: [worker] concurrency in grove.toml, else 2" in worker
    assert "default: [worker] grace_s in grove.toml, else 30" in worker
    ls = _help("ls", columns=300)
    assert "pending, executing, completed, failed, cancelled" in ls
    runs = _help("workflow", "ls", columns=300)
    assert "Print the run as" not in runs


def test_examples_are_shown() -> None:
    text = _help(columns=300)
    assert "Examples:" in text and "grove init" in text
