"""Questions without a model: the in-process scripted runtime calls ``ask_human`` through the
agent's real delegate, so the service, the store and the CLI do the rest as with the real CLI
(tests/test_questions_e2e.py). Bad input is refused the way tests/test_bad_input.py promises:
exit 2, one ``grove: error:`` line, nothing changed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from agentgrove.dashboard import create_app
from agentgrove.delegation import question_refusal
from agentgrove.errors import BadInput, UnknownAgent
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, QuestionState
from agentgrove.runtime import DelegationRefused, RunResult, RunSpec, ScriptedRuntime
from agentgrove.sessions import EarlierWork, plan_session
from tests.conftest import run_cli
from tests.test_bad_input import assert_refused, snapshot


async def _ask_once(spec: RunSpec) -> RunResult:
    """Ask on the first attempt (a second question in the same attempt is refused); after
    that, report the prompt the attempt was given."""
    if spec.attempt == 1:
        assert spec.delegate is not None
        await spec.delegate.ask_human("Which colour?", ["red", "blue"])
        with pytest.raises(DelegationRefused, match="already asked"):
            await spec.delegate.ask_human("And the size?", [])
        return RunResult(success=True, output="asked", session_id="s-1", cost_usd=0.01)
    return RunResult(success=True, output=spec.prompt, session_id="s-1")


@pytest.fixture
def asked(repo: Path) -> tuple[Grove, str]:
    grove = Grove.init(repo, runtime=ScriptedRuntime(_ask_once))
    agent = grove.run("file-writer", "Paint the button")
    return grove, agent.id


def test_ask_human_leaves_the_agent_awaiting_input_with_its_question(
    asked: tuple[Grove, str],
) -> None:
    grove, agent_id = asked
    with grove:
        record = grove.get(agent_id)
        [question] = grove.questions(agent_id)
        assert grove.questions() == [question]  # every open question
        events = [e for e in grove.store.events(agent_id=agent_id) if e.kind == "agent.question"]
    assert record.status is AgentStatus.AWAITING_INPUT
    assert record.lease_owner is None and record.reserved_usd == 0
    assert record.cost_usd == pytest.approx(0.01)  # the attempt's spend is kept
    assert record.wait_reason == "asks: Which colour?"
    assert (question.question, question.choices) == ("Which colour?", ("red", "blue"))
    assert question.state is QuestionState.OPEN and question.deadline_at is None
    [event] = events  # what the question_asked notification reads
    assert (event.data["question"], event.data["choices"]) == ("Which colour?", ["red", "blue"])


def test_the_answer_resumes_the_session_and_costs_no_retry(asked: tuple[Grove, str]) -> None:
    grove, agent_id = asked
    with grove:
        before = grove.get(agent_id)
        grove.answer(agent_id, "blue", by="alice")
        pending = grove.get(agent_id)
        assert pending.status is AgentStatus.PENDING
        assert pending.max_attempts == before.max_attempts + 1
        anyio.run(grove.execute_async, [agent_id])
        record = grove.get(agent_id)
        [question] = grove.questions(agent_id)
    assert record.status is AgentStatus.COMPLETED
    assert (
        record.output == "A person answered your question.\nYour question: Which colour?\n"
        "The answer: blue"
    )
    assert (question.state, question.answered_by) == (QuestionState.DELIVERED, "alice")


def test_cancelling_an_agent_that_awaits_input_closes_its_question(
    asked: tuple[Grove, str],
) -> None:
    grove, agent_id = asked
    with grove:
        assert grove.service.cancel(agent_id) == [agent_id]
        [question] = grove.questions(agent_id)
        assert grove.get(agent_id).status is AgentStatus.CANCELLED
    assert question.state is QuestionState.CANCELLED


def test_bad_answers_are_refused_and_change_nothing(asked: tuple[Grove, str], repo: Path) -> None:
    grove, agent_id = asked
    with grove:
        other = grove.spawn("file-writer", "never asks")
    before = snapshot(repo)
    for args, expected in [
        (("answer", agent_id, "   "), "the answer is empty"),
        (("answer", other.id, "blue"), f"agent {other.id} is pending and asked nothing"),
        (("answer", "nosuchagent", "blue"), "nosuchagent"),
        (("answer", agent_id, "bl\x1fue\udcff"), "not valid UTF-8"),
    ]:
        assert_refused(run_cli(*args, cwd=repo), expected)
    assert snapshot(repo) == before
    with Grove.open(repo) as api:
        with pytest.raises(BadInput, match="empty"):
            api.answer(agent_id, "")
        with pytest.raises(UnknownAgent):
            api.answer("nosuchagent", "blue")
        api.answer(agent_id, "blue")
        with pytest.raises(BadInput, match="asked nothing"):
            api.answer(agent_id, "blue again")  # answered already: not twice


def test_the_dashboard_answers_with_the_token_only(asked: tuple[Grove, str]) -> None:
    grove, agent_id = asked
    with grove:
        page = TestClient(create_app(grove, token="s3cret"))
        shown = page.get(f"/agents/{agent_id}")
        assert shown.status_code == 200 and "Which colour?" in shown.text
        assert 'action="/agents/' + agent_id + '/answer"' in shown.text
        form = {"answer": "blue"}
        assert page.post(f"/agents/{agent_id}/answer", data=form).status_code == 403
        assert (
            page.post(f"/agents/{agent_id}/answer", data=form | {"token": "wrong"}).status_code
            == 403
        )
        assert grove.get(agent_id).status is AgentStatus.AWAITING_INPUT
        empty = page.post(f"/agents/{agent_id}/answer", data={"answer": " ", "token": "s3cret"})
        assert empty.status_code == 400
        done = page.post(
            f"/agents/{agent_id}/answer",
            data=form | {"token": "s3cret"},
            follow_redirects=False,
        )
        assert done.status_code == 303
        [question] = grove.questions(agent_id)
        assert grove.get(agent_id).status is AgentStatus.PENDING
    assert (question.answer, question.answered_by) == ("blue", "dashboard")


def test_the_question_times_out_to_no_answer_or_the_default(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        "[roles.file-writer]\nquestion_timeout_s = 60\n\n"
        '[roles.tester]\nquestion_timeout_s = 60\nquestion_default = "blue"\n'
    )
    with Grove.init(repo, runtime=ScriptedRuntime(_ask_once)) as grove:
        silent = grove.run("file-writer", "Paint the button")
        defaulted = grove.run("tester", "Paint the button")
        [asked] = grove.questions(silent.id)
        [other] = grove.questions(defaulted.id)
        assert asked.deadline_at is not None and other.deadline_at is not None
        assert grove.store.expire_questions(at=asked.asked_at) == []  # not yet
        later = max(asked.deadline_at, other.deadline_at)
        assert sorted(grove.store.expire_questions(at=later)) == sorted([silent.id, defaulted.id])
        failed, resumed = grove.get(silent.id), grove.get(defaulted.id)
        assert grove.store.expire_questions(at=later) == []  # each once
    assert (failed.status, failed.error_kind and failed.error_kind.value) == (
        AgentStatus.FAILED,
        "no_answer",
    )
    assert resumed.status is AgentStatus.PENDING


def test_question_refusals() -> None:
    assert question_refusal("", []) is not None
    assert question_refusal("x" * 10_001, []) is not None
    assert question_refusal("ok?", ["a"] * 21) is not None
    assert question_refusal("ok?", [""]) is not None
    assert question_refusal("nul\x00?", []) is not None
    assert question_refusal("Which colour?", ["red", "blue"]) is None


def test_a_fresh_session_still_gets_the_question_and_answer() -> None:
    earlier = EarlierWork(branch="grove/a", head_commit="0" * 40, files=("a.txt",))
    resumed = plan_session(
        "task", attempt=2, session_id="s", session_here=True, earlier=earlier, answer="ANSWER"
    )
    assert (resumed.resume, resumed.prompt) == ("s", "ANSWER")
    fresh = plan_session(
        "task", attempt=2, session_id="s", session_here=False, earlier=earlier, answer="ANSWER"
    )
    assert fresh.resume is None
    assert fresh.prompt.startswith("task\n") and fresh.prompt.endswith("ANSWER")


def test_the_shell_tells_of_the_question_and_answers_it(
    asked: tuple[Grove, str], repo: Path
) -> None:
    from agentgrove.cli import app
    from agentgrove.shell._dispatch import Dispatcher
    from agentgrove.shell._notices import FinishNotices
    from agentgrove.shell._status import read_status

    grove, agent_id = asked
    with grove:
        notices = FinishNotices(grove.store)
        notices._after = 0  # from the start: the question was asked before the shell opened
        [line] = notices.poll()
        assert "awaiting_input" in line and "asks: Which colour?" in line
        assert f"answer {agent_id} TEXT" in line
        assert "awaiting input 1" in read_status(grove.store).render()
        errors: list[str] = []
        dispatch = Dispatcher(app, write_error=errors.append)
        refused = dispatch(f"answer {agent_id} ''")
        assert refused.exit_code == 2 and "empty" in (refused.error or "")
        assert dispatch(f"answer {agent_id} blue").exit_code == 0, errors
        assert grove.get(agent_id).status is AgentStatus.PENDING


def test_the_question_makes_a_question_asked_notification(repo: Path) -> None:
    from agentgrove.notify._kinds import NotificationKind, summary

    (repo / "grove.toml").write_text('[notify]\ncommand = "true"\nevents = ["question_asked"]\n')
    with Grove.init(repo, runtime=ScriptedRuntime(_ask_once)) as grove:
        agent = grove.run("file-writer", "Paint the button")
        [notice] = grove.store.claim_notifications("test", 10, 60)
    assert notice.kind is NotificationKind.QUESTION_ASKED and notice.agent_id == agent.id
    assert summary(notice).startswith(f"grove: agent {agent.id} (file-writer) asks: Which colour?")
    assert "red" in summary(notice) and "blue" in summary(notice)


CHAIN = """
name: chain
nodes:
  - {key: a, role: file-writer, task: "ask first"}
  - {key: b, role: file-writer, depends_on: [a], task: "then build"}
"""


def test_a_workflow_node_that_asks_holds_its_run_until_answered(repo: Path) -> None:
    async def ask_in_a(spec: RunSpec) -> RunResult:
        if spec.prompt == "ask first":
            return await _ask_once(spec)
        return RunResult(success=True, output=spec.prompt[:40], session_id="s-2")

    with Grove.init(repo, runtime=ScriptedRuntime(ask_in_a)) as grove:
        run = grove.run_workflow(CHAIN)  # returns: all that is left awaits input
        node_a = next(n for n in run.nodes if n.key == "a")
        assert node_a.state == "awaiting_input" and node_a.agent is not None
        assert run.status.value == "running"
        shown = run_cli("workflow", "show", run.id, cwd=repo)
        assert shown.returncode == 0 and "awaiting_input" in shown.stdout, shown.stderr
        grove.answer(node_a.agent.id, "blue")
        final = anyio.run(grove.execute_run_async, run.id)
    assert final.status.value == "completed"
    assert [n.state for n in final.nodes] == ["completed", "completed"]
