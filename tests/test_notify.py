"""Notifications, in-process on the real stores (SQLite and PostgreSQL): which events make
one (the outbox row commits with its event), the claim that gives each to one worker, what
a notification says, and the transports against a real receiver and a real command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.metrics import render
from agentgrove.notify import Command, DeliveryFailed, Notice, NotificationKind, Webhook
from agentgrove.notify._kinds import notification_kind, payload, retry_delay_s, slack_body, summary
from agentgrove.runtime import ScriptedRuntime
from agentgrove.store._schema import events, notifications
from tests.conftest import run_cli, wait_until
from tests.notify_receiver import Receiver

ALL = "[notify]\ncommand = 'true'\n"

ONE_NODE = {"name": "one", "nodes": [{"key": "only", "role": "tester", "task": "go"}]}
TWO_NODES = {
    "name": "two",
    "nodes": [
        {"key": "left", "role": "tester", "task": "left"},
        {"key": "right", "role": "tester", "task": "right"},
    ],
}


def _grove(repo: Path, toml: str = ALL) -> Grove:
    (repo / "grove.toml").write_text(toml)
    return Grove.init(repo, runtime=ScriptedRuntime())


@pytest.mark.usefixtures("database")
def test_the_events_of_approvals_and_questions_make_their_notifications(repo: Path) -> None:
    """The gate and question events other parts of grove write (``approval.requested``,
    ``agent.question``) become ``approval_needed`` and ``question_asked``, through the store's
    own event API, in the event's transaction."""
    with _grove(repo) as grove:
        agent = grove.spawn("tester", "ask something")
        grove.store.append_event(
            agent.id, "agent.question", {"question": "Which <!channel> DB?", "choices": ["pg"]}
        )
        run = grove.start_workflow(ONE_NODE)
        grove.store.append_event(
            None, "approval.requested", {"node": "only", "gate": "before"}, run_id=run.id
        )
        claimed = grove.store.claim_notifications("w1", 10, 60)
    by_kind = {n.kind: n for n in claimed}
    assert set(by_kind) == {NotificationKind.QUESTION_ASKED, NotificationKind.APPROVAL_NEEDED}
    question = by_kind[NotificationKind.QUESTION_ASKED]
    assert (question.event, question.agent_id, question.role) == (
        "agent.question",
        agent.id,
        "tester",
    )
    assert question.data["choices"] == ["pg"]
    assert summary(question) == (
        f"grove: agent {agent.id} (tester) asks: Which <!channel> DB? (choices: pg): "
        f"grove answer {agent.id} TEXT"
    )
    approval = by_kind[NotificationKind.APPROVAL_NEEDED]
    assert (approval.run_id, approval.workflow, approval.data["node"]) == (run.id, "one", "only")
    assert payload(approval)["text"].endswith(f"grove approve {run.id} only")
    # Slack would ping the whole channel for an agent's "<!channel>": escaped, it is text.
    assert slack_body(question)["text"].count("&lt;!channel&gt;") == 1


@pytest.mark.usefixtures("database")
def test_only_the_configured_events_write_outbox_rows(repo: Path) -> None:
    with _grove(repo, "[notify]\ncommand = 'true'\nevents = ['agent_failed']\n") as grove:
        agent = grove.spawn("tester", "x")
        grove.store.append_event(agent.id, "agent.question", {"question": "?"})
        grove.store.append_event(agent.id, "agent.failed", {"error_kind": "timeout"})
        claimed = grove.store.claim_notifications("w1", 10, 60)
    assert [n.kind for n in claimed] == [NotificationKind.AGENT_FAILED]


def test_without_notify_no_event_writes_an_outbox_row(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "x")
        grove.store.append_event(agent.id, "agent.failed", {"error_kind": "timeout"})
        assert grove.store.notification_states() == {}


def test_a_node_that_never_ran_because_of_a_failure_notifies_nobody() -> None:
    kinds = frozenset(NotificationKind)
    assert notification_kind("agent.failed", {"error_kind": "dependency_failed"}, kinds) is None
    assert notification_kind("agent.failed", {"error_kind": "timeout"}, kinds) is (
        NotificationKind.AGENT_FAILED
    )
    assert notification_kind("agent.completed", {}, kinds) is None


@pytest.mark.usefixtures("database")
def test_a_workflow_run_that_ends_writes_workflow_finished_in_the_same_transaction(
    repo: Path,
) -> None:
    with _grove(repo) as grove:
        done = grove.run_workflow(ONE_NODE)
        cancelled = grove.start_workflow(TWO_NODES)
        grove.store.cancel_run(cancelled.id, datetime.now(UTC))
        grove.store.cancel_run(cancelled.id, datetime.now(UTC))  # over already: no second
        finished = [e for e in grove.store.events() if e.kind == "workflow.finished"]
        claimed = grove.store.claim_notifications("w1", 10, 60)
    assert [e.data for e in finished] == [
        {"status": "completed", "error": None},
        {"status": "cancelled", "error": "cancelled by request"},
    ]
    assert [(n.kind, n.run_id) for n in claimed] == [
        (NotificationKind.RUN_FINISHED, done.id),
        (NotificationKind.RUN_FINISHED, cancelled.id),
    ]
    assert summary(claimed[0]) == f"grove: workflow run {done.id} (one) completed"


@pytest.mark.usefixtures("database")
def test_a_budget_scope_is_exhausted_once_however_many_agents_it_refuses(repo: Path) -> None:
    with _grove(repo) as grove:
        run = grove.start_workflow(TWO_NODES, budget_usd=0.005)  # below the smallest grant
        at = datetime.now(UTC)
        for retry in range(3):  # both nodes refused, three times each
            for _ in range(2):
                assert grove.store.claim("w", 30, at=at + timedelta(seconds=10 * retry)) is None
        exhausted = [e for e in grove.store.events() if e.kind == "budget.exhausted"]
        claimed = grove.store.claim_notifications("w1", 10, 60)
    assert len(exhausted) == 1, exhausted
    assert exhausted[0].data["scope"] == f"run {run.id}"
    assert [(n.kind, n.run_id) for n in claimed] == [(NotificationKind.BUDGET_EXHAUSTED, run.id)]
    assert summary(claimed[0]).startswith(f"grove: budget exhausted: run {run.id} limit $0.01")


@pytest.mark.usefixtures("database")
def test_one_worker_holds_a_notification_and_a_dead_workers_claim_is_taken_over(
    repo: Path,
) -> None:
    with _grove(repo) as grove:
        agent = grove.spawn("tester", "x")
        grove.store.append_event(agent.id, "agent.failed", {"error_kind": "timeout"})
        first = grove.store.claim_notifications("w1", 10, 0.2)
        assert [n.attempt for n in first] == [1]
        assert grove.store.claim_notifications("w2", 10, 60) == []  # w1 holds it
        # w1 "dies": once its lease is over, w2 takes the notification over...
        with grove.store.engine.begin() as conn:
            conn.execute(
                notifications.update().values(lease_expires_at=datetime.now(UTC) - timedelta(1))
            )
        second = grove.store.claim_notifications("w2", 10, 60)
        assert [(n.id, n.attempt) for n in second] == [(first[0].id, 2)]
        # ...and w1, come back, can settle nothing of it.
        assert not grove.store.notification_sent(first[0].id, "w1", 1)
        assert grove.store.notification_sent(first[0].id, "w2", 2)
        assert grove.store.claim_notifications("w3", 10, 0) == []
        states = grove.store.notification_states()
    assert states == {first[0].id: ("sent", 2, None)}


@pytest.mark.usefixtures("database")
def test_a_failure_is_retried_then_given_up_and_counted_in_metrics(repo: Path) -> None:
    with _grove(repo) as grove:
        agent = grove.spawn("tester", "x")
        grove.store.append_event(agent.id, "agent.failed", {"error_kind": "timeout"})
        (n,) = grove.store.claim_notifications("w1", 10, 60)
        later = datetime.now(UTC) + timedelta(hours=1)
        assert grove.store.notification_failed(n.id, "w1", 1, "HTTP 500", retry_at=later)
        assert grove.store.claim_notifications("w1", 10, 60) == []  # not due before `later`
        with grove.store.engine.begin() as conn:
            conn.execute(notifications.update().values(not_before=None))
        (again,) = grove.store.claim_notifications("w1", 10, 60)
        assert grove.store.notification_failed(n.id, "w1", again.attempt, "HTTP 500", retry_at=None)
        text = render(grove.store).decode()
    assert 'grove_notifications_total{kind="agent_failed",result="failed"} 1.0' in text
    assert 'grove_notifications_total{kind="agent_failed",result="sent"} 0.0' in text
    assert "grove_notifications_queued 0.0" in text


def test_an_outbox_row_exists_exactly_when_its_event_committed(repo: Path) -> None:
    """A transaction that fails after writing a notifying event leaves neither behind."""
    with _grove(repo) as grove:
        agent = grove.spawn("tester", "x")
        with pytest.raises(RuntimeError), grove.store._write() as conn:
            grove.store._event(conn, agent.id, "agent.failed", {"error_kind": "timeout"}, None)
            raise RuntimeError("the transaction fails")
        with grove.store.engine.connect() as conn:
            assert conn.execute(notifications.select()).all() == []
            kinds = [r.kind for r in conn.execute(events.select())]
    assert "agent.failed" not in kinds


def test_retries_back_off_doubling_to_the_cap_then_give_up() -> None:
    delays = [retry_delay_s(attempt, 4, 2.0, 10.0) for attempt in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 10.0, None, None]


# -- transports, against a real receiver and a real command --------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def test_the_webhook_posts_json_with_the_id_and_reports_a_refusal_without_its_path(
    receiver: Receiver,
) -> None:
    Webhook(receiver.url, 5).send({"kind": "agent_failed"}, 42)
    ((headers, body),) = receiver.got
    assert json.loads(body) == {"kind": "agent_failed"}
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Grove-Notification"] == "42"
    receiver.status = 500
    with pytest.raises(DeliveryFailed) as failed:
        Webhook(receiver.url, 5).send({}, 43)
    assert str(failed.value) == "webhook 127.0.0.1 answered HTTP 500: nope"
    assert "SECRET" not in str(failed.value)


def test_the_command_reads_the_json_on_stdin_and_a_hanging_one_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    Command(f"cat > {out}", 10).send({"kind": "run_finished"}, 7)
    assert json.loads(out.read_text()) == {"kind": "run_finished"}
    with pytest.raises(DeliveryFailed, match=r"^command exited 3: bad thing$"):
        Command("echo bad thing >&2; exit 3", 10).send({}, 8)
    pid_file = tmp_path / "background.pid"
    with pytest.raises(DeliveryFailed, match=r"timed out after 0\.5 s"):
        Command(f"sleep 60 & echo $! > {pid_file}; sleep 30", 0.5).send({}, 9)
    # What it started in the background died with it.
    background = int(pid_file.read_text())
    wait_until(lambda: _gone(background), 10)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_a_notice_with_hostile_text_reads_as_one_plain_line() -> None:
    notice = Notice(
        id=1,
        kind=NotificationKind.AGENT_FAILED,
        event="agent.failed",
        at=datetime.now(UTC),
        agent_id="abc",
        run_id=None,
        data={"error_kind": "permanent", "error": "bad\n\x1b[31mred <@U123> & more"},
        attempt=1,
        role="tester",
    )
    assert summary(notice) == (
        "grove: agent abc (tester) failed (permanent): bad \\x1b[31mred <@U123> & more"
    )
    assert slack_body(notice) == {
        "text": "grove: agent abc (tester) failed (permanent): bad \\x1b[31mred &lt;@U123&gt; "
        "&amp; more"
    }


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ('webhook = "not a url"', "notify.webhook: Value error, not an http(s) URL"),
        ('webhook = "ftp://example.com/x"', "notify.webhook: Value error, not an http(s) URL"),
        ("command = 'true'\nevents = ['agent_failed', 'lunch']", "unknown event 'lunch'"),
        ("format = 'slack'", "say where notifications go"),
    ],
)
def test_bad_notify_settings_are_one_line_and_exit_2_at_start(
    repo: Path, setting: str, complaint: str
) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    (repo / "grove.toml").write_text(f"[notify]\n{setting}\n")
    done = run_cli("worker", "--drain", cwd=repo, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert complaint in done.stderr and "fix the file" in done.stderr, done.stderr
