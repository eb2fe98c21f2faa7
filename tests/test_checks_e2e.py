"""Checks end to end: the real `grove` CLI, the real SDK and Claude CLI (resuming its session
for a fix round), real bubblewrap and git, against the scripted model server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentgrove.testing import (
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    say,
    strip_system_reminders,
    write_file,
)
from tests.conftest import git, run_cli

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
]

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
CHECK = "grep -q 'a + b' calc.py || { echo 'FAIL: add(2, 3) != 5 in calc.py'; exit 1; }"


def _last_user_text(request: ModelRequest) -> str:
    """The text of the last user message (a resumed session's new prompt), the CLI's
    reminders left out."""
    content = request.messages[-1].get("content") if request.messages else None
    if isinstance(content, str):
        return strip_system_reminders(content).strip()
    blocks = content if isinstance(content, list) else []
    texts = [b.get("text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    return strip_system_reminders("\n".join(str(t) for t in texts)).strip()


def _fix_after_seeing_the_check(seen: list[str]) -> Any:
    def turn(request: ModelRequest) -> Turn:
        text = _last_user_text(request)
        seen.append(text)
        if text.startswith("The check failed with exit code 1") and "FAIL: add(2, 3)" in text:
            return write_file("calc.py", FIXED)
        return say("I was not told what the check said")

    return turn


def test_a_red_check_gets_a_fix_round_in_the_same_session_and_then_passes(repo: Path) -> None:
    seen: list[str] = []
    script = Script().on(
        role="implementer",
        turns=[
            write_file("calc.py", BUGGY),
            say("Wrote add in calc.py"),
            _fix_after_seeing_the_check(seen),
            say("Fixed add: it adds now"),
        ],
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "run",
            "implementer",
            "Write add() in calc.py",
            "--check",
            CHECK,
            "--json",
            cwd=repo,
            env=server.env(),
        )
        server.assert_done()
    assert result.returncode == 0, (seen, result.stderr)
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", agent["error"]
    assert seen and seen[0].startswith("The check failed with exit code 1: ")
    assert agent["check"] == {
        "command": CHECK,
        "status": "passed",
        "rounds": 2,
        "exit_code": 0,
        "duration_ms": agent["check"]["duration_ms"],
        "output_tail": "",
    }
    assert git(repo, "show", f"{agent['workspace']['branch']}:calc.py") == FIXED.strip()
    listed = run_cli("ls", cwd=repo).stdout
    assert "passed (2 rounds)" in listed
    shown = run_cli("show", agent["id"], cwd=repo).stdout
    assert CHECK in shown and "passed (2 rounds), exit 0" in shown
    events = run_cli("logs", agent["id"], "--json", cwd=repo).stdout.splitlines()
    rounds = [json.loads(e)["data"] for e in events if json.loads(e)["kind"] == "agent.check"]
    assert [(r["round"], r["status"], r["exit_code"]) for r in rounds] == [
        (1, "failed", 1),
        (2, "passed", 0),
    ]


def test_a_check_red_after_every_round_fails_check_failed_with_the_work_on_its_branch(
    repo: Path,
) -> None:
    (repo / "grove.toml").write_text(
        "[roles.implementer]\ncheck = \"echo 'still failing'; exit 4\"\nfix_rounds = 1\n"
    )
    script = Script().on(
        role="implementer",
        turns=[
            write_file("work.py", "print('work')\n"),
            say("Wrote work.py"),
            say("I cannot make it pass"),
        ],
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "run", "implementer", "Write work.py", "--json", cwd=repo, env=server.env()
        )
        server.assert_done()
    assert result.returncode == 1, result.stderr
    agent = json.loads(result.stdout)
    assert agent["status"] == "failed" and agent["error_kind"] == "check_failed"
    check = agent["check"]
    assert (check["status"], check["rounds"], check["exit_code"]) == ("failed", 2, 4)
    assert check["output_tail"] == "still failing\n"
    assert git(repo, "show", f"{agent['workspace']['branch']}:work.py") == "print('work')"
    assert "failed (2 rounds)" in run_cli("ls", cwd=repo).stdout
