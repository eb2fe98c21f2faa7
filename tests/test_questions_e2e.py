"""An agent asks a person, end to end: the real ``grove`` CLI and ``grove worker`` processes, the
real SDK and Claude CLI against the scripted model server, the real database.

``ask_human`` ends the attempt (no CLI process is left, the agent shows ``awaiting_input``
everywhere), ``grove answer`` puts it back to pending, and the next attempt resumes the same
session with the answer as the next user message; a worker restarted while the agent waits
loses nothing; an unanswered question fails ``no_answer`` at the role's ``question_timeout_s``,
or goes on with the role's ``question_default``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind, QuestionState
from agentgrove.processes import agent_processes
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, say, tool_use
from tests.conftest import GROVE, run_cli, wait_until

pytestmark = pytest.mark.e2e

QUESTION = "Which colour should the button be?"
CONFIG = """
[worker]
poll_s = 0.1
sweep_s = 0.1
heartbeat_s = 0.3
grace_s = 0

[roles.asker]
description = "asks before it decides"
model = "claude-haiku-4-5"
system_prompt = "Ask when you must."
tools = ["Read"]
max_attempts = 1
{extra}
"""


def _configure(repo: Path, extra: str = "") -> None:
    (repo / "grove.toml").write_text(CONFIG.format(extra=extra))


def _script() -> Script:
    """The asker asks once, then says what it got in its next turn."""
    ask = Turn(
        [tool_use("mcp__grove__ask_human", {"question": QUESTION, "choices": ["red", "blue"]})]
    )
    return Script().on(role="asker", turns=[ask, say("the button is blue")])


class _Worker:
    """One ``grove worker`` process at a time, with the model server's environment."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.env: dict[str, str] = dict(os.environ)
        self.proc: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.env |= env
        self.proc = subprocess.Popen(
            [*GROVE, "worker"],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        """SIGKILL: nothing of the worker gets to tidy up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.communicate(timeout=30)

    def stop(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def worker(repo: Path) -> Iterator[_Worker]:
    started = _Worker(repo)
    yield started
    if started.proc is not None and started.proc.poll() is None:
        started.proc.kill()
        started.proc.communicate()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _spawn(repo: Path, task: str = "Choose the button's colour") -> str:
    spawned = run_cli("spawn", "asker", task, "--json", cwd=repo)
    assert spawned.returncode == 0, spawned.stderr
    agent_id: str = json.loads(spawned.stdout)["id"]
    return agent_id


def _status(repo: Path, agent_id: str) -> AgentStatus:
    with Grove.open(repo) as grove:
        return grove.get(agent_id).status


def _requests_of(server: ModelServer, agent_id: str) -> list[ModelRequest]:
    return [r for r in server.requests if r.agent_id == agent_id]


def _texts(request: ModelRequest) -> str:
    return json.dumps(request.messages)


def test_ask_human_ends_the_attempt_and_the_answer_resumes_the_same_session(
    repo: Path, worker: _Worker
) -> None:
    _configure(repo)
    with ModelServer(_script()) as server:
        assert run_cli("init", cwd=repo).returncode == 0
        agent_id = _spawn(repo)
        worker.start(server.env())
        wait_until(lambda: _status(repo, agent_id) is AgentStatus.AWAITING_INPUT, 120)
        # The attempt is over: no CLI, nothing of the agent's, left running.
        assert worker.proc is not None
        wait_until(lambda: not _children(worker.proc.pid) and not agent_processes(agent_id), 30)
        assert len(_requests_of(server, agent_id)) == 1  # no request after the question

        listed = run_cli("ls", cwd=repo)
        assert "awaiting_input" in listed.stdout and QUESTION[:20] in listed.stdout, listed
        shown = run_cli("show", agent_id, cwd=repo)
        assert QUESTION in shown.stdout and f"grove answer {agent_id}" in shown.stdout, shown
        as_json = json.loads(run_cli("show", agent_id, "--json", cwd=repo).stdout)
        assert as_json["status"] == "awaiting_input"
        [question] = as_json["questions"]
        assert (question["question"], question["choices"]) == (QUESTION, ["red", "blue"])
        assert question["state"] == "open"

        answered = run_cli("answer", agent_id[:8], "blue, like the logo", cwd=repo)
        assert answered.returncode == 0, answered.stderr
        wait_until(lambda: _status(repo, agent_id).finished, 120)
        worker.stop()
        server.assert_done()
    with Grove.open(repo) as grove:
        record = grove.get(agent_id)
        [asked] = grove.questions(agent_id)
        events = [e.kind for e in grove.store.events(agent_id=agent_id)]
    assert record.status is AgentStatus.COMPLETED, record.error
    assert record.output == "the button is blue"
    assert (asked.state, asked.answer) == (QuestionState.DELIVERED, "blue, like the logo")
    assert asked.answered_by  # the OS user
    assert "agent.question" in events and "agent.answered" in events
    first, resumed = _requests_of(server, agent_id)
    # The same session: its id, and the conversation so far, then the answer as the next
    # user message.
    assert first.session_id is not None and resumed.session_id == first.session_id
    assert "Choose the button's colour" in _texts(resumed)
    assert "mcp__grove__ask_human" in _texts(resumed)
    last = resumed.messages[-1]
    assert last["role"] == "user" and "blue, like the logo" in json.dumps(last)
    assert QUESTION in json.dumps(last)


def test_a_worker_restarted_while_the_agent_awaits_input_loses_nothing(
    repo: Path, worker: _Worker
) -> None:
    _configure(repo)
    with ModelServer(_script()) as server:
        assert run_cli("init", cwd=repo).returncode == 0
        agent_id = _spawn(repo)
        worker.start(server.env())
        wait_until(lambda: _status(repo, agent_id) is AgentStatus.AWAITING_INPUT, 120)
        worker.kill()
        answered = run_cli("answer", agent_id, "blue", cwd=repo)
        assert answered.returncode == 0, answered.stderr
        assert _status(repo, agent_id) is AgentStatus.PENDING
        worker.start({})
        wait_until(lambda: _status(repo, agent_id).finished, 120)
        worker.stop()
        server.assert_done()
    with Grove.open(repo) as grove:
        record = grove.get(agent_id)
    assert record.status is AgentStatus.COMPLETED, record.error
    first, resumed = _requests_of(server, agent_id)
    assert resumed.session_id == first.session_id
    assert "The answer: blue" in json.dumps(resumed.messages[-1])


def test_an_unanswered_question_fails_no_answer_at_the_roles_timeout(
    repo: Path, worker: _Worker
) -> None:
    _configure(repo, "question_timeout_s = 0.5")
    script = Script().on(
        role="asker", turns=[Turn([tool_use("mcp__grove__ask_human", {"question": QUESTION})])]
    )
    with ModelServer(script) as server:
        assert run_cli("init", cwd=repo).returncode == 0
        agent_id = _spawn(repo)
        worker.start(server.env())
        wait_until(lambda: _status(repo, agent_id).finished, 120)
        worker.stop()
        server.assert_done()
    with Grove.open(repo) as grove:
        record = grove.get(agent_id)
        [asked] = grove.questions(agent_id)
    assert record.status is AgentStatus.FAILED
    assert record.error_kind is ErrorKind.NO_ANSWER
    assert record.error is not None and QUESTION in record.error
    assert asked.state is QuestionState.EXPIRED
    assert len(_requests_of(server, agent_id)) == 1
    late = run_cli("answer", agent_id, "blue", cwd=repo)
    assert late.returncode == 2 and "asked nothing" in late.stderr


def test_an_unanswered_question_goes_on_with_the_roles_default(repo: Path, worker: _Worker) -> None:
    _configure(repo, 'question_timeout_s = 0.5\nquestion_default = "pick blue"')
    with ModelServer(_script()) as server:
        assert run_cli("init", cwd=repo).returncode == 0
        agent_id = _spawn(repo)
        worker.start(server.env())
        wait_until(lambda: _status(repo, agent_id).finished, 120)
        worker.stop()
        server.assert_done()
    with Grove.open(repo) as grove:
        record = grove.get(agent_id)
        [asked] = grove.questions(agent_id)
    assert record.status is AgentStatus.COMPLETED, record.error
    assert (asked.answer, asked.answered_by) == ("pick blue", "default")
    first, resumed = _requests_of(server, agent_id)
    assert resumed.session_id == first.session_id
    last = json.dumps(resumed.messages[-1])
    assert "Nobody answered your question in time" in last and "pick blue" in last
