"""The inbox: what waits for a person (gates and questions) as one list, through the API, the
real `grove inbox` and the dashboard's page (in-process, the scripted runtime; the page in
Chromium with a real worker and the real CLI is tests/test_inbox_browser.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from agentgrove.dashboard import create_app
from agentgrove.grove import Grove
from agentgrove.inbox import inbox_items
from agentgrove.models import AgentRecord, AgentStatus, QuestionRecord, QuestionState
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from tests.conftest import run_cli

GATED = """
name: gated
nodes:
  - key: draft
    role: file-writer
    task: "Write the draft"
    approval: before
"""


async def _ask_or_write(spec: RunSpec) -> RunResult:
    """A tester asks which colour on its first attempt; anything else just completes."""
    if spec.role.name == "tester" and spec.attempt == 1:
        assert spec.delegate is not None
        await spec.delegate.ask_human("Which colour?", ["red", "blue"])
        return RunResult(success=True, output="asked", session_id="s-1")
    return RunResult(success=True, output=f"done: {spec.prompt[:20]}", session_id="s-1")


@pytest.fixture
def waiting(repo: Path, tmp_path: Path) -> tuple[Grove, str, str]:
    """A run whose node waits at its `before` gate, then an agent that asked a question."""
    grove = Grove.init(repo, runtime=ScriptedRuntime(_ask_or_write))
    flow = tmp_path / "gated.yaml"
    flow.write_text(GATED)
    run = grove.start_workflow(flow)
    asker = grove.run("tester", "Paint the button")
    return grove, run.id, asker.id


def _agent(agent_id: str, status: AgentStatus, created: datetime, **fields: object) -> AgentRecord:
    return AgentRecord(
        id=agent_id,
        role="file-writer",
        model="m",
        task="t",
        status=status,
        created_at=created,
        **fields,  # type: ignore[arg-type]
    )


def test_items_are_gates_and_open_questions_oldest_first() -> None:
    t0 = datetime(2026, 12, 3, tzinfo=UTC)
    gate = _agent(
        "g1",
        AgentStatus.AWAITING_APPROVAL,
        t0,
        workflow_run_id="r1",
        node_key="draft",
        approval_gate="after",
    )
    asker = _agent("q1", AgentStatus.AWAITING_INPUT, t0)
    answered = _agent("q2", AgentStatus.PENDING, t0)  # answered meanwhile: not listed
    question = QuestionRecord(
        "x1", "q1", 1, "Which?", t0 + timedelta(seconds=5), QuestionState.OPEN
    )
    stale = QuestionRecord("x2", "q2", 1, "Old?", t0, QuestionState.OPEN)
    items = inbox_items(
        [gate, _agent("p1", AgentStatus.PENDING, t0)],
        [question, stale],
        {"q1": asker, "q2": answered},
        {"g1": t0 + timedelta(seconds=9)},  # the after gate was asked for when it had run
    )
    assert [(i.kind, i.agent.id) for i in items] == [("question", "q1"), ("approval", "g1")]
    assert items[1].asks == "review node draft's result: approve it, or reject it with a comment"
    assert items[1].command.startswith("grove approve r1 draft")
    assert items[0].command == "grove answer q1 TEXT"


def test_the_api_and_grove_inbox_list_both_and_empty_says_so(
    waiting: tuple[Grove, str, str], repo: Path
) -> None:
    grove, run_id, asker_id = waiting
    with grove:
        items = grove.inbox()
        assert [(i.kind, i.run_id if i.kind == "approval" else i.agent.id) for i in items] == [
            ("approval", run_id),
            ("question", asker_id),
        ]
        listed = run_cli("inbox", cwd=repo)
        assert listed.returncode == 0, listed.stderr
        assert f"grove approve {run_id} draft" in listed.stdout
        assert "Which colour? [red | blue]" in listed.stdout
        assert f"grove answer {asker_id} TEXT" in listed.stdout
        as_json = json.loads(run_cli("inbox", "--json", cwd=repo).stdout)
        assert [e["kind"] for e in as_json] == ["approval", "question"]
        assert as_json[0]["gate"] == "before" and as_json[1]["question"]["choices"] == [
            "red",
            "blue",
        ]
        grove.approve(run_id, "draft", by="alice")
        grove.answer(asker_id, "blue", by="alice")
        assert grove.inbox() == []
    empty = run_cli("inbox", cwd=repo)
    assert (empty.returncode, empty.stdout) == (0, "nothing waits for a person\n")


def test_the_page_lists_them_with_forms_and_a_decision_comes_back_to_it(
    waiting: tuple[Grove, str, str],
) -> None:
    grove, run_id, asker_id = waiting
    with grove:
        read_only = TestClient(create_app(grove)).get("/inbox").text
        assert f"grove approve {run_id} draft" in read_only and "<form" not in read_only
        web = TestClient(create_app(grove, token="s3cret"))
        page = web.get("/inbox").text
        assert f'action="/runs/{run_id}/nodes/draft/approve"' in page
        assert f'action="/agents/{asker_id}/answer"' in page
        assert "<option>red</option>" in page
        fragment = web.get("/inbox?fragment=1").text
        assert "<html" not in fragment and f'data-inbox-agent="{asker_id}"' in fragment
        approved = web.post(
            f"/runs/{run_id}/nodes/draft/approve",
            data={"token": "s3cret", "next": "/inbox"},
            follow_redirects=False,
        )
        assert (approved.status_code, approved.headers["location"]) == (303, "/inbox")
        # Only a page of this dashboard: anything else goes back to where it would have.
        answered = web.post(
            f"/agents/{asker_id}/answer",
            data={"token": "s3cret", "answer": "red", "next": "//evil.example/x"},
            follow_redirects=False,
        )
        assert answered.headers["location"] == f"/agents/{asker_id}"

        assert grove.get(asker_id).status is AgentStatus.PENDING
        anyio.run(grove.execute_run_async, run_id)
        assert grove.store.get_run(run_id).status.value == "completed"
        assert "Nothing waits for a person." in web.get("/inbox").text


@pytest.mark.parametrize(
    "sly",
    ["//evil.example", "/\\evil.example", "/\t/evil.example", "/%2F%2Fevil.example", "https://x"],
)
def test_a_form_goes_back_only_to_a_page_of_the_dashboard(sly: str) -> None:
    from agentgrove.dashboard._actions import _next

    assert _next({"next": "/inbox"}, "/runs/r1") == "/inbox"
    assert _next({"next": sly}, "/runs/r1") == "/runs/r1"
