"""Approval gates end to end: a real ``grove worker`` process running the real SDK and Claude CLI
against the scripted model server, decided through the real ``grove approve`` / ``grove reject``;
and the bad input those commands refuse, changing nothing."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, say
from tests.conftest import GROVE, run_cli, wait_until

CONFIG = """
[worker]
heartbeat_s = 0.3
poll_s = 0.1
sweep_s = 0.2
grace_s = 0
"""


def _user_texts(request: ModelRequest) -> list[str]:
    """The text of every user message of a request, in order."""
    texts = []
    for message in request.messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts.append(
            "\n".join(
                str(b.get("text"))
                for b in blocks or []
                if isinstance(b, dict) and b.get("type") == "text"
            )
        )
    return texts


class _Worker:
    """One ``grove worker`` process, stopped with SIGTERM at the end (killed if it must be)."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*GROVE, "worker"],
            cwd=repo,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=120)
        return err


@pytest.fixture
def served(repo: Path, tmp_path: Path) -> Iterator[tuple[ModelServer, list[str]]]:
    """The scripted model server answering every request by what its task says (and what the
    handler saw last, for the test to read), with a ``grove worker`` on it."""
    (repo / "grove.toml").write_text(CONFIG)
    assert run_cli("init", cwd=repo).returncode == 0

    def answer(request: ModelRequest) -> Turn:
        last = _user_texts(request)[-1] if request.messages else ""
        if "COMMENT:" in last:
            return say("DRAFT v2 colour")
        for marker in ("SIDE", "PLAN", "BUILD", "GATE", "AUTO", "NEXT", "PUBLISH"):
            if f"{marker}-NODE" in request.prompt:
                return say(f"{marker.lower()} done")
        if "DRAFT-NODE" in request.prompt:
            return say("DRAFT v1 color")
        return say("unexpected")

    with ModelServer(Script.from_handler(answer)) as server:
        worker = _Worker(repo, server.env())
        try:
            yield server, []
        finally:
            err = worker.stop()
            assert worker.proc.returncode == 0, err


def _start(repo: Path, tmp_path: Path, yaml: str) -> str:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml)
    started = run_cli("workflow", "run", str(path), cwd=repo)
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


def _nodes(repo: Path, run_id: str) -> dict[str, dict[str, object]]:
    with Grove.open(repo) as grove:
        run = grove.workflows.get(run_id)
        return {
            n.key: {
                "state": n.state,
                "attempt": n.agent.attempt if n.agent else 0,
                "agent": n.agent.id if n.agent else None,
                "output": n.agent.output if n.agent else None,
                "run": run.status.value,
                "error": run.error,
            }
            for n in run.nodes
        }


def _asked(server: ModelServer, marker: str) -> list[int]:
    """The positions of the requests whose task names ``marker``."""
    return [i for i, r in enumerate(server.requests) if marker in r.prompt]


BEFORE = """
name: gated-before
nodes:
  - {key: side, role: file-writer, task: "SIDE-NODE: say hi"}
  - {key: plan, role: file-writer, task: "PLAN-NODE: say the plan", approval: before}
  - {key: build, role: file-writer, task: "BUILD-NODE: {{ plan.output }}", depends_on: [plan]}
"""


@pytest.mark.e2e
def test_a_before_gate_sends_nothing_to_the_model_until_approved(
    repo: Path, tmp_path: Path, served: tuple[ModelServer, list[str]]
) -> None:
    server, _ = served
    run_id = _start(repo, tmp_path, BEFORE)
    # The worker ran everything it may: the node beside the gate is done.
    wait_until(lambda: _nodes(repo, run_id)["side"]["state"] == "completed", 120)
    nodes = _nodes(repo, run_id)
    assert nodes["plan"]["state"] == "awaiting_approval" and nodes["plan"]["attempt"] == 0
    assert nodes["build"]["state"] == "waiting"
    assert _asked(server, "PLAN-NODE") == [] and _asked(server, "BUILD-NODE") == []

    shown = run_cli("workflow", "show", run_id, cwd=repo)
    assert "awaiting_approval" in shown.stdout
    assert f"plan: awaiting approval before it starts: grove approve {run_id} plan" in shown.stdout
    as_json = json.loads(run_cli("workflow", "show", run_id, "--json", cwd=repo).stdout)
    assert [n["state"] for n in as_json["nodes"]] == ["completed", "awaiting_approval", "waiting"]
    agent = str(nodes["plan"]["agent"])
    listed = run_cli("ls", cwd=repo).stdout
    assert any(agent in line and "awaiting_approval" in line for line in listed.splitlines())
    assert "awaiting_approval" in run_cli("show", agent, cwd=repo).stdout
    assert json.loads(run_cli("show", agent, "--json", cwd=repo).stdout)["approval_gate"] == (
        "before"
    )

    asked_before = len(server.requests)
    approved = run_cli("approve", run_id, "plan", "--comment", "go ahead", cwd=repo)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == (
        f"{run_id}: approved node plan as {getpass.getuser()}: it starts now"
    )
    wait_until(lambda: _nodes(repo, run_id)["plan"]["run"] != "running", 120)
    assert _nodes(repo, run_id)["build"]["run"] == "completed"
    plan_asked = _asked(server, "PLAN-NODE")
    assert plan_asked and min(plan_asked) >= asked_before
    assert _asked(server, "BUILD-NODE")
    logged = run_cli("logs", agent, "--json", cwd=repo).stdout.splitlines()
    decided = [json.loads(line) for line in logged if '"approval.approved"' in line]
    assert [(d["data"]["by"], d["data"]["comment"]) for d in decided] == [
        (getpass.getuser(), "go ahead")
    ]


AFTER = """
name: gated-after
nodes:
  - {key: draft, role: file-writer, task: "DRAFT-NODE: write the draft", approval: after,
     max_attempts: 2}
  - {key: publish, role: file-writer, task: "PUBLISH-NODE: {{ draft.output }}",
     depends_on: [draft]}
"""

COMMENT = "COMMENT: use British spelling (colour, not color)"


@pytest.mark.e2e
def test_an_after_gate_holds_dependents_and_a_rejection_reruns_with_the_comment(
    repo: Path, tmp_path: Path, served: tuple[ModelServer, list[str]]
) -> None:
    server, _ = served
    run_id = _start(repo, tmp_path, AFTER)
    wait_until(lambda: _nodes(repo, run_id)["draft"]["state"] == "awaiting_approval", 120)
    nodes = _nodes(repo, run_id)
    assert (nodes["draft"]["attempt"], nodes["draft"]["output"]) == (1, "DRAFT v1 color")
    assert nodes["publish"]["state"] == "waiting" and _asked(server, "PUBLISH-NODE") == []

    asked_before = len(server.requests)
    rejected = run_cli("reject", run_id, "draft", "--comment", COMMENT, cwd=repo)
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected node draft" in rejected.stdout and "runs again" in rejected.stdout
    wait_until(
        lambda: (
            _nodes(repo, run_id)["draft"]
            == {**_nodes(repo, run_id)["draft"], "state": "awaiting_approval", "attempt": 2}
        ),
        120,
    )
    # The rerun's request carries the reviewer's comment as its newest user message.
    reruns = server.requests[asked_before:]
    assert reruns and any(COMMENT in _user_texts(r)[-1] for r in reruns)
    assert not any(COMMENT in "".join(_user_texts(r)) for r in server.requests[:asked_before])
    assert _nodes(repo, run_id)["draft"]["output"] == "DRAFT v2 colour"
    assert _asked(server, "PUBLISH-NODE") == []

    assert run_cli("approve", run_id, "draft", cwd=repo).returncode == 0
    wait_until(lambda: _nodes(repo, run_id)["draft"]["run"] != "running", 120)
    assert _nodes(repo, run_id)["publish"]["run"] == "completed"
    [published] = _asked(server, "PUBLISH-NODE")
    assert "DRAFT v2 colour" in server.requests[published].prompt


TIMEOUTS = """
name: timed
nodes:
  - {key: gate, role: file-writer, task: "GATE-NODE: never", approval: before,
     approval_timeout_s: 0.3}
"""

AUTO = """
name: auto
nodes:
  - {key: auto, role: file-writer, task: "AUTO-NODE: go", approval: after,
     approval_timeout_s: 0.3, approval_on_timeout: approve}
  - {key: next, role: file-writer, task: "NEXT-NODE: {{ auto.output }}", depends_on: [auto]}
"""


@pytest.mark.e2e
def test_gates_time_out_in_the_worker_as_configured(
    repo: Path, tmp_path: Path, served: tuple[ModelServer, list[str]]
) -> None:
    server, _ = served
    rejected = _start(repo, tmp_path, TIMEOUTS)
    wait_until(lambda: _nodes(repo, rejected)["gate"]["run"] != "running", 120)
    gate = _nodes(repo, rejected)["gate"]
    assert (gate["run"], gate["error"], gate["state"]) == ("failed", "node gate rejected", "failed")
    assert _asked(server, "GATE-NODE") == []
    shown = json.loads(run_cli("show", str(gate["agent"]), "--json", cwd=repo).stdout)
    assert shown["error_kind"] == "rejected"
    assert shown["error"] == "rejected by grove (timeout): no decision within 0.3s"

    approved = _start(repo, tmp_path, AUTO)
    wait_until(lambda: _nodes(repo, approved)["auto"]["run"] != "running", 120)
    assert _nodes(repo, approved)["next"]["run"] == "completed"
    assert _asked(server, "AUTO-NODE") and _asked(server, "NEXT-NODE")


@pytest.mark.e2e
def test_a_gate_times_out_at_its_deadline_not_at_the_next_sweep(repo: Path, tmp_path: Path) -> None:
    # Sweeps an hour apart: only a sweep scheduled by the gate's own deadline decides it
    # before the deadline below.
    (repo / "grove.toml").write_text(CONFIG.replace("sweep_s = 0.2", "sweep_s = 3600"))
    assert run_cli("init", cwd=repo).returncode == 0

    def answer(request: ModelRequest) -> Turn:
        return say("next done" if "NEXT-NODE" in request.prompt else "auto done")

    with ModelServer(Script.from_handler(answer)) as server:
        worker = _Worker(repo, server.env())
        try:
            run_id = _start(repo, tmp_path, AUTO)
            # The gate opens once AUTO's attempt completes (after the worker's first sweep);
            # its 0.3 s approve-on-timeout then lets NEXT run.
            wait_until(lambda: _nodes(repo, run_id)["next"]["run"] != "running", 60)
            nodes = _nodes(repo, run_id)
        finally:
            err = worker.stop()
    assert worker.proc.returncode == 0, err
    assert nodes["next"]["run"] == "completed" and nodes["next"]["state"] == "completed"
    assert _asked(server, "AUTO-NODE") and _asked(server, "NEXT-NODE")


# -- bad input ---------------------------------------------------------------------------------

GATED = """
name: gated
nodes:
  - {key: plan, role: file-writer, task: "plan", approval: before}
  - {key: build, role: file-writer, task: "build", depends_on: [plan]}
"""


def test_bad_decisions_are_one_line_exit_2_and_change_nothing(repo: Path, tmp_path: Path) -> None:
    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\n')
    assert run_cli("init", cwd=repo).returncode == 0
    run_id = _start(repo, tmp_path, GATED)

    def state() -> str:
        return run_cli("workflow", "show", run_id, "--json", cwd=repo).stdout

    before = state()
    cases = [
        (["approve", "nosuchrun", "plan"], "unknown workflow run 'nosuchrun'"),
        (["approve", run_id, "nada"], f"run {run_id} has no node 'nada': its nodes are plan"),
        (["approve", run_id, "build"], "node 'build' of run"),
        (["reject", run_id, "build", "--comment", "no"], "not awaiting approval"),
        (["reject", run_id, "plan"], "a rejection needs a reason: give --comment TEXT"),
        (["reject", run_id, "plan", "--comment", "  "], "a rejection needs a reason"),
    ]
    for args, said in cases:
        result = run_cli(*args, cwd=repo)
        assert result.returncode == 2, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("grove: error: ") and said in line, (args, line)
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert state() == before, args

    # A node that waits no more: approving it again is refused, and changes nothing.
    assert run_cli("approve", run_id, "plan", cwd=repo).returncode == 0
    after = state()
    again = run_cli("approve", run_id, "plan", cwd=repo)
    assert again.returncode == 2
    assert "is pending, not awaiting approval" in again.stderr
    assert state() == after
