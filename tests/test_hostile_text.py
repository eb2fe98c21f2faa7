"""Agent text never drives the terminal: tasks, outputs, errors, role names and workflow names
full of ANSI and OSC escapes, C1 controls and rich markup are shown as plain, visible text on
every surface, and no markup in them can crash a command.

The CLI runs with a terminal-like console (``TTY_COMPATIBLE=1``), so rich would pass escapes on
if they got through; grove's own colours are the only escape sequences allowed in its output.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from agentgrove.cli._live import Snapshot, _event_line, progress_view
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord
from agentgrove.runtime import ScriptedRuntime
from agentgrove.runtime._base import RunResult, RunSpec
from agentgrove.shell._notices import notice_line
from agentgrove.store._core import utcnow
from tests.conftest import run_cli

HOSTILE = (
    "A\x1b[5;7mblink\x1b[0m "  # SGR that bleeds into what follows
    "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\ "  # OSC 8 hyperlink
    "\x1b]52;c;ZXZpbA==\x07 "  # OSC 52: write the clipboard
    "\x1b]0;title\x07 "  # window title
    "over\rwrite back\x08space "
    "\x9b2J "  # C1 CSI: clear the screen
    "\u202eevil "  # right-to-left override
    "[red]x[/] [/] :warning: [link=http://evil.example]click[/link] [bold]"
)
ROLE = "ev[/]il\x1b[5mrole:warning:"
# What grove itself writes: SGR colours and styles. Nothing else may reach the terminal.
_GROVE_SGR = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"TTY_COMPATIBLE": "1", "FORCE_COLOR": "1", "COLUMNS": "200"}


def assert_inert(shown: str) -> None:
    """No escape but grove's own colours; the hostile text visible as text."""
    rest = _GROVE_SGR.sub("", shown)
    for byte in ("\x1b", "\x9b", "\x07", "\x08", "\r", "\u202e"):
        assert byte not in rest, f"{byte!r} reached the terminal in {shown!r}"
    assert "\x1b[5;7m" not in shown and "\x1b[5m" not in shown
    assert "⚠" not in shown, "an emoji code was replaced"


def _behaviour(spec: RunSpec) -> RunResult:
    if "fail" in spec.prompt:
        return RunResult(success=False, error=HOSTILE)
    return RunResult(success=True, output=HOSTILE, tokens_in=1, tokens_out=1, cost_usd=0.001)


@pytest.fixture
def hostile(repo: Path) -> Iterator[tuple[Grove, dict[str, AgentRecord]]]:
    """Agents whose task, output, error and role are hostile, and a workflow run named so."""
    toml_role = ROLE.replace("\x1b", "\\u001b")
    (repo / "grove.toml").write_text(
        f'[runtime]\nkind = "scripted"\n\n[roles."{toml_role}"]\ntools = ["Read"]\n'
        f'description = "{toml_role} [red]x"\nmodel = "claude-sonnet-4-5"\n'
        'system_prompt = "You read."\n'
    )
    with Grove.init(repo, runtime=ScriptedRuntime(_behaviour)) as grove:
        agents = {
            "output": grove.run("tester", HOSTILE),
            "error": grove.run("tester", "fail " + HOSTILE),
            "role": grove.run(ROLE, "a role whose name is markup"),
        }
        workflow = {
            "name": HOSTILE,
            "description": HOSTILE,
            "nodes": [{"key": "first", "role": ROLE, "task": HOSTILE}],
        }
        run = grove.run_workflow(workflow)
        assert run.status.value == "completed"
        node_agent = run.nodes[0].agent
        assert node_agent is not None
        yield grove, agents | {"run": node_agent}


def _cli(repo: Path, *args: str, code: int = 0) -> str:
    result = run_cli(*args, cwd=repo, env=TERMINAL)
    assert result.returncode == code, result.stderr
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    return result.stdout + result.stderr


def test_every_command_shows_hostile_text_as_text(
    repo: Path, hostile: tuple[Grove, dict[str, AgentRecord]]
) -> None:
    grove, agents = hostile
    run_id = grove.store.list_runs()[0].id
    shown = _cli(repo, "ls")
    assert "ev[/]il" in shown
    for agent in agents.values():
        shown = _cli(repo, "show", agent.id)
        assert "[red]x[/]" in shown and ":warning:" in shown and "[link=http://evil" in shown
        assert "\\x1b]8;;http://evil" in shown, "the escape is shown, not obeyed"
        _cli(repo, "logs", agent.id)
    assert "ev[/]il" in _cli(repo, "roles")
    assert "[red]x" in _cli(repo, "workflow", "ls")
    assert "[red]x" in _cli(repo, "workflow", "show", run_id)
    _cli(repo, "budget")
    # Running, with its progress and summary, from the CLI's own scripted runtime (it echoes
    # the task as the output).
    assert "[red]x" in _cli(repo, "run", "tester", HOSTILE)
    flow = repo / "hostile.yaml"
    # YAML's double-quoted strings take JSON's escapes: the task holds the real control bytes.
    flow.write_text(
        'name: "\\e[5mflow[/] [red]x :warning:"\n'
        f"nodes:\n  - key: only\n    role: tester\n    task: {json.dumps(HOSTILE)}\n"
    )
    assert "flow[/] [red]x" in _cli(repo, "workflow", "run", str(flow), "--wait")
    # A role name that is stored stays harmless after the role left grove.toml.
    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\n')
    assert "ev[/]il" in _cli(repo, "ls")
    _cli(repo, "show", agents["role"].id)


def test_the_live_view_and_the_shell_notices_show_hostile_text_as_text(
    hostile: tuple[Grove, dict[str, AgentRecord]],
) -> None:
    grove, agents = hostile
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, emoji=False)
    records = tuple(agents.values())
    console.print(progress_view(Snapshot(title=HOSTILE, agents=records), now=utcnow()))
    for kind, data in (
        ("agent.tool_use", {"tool": HOSTILE, "input": {"command": HOSTILE}}),
        ("agent.tool_result", {"is_error": True, "content": HOSTILE}),
        ("agent.warning", {"message": HOSTILE}),
    ):
        line = _event_line(agents["output"].id, kind, data, tool_calls=True)
        assert line is not None
        console.print(line)
    assert_inert(out.getvalue())
    assert "ev[/]il" in out.getvalue()
    for agent in agents.values():
        notice = notice_line(grove.get(agent.id))
        assert "\x1b" not in notice and "\x9b" not in notice and "\r" not in notice
        assert "\\x1b" in notice or agent is agents["role"]


def test_the_dashboard_escapes_hostile_text(hostile: tuple[Grove, dict[str, AgentRecord]]) -> None:
    from fastapi.testclient import TestClient

    from agentgrove.dashboard import create_app

    grove, agents = hostile
    client = TestClient(create_app(grove))
    pages = ["/", "/agents", "/runs"] + [f"/agents/{a.id}" for a in agents.values()]
    pages.append(f"/runs/{grove.store.list_runs()[0].id}")
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert "<link" not in response.text.replace('<link rel="stylesheet"', "")
        assert 'href="http://evil' not in response.text
        assert "[red]x[/]" in response.text or page in ("/", "/runs")


def test_visible_writes_out_every_control_character() -> None:
    from agentgrove.text import one_line, plain, visible

    assert visible("a\x1b[31mb\x9bc\x00d\x7fe\u202ef\tg\nh\ri") == (
        "a\\x1b[31mb\\x9bc\\x00d\\x7fe\\u202ef\tg\nh\\ri"
    )
    assert visible("a\nb\tc", newlines=False) == "a\\nb\\tc"
    assert visible(None) == ""
    assert one_line("x\x1b[2J\n\ny", 100) == "x\\x1b[2J y"
    assert plain("[red]x[/] :warning:").plain == "[red]x[/] :warning:"


def test_visible_writes_out_the_arabic_letter_mark_and_tag_characters() -> None:
    from agentgrove.text import visible

    # U+061C reorders like the other bidirectional marks; tag characters (U+E0000-U+E007F)
    # are invisible, and spell hidden ASCII ("ignore" here) that a model still reads.
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "ignore")
    assert visible(f"a\u061cb\U000e0001{hidden}\U000e007fc") == (
        "a\\u061cb\\U000e0001"
        + "".join(f"\\U000e00{ord(c):02x}" for c in "ignore")
        + "\\U000e007fc"
    )
    assert visible("\U000e0080\u061b", newlines=False) == "\U000e0080\u061b"  # neighbours
