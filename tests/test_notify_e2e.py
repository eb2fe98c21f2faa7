"""Notifications through real ``grove worker`` processes on a real database: an agent's
failure reaches a webhook on loopback (the real SDK and CLI against the scripted model), a
receiver down and then up gets it once, two workers sharing PostgreSQL send each once, the
command transport and Slack's format, and a webhook that hangs and fails neither slows the
worker nor goes uncounted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.metrics import render
from agentgrove.models import AgentStatus
from agentgrove.testing import Fault, ModelServer, Script
from tests.conftest import GROVE, wait_until
from tests.notify_receiver import Receiver, free_port

SCRIPTED = """
[runtime]
kind = "scripted"
scripted_delay_s = 0.5

[worker]
heartbeat_s = 0.3
poll_s = 0.1
grace_s = 0
concurrency = {concurrency}

[roles.failer]
description = "fails at its timeout"
model = "claude-haiku-4-5"
system_prompt = "You fail."
tools = ["Read"]
timeout_s = 0.05
max_attempts = 1

[notify]
{notify}
timeout_s = {timeout_s}
retries = {retries}
retry_base_s = 0.2
retry_max_s = 0.5
poll_s = 0.1
"""


def _configure(
    repo: Path, notify: str, *, retries: int = 50, timeout_s: float = 5, concurrency: int = 2
) -> None:
    (repo / "grove.toml").write_text(
        SCRIPTED.format(
            notify=notify, retries=retries, timeout_s=timeout_s, concurrency=concurrency
        )
    )


class _Workers:
    """``grove worker`` processes, stopped (SIGTERM, then their exit) at the end."""

    def __init__(self, repo: Path, env: dict[str, str] | None = None) -> None:
        self.repo, self.env = repo, {**os.environ, **(env or {})}
        self.procs: list[subprocess.Popen[str]] = []
        self.stderr: list[str] = []

    def start(self, *command: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [*GROVE, *(command or ["worker"])],
                cwd=self.repo,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            _, err = proc.communicate(timeout=120)
            self.stderr.append(err)
            assert proc.returncode == 0, err
        self.procs = []


@pytest.fixture
def workers(repo: Path) -> Iterator[_Workers]:
    started = _Workers(repo)
    yield started
    for proc in started.procs:
        proc.kill()
        proc.wait()


def _states(grove: Grove) -> list[tuple[str, int, str | None]]:
    return list(grove.store.notification_states().values())


@pytest.mark.e2e
def test_an_agent_failure_on_the_real_cli_reaches_the_webhook(repo: Path) -> None:
    script = Script().on(role="file-writer", turns=[Fault.status(400)])
    with ModelServer(script) as server, Receiver() as receiver:
        (repo / "grove.toml").write_text(
            f'[worker]\npoll_s = 0.1\n\n[notify]\nwebhook = "{receiver.url}"\npoll_s = 0.1\n'
        )
        with Grove.init(repo) as grove:
            agent = grove.spawn("file-writer", "Create a.txt containing a")
            workers = _Workers(repo, server.env())
            workers.start()
            try:
                wait_until(lambda: len(receiver.got) == 1, 180)
                wait_until(lambda: _states(grove) == [("sent", 1, None)], 30)
            finally:
                workers.stop()
            record = grove.get(agent.id)
    ((headers, raw),) = receiver.got
    body = json.loads(raw)
    assert record.status is AgentStatus.FAILED
    assert record.error_kind is not None
    assert body["kind"] == "agent_failed" and body["event"] == "agent.failed"
    assert (body["agent_id"], body["role"]) == (agent.id, "file-writer")
    assert body["data"]["error_kind"] == record.error_kind.value
    assert body["text"].startswith(
        f"grove: agent {agent.id} (file-writer) failed ({record.error_kind.value})"
    )
    assert headers["X-Grove-Notification"] == str(body["id"])


def test_a_receiver_down_then_up_gets_the_notification_once(repo: Path, workers: _Workers) -> None:
    port = free_port()
    _configure(repo, f'webhook = "http://127.0.0.1:{port}/hook"')
    with Grove.init(repo) as grove:
        grove.spawn("failer", "fail")
        workers.start()
        # Refused, and tried again: the receiver is not up yet.
        wait_until(lambda: any(a >= 2 and s != "sent" for s, a, _ in _states(grove)), 120)
        ((_, _, error),) = _states(grove)
        assert error is not None and "refused" in error.lower(), error
        with Receiver(port) as receiver:
            wait_until(lambda: [s for s, _, _ in _states(grove)] == ["sent"], 60)
            workers.stop()  # nothing more can come from it
        assert [b["kind"] for b in receiver.bodies()] == ["agent_failed"]


@pytest.mark.postgres
def test_two_workers_sharing_postgresql_send_each_notification_once(
    repo: Path, workers: _Workers, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROVE_DB_URL", pg_url)
    workers.env["GROVE_DB_URL"] = pg_url
    with Receiver() as receiver:
        _configure(repo, f'webhook = "{receiver.url}"', concurrency=4)
        with Grove.init(repo) as grove:
            ids = {grove.spawn("failer", f"fail {i}").id for i in range(12)}
            workers.start()
            workers.start()
            wait_until(lambda: len(_states(grove)) == 12, 180)
            wait_until(lambda: all(s == "sent" for s, _, _ in _states(grove)), 120)
            workers.stop()
            states = _states(grove)
        bodies = receiver.bodies()
    assert sorted(b["agent_id"] for b in bodies) == sorted(ids)
    assert len({b["id"] for b in bodies}) == len(bodies) == 12
    assert all(attempts == 1 for _, attempts, _ in states), states


def test_the_command_gets_each_notification_as_json_on_stdin(
    repo: Path, workers: _Workers, tmp_path: Path
) -> None:
    out = tmp_path / "notified"
    out.mkdir()
    _configure(
        repo,
        f"command = 'cat > {out}/$GROVE_NOTIFICATION_ID.json'\n"
        "events = ['agent_failed', 'run_finished']",
    )
    workflow = {"name": "doomed", "nodes": [{"key": "only", "role": "failer", "task": "go"}]}
    with Grove.init(repo) as grove:
        run = grove.start_workflow(workflow)
        workers.start()
        wait_until(lambda: len(list(out.iterdir())) == 2, 120)
        wait_until(lambda: all(s == "sent" for s, _, _ in _states(grove)), 60)
        workers.stop()
    got = sorted((json.loads(f.read_text()) for f in out.iterdir()), key=lambda body: body["kind"])
    assert [(b["kind"], b["run_id"]) for b in got] == [
        ("agent_failed", run.id),
        ("run_finished", run.id),
    ]
    assert got[0]["node"] == "only"
    assert got[1]["data"] == {"status": "failed", "error": "node only failed"}
    assert got[1]["text"] == f"grove: workflow run {run.id} (doomed) failed: node only failed"


def test_the_slack_format_posts_only_the_text(repo: Path, workers: _Workers) -> None:
    with Receiver() as receiver:
        _configure(repo, f'webhook = "{receiver.url}"\nformat = "slack"')
        with Grove.init(repo) as grove:
            agent = grove.spawn("failer", "fail")
            workers.start()
            wait_until(lambda: len(receiver.got) == 1, 120)
            workers.stop()
        assert receiver.bodies() == [
            {"text": f"grove: agent {agent.id} (failer) failed (timeout): timed out after 0.05 s"}
        ]


def test_a_hanging_failing_webhook_neither_slows_the_worker_nor_goes_uncounted(
    repo: Path, workers: _Workers
) -> None:
    with Receiver(status=500) as receiver:
        receiver.hold = threading.Event()
        # One agent at a time: were delivery in the worker's way, nothing else would run.
        _configure(repo, f'webhook = "{receiver.url}"', retries=1, timeout_s=60, concurrency=1)
        with Grove.init(repo) as grove:
            grove.spawn("failer", "fail")
            workers.start()
            wait_until(lambda: len(receiver.got) == 1, 120)  # held: no answer yet
            later = grove.spawn("file-writer", "Create b.txt containing b")
            wait_until(lambda: grove.get(later.id).status is AgentStatus.COMPLETED, 120)
            # The agent finished while the notification was still being delivered.
            assert [s for s, _, _ in _states(grove)] == ["sending"]
            receiver.hold.set()
            wait_until(lambda: [s for s, _, _ in _states(grove)] == ["failed"], 60)
            metrics = render(grove.store).decode()
            workers.stop()
        assert len(receiver.got) == 2  # the first try and its one retry
    assert 'grove_notifications_total{kind="agent_failed",result="failed"} 1.0' in metrics
    (stderr,) = workers.stderr
    said = [line for line in stderr.splitlines() if "grove notify:" in line]
    assert len(said) == 1, stderr
    assert "not delivered after 2 attempts: webhook 127.0.0.1 answered HTTP 500" in said[0]
    assert "SECRET" not in stderr


def test_grove_up_delivers_notifications_too(repo: Path, workers: _Workers) -> None:
    with Receiver() as receiver:
        _configure(repo, f'webhook = "{receiver.url}"')
        with Grove.init(repo) as grove:
            agent = grove.spawn("failer", "fail")
            workers.start("up", "--no-shell", "--no-dashboard")
            wait_until(lambda: len(receiver.got) == 1, 120)
            workers.stop()
        assert [(b["kind"], b["agent_id"]) for b in receiver.bodies()] == [
            ("agent_failed", agent.id)
        ]
