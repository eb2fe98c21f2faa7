"""What long-lived processes say: logging, not prints, in the core; text or JSON lines."""

from __future__ import annotations

import ast
import io
import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.logs import configure, say
from agentgrove.models import AgentStatus
from tests.conftest import GROVE

SRC = Path(__file__).resolve().parents[1] / "src" / "agentgrove"
UI = ("cli", "shell", "testing", "demo.py", "__main__.py")
"""What talks to the user directly (commands, the shell, the developer tools)."""

KEYS = {"time", "level", "event", "agent", "run", "worker", "message"}


def test_the_core_has_no_bare_prints() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in UI:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if is_call and node.func.id == "print":  # type: ignore[union-attr]
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"print() in the core (log through agentgrove.logs.say): {found}"


def test_json_lines_carry_every_field_and_text_keeps_the_old_lines() -> None:
    logger = logging.getLogger("agentgrove.worker")
    out = io.StringIO()
    configure("json", worker="host:1:abc", stream=out)
    try:
        say(logger, "worker.grace_over", "grace over, returning a1 to pending", agent="a1")
        say(logging.getLogger("agentgrove.service"), "agent.warning", 'say "hi"\n', run="r1")
        entries = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [set(e) for e in entries] == [KEYS, KEYS]
        assert entries[0]["event"] == "worker.grace_over" and entries[0]["agent"] == "a1"
        assert entries[0]["worker"] == "host:1:abc" and entries[0]["level"] == "warning"
        assert entries[1]["run"] == "r1" and entries[1]["message"] == 'say "hi"\n'
        text = io.StringIO()
        configure("text", stream=text)
        say(logger, "worker.grace_over", "grace over, returning a1 to pending", agent="a1")
        say(logging.getLogger("agentgrove.service"), "agent.warning", "agent a1: two\nlines")
        assert text.getvalue() == (
            "grove worker: grace over, returning a1 to pending\ngrove: agent a1: two\\nlines\n"
        )
        assert out.getvalue().count("\n") == 2, "a second configure replaces the first handler"
    finally:
        configure("text")


@pytest.mark.usefixtures("database")
def test_worker_logs_json_lines_naming_the_agent(repo: Path) -> None:
    # A scripted agent that takes an hour and a worker stopped with a short grace: the release
    # is said about that agent. Every line on stderr is one JSON object.
    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\nscripted_delay_s = 3600\n')
    with Grove.init(repo) as grove:
        agent = grove.spawn("tester", "takes an hour")
        worker = subprocess.Popen(
            [*GROVE, "worker", "--grace", "0.2", "--log-format", "json"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while grove.get(agent.id).status is not AgentStatus.EXECUTING:
                assert time.monotonic() < deadline, "the agent never started"
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    entries = [json.loads(line) for line in err.splitlines()]
    assert entries and all(set(e) == KEYS for e in entries), err
    events = [e["event"] for e in entries]
    assert events[0] == "worker.started" and events[-1] == "worker.stopped", events
    released = [e for e in entries if e["event"] == "worker.grace_over"]
    assert released and released[0]["agent"] == agent.id, entries
    assert len({e["worker"] for e in entries}) == 1 and entries[0]["worker"], entries


def test_a_bad_log_format_is_one_line(repo: Path) -> None:
    done = subprocess.run(
        [*GROVE, "worker", "--log-format", "xml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "grove: error: --log-format 'xml': use one of text, json\n"
