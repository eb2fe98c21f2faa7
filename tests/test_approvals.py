"""Approval gates: the pure decisions, the workflow format, and the store carrying decisions out
(in-process, the scripted runtime; the real CLI and model server are in test_approvals_e2e)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from agentgrove.approvals import (
    TIMEOUT_BY,
    ApprovalOutcome,
    check_comment,
    deadline,
    decide,
    rerun_task,
)
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind, RunStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.runtime._scripted import echo
from agentgrove.store._core import utcnow
from agentgrove.worker import Worker
from agentgrove.workflows.spec import WorkflowError, load_workflow

# -- the pure decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "approve", "attempt", "outcome"),
    [
        ("before", True, 0, ApprovalOutcome.START),
        ("before", False, 0, ApprovalOutcome.FAIL),
        ("after", True, 1, ApprovalOutcome.COMPLETE),
        ("after", True, 3, ApprovalOutcome.COMPLETE),
        ("after", False, 1, ApprovalOutcome.RERUN),
        ("after", False, 2, ApprovalOutcome.RERUN),
        ("after", False, 3, ApprovalOutcome.FAIL),
    ],
)
def test_what_a_decision_does(gate: str, approve: bool, attempt: int, outcome: str) -> None:
    assert decide(gate, approve=approve, attempt=attempt, max_attempts=3) == outcome  # type: ignore[arg-type]


def test_a_rejection_needs_a_comment_and_an_approval_does_not() -> None:
    assert check_comment(None, approve=True) is None
    assert check_comment("  fine  ", approve=True) == "fine"
    assert check_comment(" no: colour ", approve=False) == "no: colour"
    for empty in (None, "", "   \n"):
        with pytest.raises(BadInput, match="a rejection needs a reason"):
            check_comment(empty, approve=False)
    with pytest.raises(BadInput, match="NUL"):
        check_comment("a\x00b", approve=True)
    with pytest.raises(BadInput, match="keep it under"):
        check_comment("x" * 10_001, approve=False)


def test_the_rerun_task_keeps_the_task_and_adds_the_comment() -> None:
    task = rerun_task("Write the draft.", "Use British spelling.", 1)
    assert task.startswith("Write the draft.\n")
    assert "rejected the result of attempt 1" in task and "Use British spelling." in task


def test_a_gate_deadline() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert deadline(now, None) is None
    assert deadline(now, 90) == now + timedelta(seconds=90)


# -- the workflow format -----------------------------------------------------------------------


def test_gate_settings_are_validated_all_at_once() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(
            """
name: gates
nodes:
  - {key: a, role: r, task: t, approval_timeout_s: 3}
  - {key: b, role: r, task: t, approval_on_timeout: approve}
  - {key: c, role: r, task: t, approval: after, approval_on_timeout: approve}
  - {key: d, role: r, task: t, approval: before, approval_timeout_s: 5}
""",
            roles=["r"],
        )
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "workflow 'gates': node 'a': approval_timeout_s needs approval: before or after; "
        "add approval: or drop approval_timeout_s",
        "workflow 'gates': node 'b': approval_on_timeout needs approval: before or after; "
        "add approval: or drop approval_on_timeout",
        "workflow 'gates': node 'c': approval_on_timeout needs approval_timeout_s (a gate "
        "without a timeout waits for ever); add one or drop approval_on_timeout",
    ]


def test_bad_gate_values_name_the_node() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(
            """
name: gates
nodes:
  - {key: a, role: r, task: t, approval: sometimes}
  - {key: b, role: r, task: t, approval: after, approval_timeout_s: 0}
  - {key: c, role: r, task: t, approval: after, approval_timeout_s: 1, approval_on_timeout: x}
""",
            roles=["r"],
        )
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "workflow 'gates': nodes[0].approval (node 'a'): input should be 'before' or 'after'",
        "workflow 'gates': nodes[1].approval_timeout_s (node 'b'): input should be greater than 0",
        "workflow 'gates': nodes[2].approval_on_timeout (node 'c'): input should be 'reject' "
        "or 'approve'",
    ]


# -- the store carrying decisions out ----------------------------------------------------------

GATED = """
name: gated
nodes:
  - {key: plan, role: file-writer, task: "plan it", approval: before}
  - {key: draft, role: file-writer, task: "draft it", depends_on: [plan], approval: after,
     max_attempts: 2}
  - {key: ship, role: file-writer, task: "ship {{ draft.output }}", depends_on: [draft]}
"""


def _drain(grove: Grove) -> None:
    anyio.run(Worker(grove.service, grove.config.worker, drain=True).run)


def _node(grove: Grove, run_id: str, key: str) -> tuple[str, int, str]:
    node = next(n for n in grove.workflows.get(run_id).nodes if n.key == key)
    assert node.agent is not None
    return node.state, node.agent.attempt, node.agent.task


@pytest.mark.usefixtures("database")
def test_gates_hold_nodes_and_decisions_move_the_run(repo: Path) -> None:
    prompts: list[str] = []

    def recording(spec: RunSpec) -> RunResult:
        prompts.append(spec.prompt)
        return echo(spec)

    with Grove.init(repo, runtime=ScriptedRuntime(recording)) as grove:
        run = grove.start_workflow(GATED)
        _drain(grove)  # a worker passes over a node held before it starts
        assert _node(grove, run.id, "plan")[:2] == ("awaiting_approval", 0)
        assert prompts == []
        plan = grove.approve(run.id, "plan", by="ann")
        assert (plan.outcome, plan.by, plan.gate) == (ApprovalOutcome.START, "ann", "before")
        _drain(grove)
        assert _node(grove, run.id, "draft")[:2] == ("awaiting_approval", 1)
        assert [n.state for n in grove.workflows.get(run.id).nodes][2] == "waiting"
        rejected = grove.reject(run.id, "draft", "say colour", by="bob")
        assert rejected.outcome is ApprovalOutcome.RERUN
        _drain(grove)
        state, attempt, task = _node(grove, run.id, "draft")
        assert (state, attempt) == ("awaiting_approval", 2) and "say colour" in task
        assert grove.approve(run.id, "draft").outcome is ApprovalOutcome.COMPLETE
        _drain(grove)
        assert grove.workflows.get(run.id).status is RunStatus.COMPLETED
        events = [e for e in grove.store.events() if e.kind.startswith("approval.")]
    assert [p.splitlines()[0] for p in prompts] == [
        "plan it",
        "draft it",
        "draft it",
        "ship done (attempt 2): draft it",
    ]
    assert "say colour" in prompts[2] and "say colour" not in prompts[1]
    assert [(e.kind, e.data.get("node"), e.data.get("by")) for e in events] == [
        ("approval.requested", "plan", None),
        ("approval.approved", "plan", "ann"),
        ("approval.requested", "draft", None),
        ("approval.rejected", "draft", "bob"),
        ("approval.requested", "draft", None),
        ("approval.approved", "draft", events[-1].data["by"]),
    ]
    assert events[3].data["comment"] == "say colour"


def test_a_rejection_at_the_last_attempt_or_before_the_start_fails_the_run_rejected(
    repo: Path,
) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        grove.reject(run.id, "plan", "not now", by="ann")
        record = grove.workflows.get(run.id)
        assert record.status is RunStatus.FAILED and record.error == "node plan rejected"
        agent = record.nodes[0].agent
        assert agent is not None and agent.error_kind is ErrorKind.REJECTED
        assert agent.error == "rejected by ann: not now"
        assert record.nodes[1].state == "dependency_failed"

        run = grove.start_workflow(GATED)
        grove.approve(run.id, "plan")
        _drain(grove)
        grove.reject(run.id, "draft", "no", by="ann")
        _drain(grove)
        grove.reject(run.id, "draft", "still no", by="ann")  # attempt 2 of 2
        record = grove.workflows.get(run.id)
        assert record.status is RunStatus.FAILED and record.error == "node draft rejected"


def test_bad_decisions_change_nothing(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        before = grove.workflows.get(run.id)
        with pytest.raises(BadInput, match="unknown workflow run 'nope'"):
            grove.approve("nope", "plan")
        with pytest.raises(BadInput, match=r"has no node 'nada': its nodes are plan, draft, ship"):
            grove.approve(run.id, "nada")
        with pytest.raises(BadInput, match=r"'draft' of run .* is waiting for its dependencies"):
            grove.approve(run.id, "draft")
        with pytest.raises(BadInput, match="a rejection needs a reason"):
            grove.reject(run.id, "plan", " ")
        assert grove.workflows.get(run.id) == before
        grove.approve(run.id, "plan")
        with pytest.raises(BadInput, match=r"'plan' of run .* is pending, not awaiting approval"):
            grove.approve(run.id, "plan")


def test_cancelling_a_run_cancels_its_held_nodes(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        assert grove.workflows.cancel(run.id)
        record = grove.workflows.get(run.id)
        assert record.status is RunStatus.CANCELLED
        assert record.nodes[0].agent is not None
        assert record.nodes[0].agent.status is AgentStatus.CANCELLED


@pytest.mark.usefixtures("database")
def test_an_expired_gate_decides_as_configured_once(repo: Path) -> None:
    timed = """
name: timed
nodes:
  - {key: a, role: file-writer, task: "a", approval: before, approval_timeout_s: 60}
"""
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        rejecting = grove.start_workflow(timed)
        approving = grove.start_workflow(timed.replace("}", ", approval_on_timeout: approve}"))
        assert grove.store.expire_approvals(utcnow()) == []  # not yet
        later = utcnow() + timedelta(seconds=61)
        made = grove.store.expire_approvals(later)
        assert sorted((d.run_id, d.approved, d.by) for d in made) == sorted(
            [(rejecting.id, False, TIMEOUT_BY), (approving.id, True, TIMEOUT_BY)]
        )
        assert grove.store.expire_approvals(later) == []  # each gate is decided once
        assert grove.workflows.get(rejecting.id).status is RunStatus.FAILED
        assert [n.state for n in grove.workflows.get(approving.id).nodes] == ["pending"]


# -- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_approves_and_rejects_only_with_the_token(repo: Path) -> None:
    from fastapi.testclient import TestClient

    from agentgrove.dashboard import create_app

    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        approve = f"/runs/{run.id}/nodes/plan/approve"
        before = grove.workflows.get(run.id)

        read_only = TestClient(create_app(grove))
        page = read_only.get(f"/runs/{run.id}")
        assert page.status_code == 200 and "Awaiting approval" in page.text
        assert f"grove approve {run.id} plan" in page.text and approve not in page.text
        refused = read_only.post(approve, headers={"Authorization": "Bearer x"})
        assert refused.status_code == 403 and "read-only" in refused.text

        web = TestClient(create_app(grove, token="s3cret", token_name="ann@web"))
        assert web.post(approve).status_code == 403
        assert web.post(approve, headers={"Authorization": "Bearer nope"}).status_code == 403
        reject = f"/runs/{run.id}/nodes/plan/reject"
        empty = web.post(reject, data={"token": "s3cret", "comment": " "})
        assert empty.status_code == 400 and "a rejection needs a reason" in empty.text
        assert (
            web.post(f"/runs/{run.id}/nodes/nada/approve", data={"token": "s3cret"}).status_code
            == 400
        )
        assert grove.workflows.get(run.id) == before  # nothing changed

        assert approve in web.get(f"/runs/{run.id}").text  # the form, with the token
        done = web.post(approve, data={"token": "s3cret", "comment": "go"}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == f"/runs/{run.id}"
        again = web.post(approve, headers={"Authorization": "Bearer s3cret"})
        assert again.status_code == 400 and "not awaiting approval" in again.text
        [decided] = [e for e in grove.store.events() if e.kind == "approval.approved"]
        assert (decided.data["by"], decided.data["comment"]) == ("ann@web", "go")
        assert grove.workflows.get(run.id).nodes[0].state == "pending"


# -- the shell ---------------------------------------------------------------------------------


def test_the_shell_approves_and_rejects_through_the_cli_app(repo: Path) -> None:
    from agentgrove.cli import app
    from agentgrove.shell import Dispatcher
    from agentgrove.shell._completion import candidates, command_tree

    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        errors: list[str] = []
        dispatch = Dispatcher(app, write_error=errors.append)
        refused = dispatch(f"reject {run.id} plan")
        assert refused.exit_code == 2 and "a rejection needs a reason" in (refused.error or "")
        assert dispatch(f"approve {run.id} plan --comment 'from the shell'").exit_code == 0
        [decided] = [e for e in grove.store.events() if e.kind == "approval.approved"]
        assert decided.data["comment"] == "from the shell"
        assert grove.workflows.get(run.id).nodes[0].state == "pending"
        # The run id completes after the command, as for every other run_id argument.
        runs = candidates(
            command_tree(app), ["approve"], "", lambda kind: [run.id] if kind == "run" else []
        )
        assert run.id in runs


@pytest.mark.usefixtures("database")
def test_a_failed_run_does_not_wait_for_its_other_gates(repo: Path) -> None:
    spec = """
name: two-gates
nodes:
  - {key: a, role: file-writer, task: "a", approval: before}
  - {key: b, role: file-writer, task: "b", approval: before}
"""
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(spec)
        grove.reject(run.id, "a", "no", by="ann")
        record = grove.workflows.get(run.id)
        assert record.status is RunStatus.FAILED
        assert [n.state for n in record.nodes] == ["failed", "cancelled"]
        assert record.error is not None and record.error.startswith("node ")
        assert set(record.error.removeprefix("node ").split(", ")) == {"a rejected", "b cancelled"}


def test_a_gate_that_starts_waiting_notifies_approval_needed(repo: Path) -> None:
    from agentgrove.notify._kinds import NotificationKind, summary

    (repo / "grove.toml").write_text('[notify]\nwebhook = "http://127.0.0.1:9/hook"\n')
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.start_workflow(GATED)
        [notice] = grove.store.claim_notifications("w1", 10, 60)
    assert notice.kind is NotificationKind.APPROVAL_NEEDED
    assert (notice.run_id, notice.node, notice.data["gate"]) == (run.id, "plan", "before")
    assert summary(notice) == (
        f"grove: workflow run {run.id} (gated) node plan waits for approval (before): "
        f"grove approve {run.id} plan"
    )
