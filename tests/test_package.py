"""The package's public surface and the README's promises about setting up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agentgrove
import agentgrove.testing
from agentgrove.cli._registry import MODULES, WHERE
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_public_names_are_sorted_and_importable() -> None:
    for module in (agentgrove, agentgrove.testing):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_readme_opens_with_the_two_commands_and_they_exist() -> None:
    first_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert first_block is not None
    commands = [line.split()[0] for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_grove_help_lists_every_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in (
        "init",
        "spawn",
        "run",
        "ls",
        "show",
        "logs",
        "wait",
        "cancel",
        "roles",
        "diff",
        "gc",
        "worker",
        "demo",
        "dev",
        "approve",
        "reject",
    ):
        assert re.search(rf"\b{command}\b", result.stdout), command


@pytest.mark.e2e
def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"run \w+: completed", result.stdout)
    assert result.stdout.count("completed") >= 4


def test_the_cli_does_not_load_the_web_stack_until_the_dashboard_runs() -> None:
    # FastAPI and uvicorn cost a fifth of a second, paid by every `grove` command otherwise.
    probe = (
        "import sys, agentgrove.cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# Errors that never reach a caller of the Python API: the worker's fencing (TransitionLost),
# a push the service turns into the agent's failure (PushFailed), the dashboard's 404 (NotFound).
_INTERNAL_ERRORS = {"TransitionLost", "PushFailed", "NotFound"}


def _api_types() -> set[type]:
    """Every agentgrove class a public method of Grove returns, and those reachable through
    the returned records' fields (a RunRecord's NodeView, an AgentRecord's CheckRecord...)."""
    import dataclasses
    import enum
    import typing

    from agentgrove.grove import Grove

    found: set[type] = set()

    def visit(tp: object) -> None:
        for arg in typing.get_args(tp):
            visit(arg)
        origin = typing.get_origin(tp)
        if origin is None and isinstance(tp, type) and tp.__module__.startswith("agentgrove"):
            if tp in found:
                return
            found.add(tp)
            if dataclasses.is_dataclass(tp):
                for hint in typing.get_type_hints(tp).values():
                    visit(hint)
            elif not issubclass(tp, enum.Enum):
                for name in dir(tp):
                    member = getattr(tp, name)
                    if (
                        not name.startswith("_")
                        and callable(member)
                        and not isinstance(member, type)
                    ):
                        hints = typing.get_type_hints(member, localns=_deferred_names())
                        visit(hints.get("return"))

    for name, member in vars(Grove).items():
        if name.startswith("_") or isinstance(member, property):
            continue  # properties hand out internal engines (store, workflows), not records
        function = member.__func__ if isinstance(member, classmethod) else member
        if callable(function):
            visit(typing.get_type_hints(function, localns=_deferred_names()).get("return"))
    return found


def _deferred_names() -> dict[str, object]:
    """agentgrove.grove's namespace plus the names it imports only for type checking (so that
    a read-only command does not load the service): what ``get_type_hints`` needs to resolve
    its annotations."""
    import agentgrove.grove
    import agentgrove.inbox
    import agentgrove.runtime
    import agentgrove.service
    import agentgrove.workflows.engine
    import agentgrove.workflows.spec

    names = dict(vars(agentgrove.grove))
    for module in (
        agentgrove.inbox,
        agentgrove.runtime,
        agentgrove.service,
        agentgrove.workflows.engine,
        agentgrove.workflows.spec,
    ):
        names.update(vars(module))
    return names


def _subclasses(cls: type) -> set[type]:
    return {sub for child in cls.__subclasses__() for sub in {child, *_subclasses(child)}}


def test_all_names_every_type_the_api_returns_or_raises() -> None:
    import agentgrove.cli
    import agentgrove.testing
    from agentgrove.errors import GroveError

    returned = {t.__name__ for t in _api_types()}
    errors = {GroveError, *_subclasses(GroveError)}
    # The developer tools' own errors (a bad model-server script) are agentgrove.testing's.
    tools = {e.__name__ for e in errors if e.__module__.startswith("agentgrove.testing")}
    raised = {e.__name__ for e in errors} - _INTERNAL_ERRORS - tools
    assert returned - set(agentgrove.__all__) == set()
    assert raised - set(agentgrove.__all__) == set()
    assert tools - set(agentgrove.testing.__all__) == set()


def test_importing_the_package_loads_none_of_the_api() -> None:
    code = "import sys, agentgrove; print('agentgrove.grove' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


_PROBE = """
import os, sys
sys.argv = ["grove", *sys.argv[1:]]
from agentgrove.cli import dispatch
try:
    dispatch()  # main() would end the process at once
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = os.environ["HEAVY"].split()
print("LOADED", code, *[name for name in heavy if name in sys.modules], file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command",
    [["--help"], ["ls"], ["show", "AGENT"], ["roles"], ["budget"], ["workflow", "ls"]],
    ids=" ".join,
)
def test_read_only_commands_load_none_of_the_heavy_modules(repo: Path, command: list[str]) -> None:
    """What makes a command slow to start: the migration machinery, the SDK, the web stack,
    the shell and the template engine load only for commands that use them."""
    from agentgrove.grove import Grove

    with Grove.init(repo) as grove:
        agent = grove.spawn("tester", "look")
    argv = [agent.id if part == "AGENT" else part for part in command]
    heavy = ["alembic", "claude_agent_sdk", "fastapi", "prompt_toolkit", "jinja2"]
    # The agent service and worker, the workflow files' parser, the notifier's HTTP client
    # and the live progress view serve commands that run or notify, none of these.
    heavy += ["agentgrove.service", "agentgrove.worker", "yaml", "agentgrove.notify._notifier"]
    heavy += ["urllib.request", "rich.live", "rich.tree"]
    # The listing is data (cli._listing); every other command imports its own module only.
    heavy += [f"agentgrove.cli.{m}" for m in MODULES if m not in WHERE.get(command[0], ())]
    heavy += ["agentgrove.workspaces", "agentgrove.secrets"]  # git work; writes, errors
    # Pydantic's model machinery: the workflow format, grove.toml's models (absent here), and
    # the one typer loaded to build a TypeAdapter for every parameter (cli._coercion); the
    # roles are pydantic models, so `grove roles` alone loads it.
    heavy += ["agentgrove.workflows.spec", "agentgrove.settings", "typer._adapters"]
    if command[0] != "roles":
        heavy += ["pydantic.main", "agentgrove.roles"]
    if command[0] in ("roles", "--help"):  # neither opens the grove
        heavy += ["agentgrove.grove", "agentgrove.store", "sqlalchemy.engine"]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HEAVY": " ".join(heavy)},
    )
    [line] = [ln for ln in probe.stderr.splitlines() if ln.startswith("LOADED")]
    assert line == "LOADED 0", probe.stderr


def test_the_schema_head_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from agentgrove.store._migrate import HEAD, MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    shown = run_cli("--version", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"grove {version('agentgrove')}\n"
