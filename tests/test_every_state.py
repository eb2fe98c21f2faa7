"""Every listing and view renders every state: runs in each status, agents in each status, wait
reason and failure kind, through the real ``grove`` CLI (a renderer that never saw a state
must not crash on it, e.g. a style lookup that yields ``[]running[/]`` markup)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from agentgrove.dashboard import create_app
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind, RunStatus
from agentgrove.runtime import ScriptedRuntime
from agentgrove.store._schema import agents, workflow_runs
from tests.conftest import run_cli, write_scripted_config

CHAIN = """
name: chain
nodes:
  - {key: a, role: file-writer, task: "first"}
  - {key: b, role: file-writer, depends_on: [a], task: "second"}
"""


def _views(run_id: str, agent_id: str) -> list[list[str]]:
    return [
        ["workflow", "ls"],
        ["workflow", "show", run_id],
        ["ls"],
        ["show", agent_id],
    ]


def _pages(run_id: str, agent_id: str) -> list[str]:
    return [
        "/",
        "/agents",
        f"/agents/{agent_id}",
        f"/agents/{agent_id}/tree",
        "/runs",
        f"/runs/{run_id}",
        "/usage",
    ]


@pytest.mark.timeout(900)  # dozens of real `grove` processes: slow on a loaded machine
def test_every_run_status_and_agent_state_renders_in_every_view(repo: Path) -> None:
    write_scripted_config(repo, delay_s=0, lease_s=30)
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        run = grove.run_workflow(CHAIN)
        agent_id = next(n.agent.id for n in grove.workflows.get(run.id).nodes if n.agent)
        engine = grove.store.engine
    states: list[tuple[AgentStatus, str | None, ErrorKind | None]] = [
        (AgentStatus.PENDING, None, None),
        (AgentStatus.PENDING, "waiting for budget: [daily] $1.00 left", None),
        (AgentStatus.EXECUTING, None, None),
        (AgentStatus.EXECUTING, "waiting for its children", None),
        (AgentStatus.COMPLETED, None, None),
        *((AgentStatus.FAILED, None, kind) for kind in ErrorKind),
        (AgentStatus.CANCELLED, None, None),
    ]
    combos = [(r, AgentStatus.PENDING, None, None) for r in RunStatus]
    combos += [(RunStatus.RUNNING, *state) for state in states]
    for run_status, status, reason, kind in combos:
        with engine.begin() as conn:
            conn.execute(
                update(workflow_runs)
                .where(workflow_runs.c.id == run.id)
                .values(
                    status=run_status.value,
                    error="[x] the run went wrong" if run_status is RunStatus.FAILED else None,
                )
            )
            conn.execute(
                update(agents)
                .where(agents.c.id == agent_id)
                .values(
                    status=status.value,
                    wait_reason=reason,
                    error_kind=kind.value if kind else None,
                    error="[bold]x[/] went wrong" if kind else None,
                )
            )
        for view in _views(run.id, agent_id):
            shown = run_cli(*view, cwd=repo)
            where = f"{view} with run {run_status} and agent {status}/{reason}/{kind}"
            assert shown.returncode == 0, f"{where}: {shown.stderr}"
            assert "Traceback" not in shown.stderr, where
            if view[0] == "workflow":
                assert run_status.value in shown.stdout, where
            if view[:2] == ["workflow", "show"]:
                said = "[x] the run went wrong" in shown.stdout
                assert said is (run_status is RunStatus.FAILED), where
                if reason is not None and not status.finished:
                    assert f"a: {reason}" in shown.stdout, where
            elif kind is not None and view[0] == "show":
                assert "[bold]x[/] went wrong" in shown.stdout, where
        with Grove.open(repo) as grove:
            pages = TestClient(create_app(grove))
            for page in _pages(run.id, agent_id):
                got = pages.get(page)
                where = f"{page} with run {run_status} and agent {status}/{reason}/{kind}"
                assert got.status_code == 200, f"{where}: {got.text[-500:]}"


def test_workflow_ls_without_runs_says_so(repo: Path) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    listed = run_cli("workflow", "ls", cwd=repo)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "no workflow runs: start one with `grove workflow run TEMPLATE|FILE`"
    ]


def test_piped_show_and_ls_lines_carry_no_padding(repo: Path) -> None:
    """Piped, rich would pad every line to the widest row (a long output: every line)."""
    write_scripted_config(repo, delay_s=0, lease_s=30)
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "x " * 80)
    for view in (["show", agent.id], ["ls"]):
        shown = run_cli(*view, cwd=repo)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines and all(line == line.rstrip() for line in lines), (view, lines)


def test_diff_of_a_deleted_branch_is_one_line_and_prints_nothing_else(repo: Path) -> None:
    write_scripted_config(repo, delay_s=0, lease_s=30)
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.run("tester", "look")
    assert agent.workspace is not None and agent.workspace.branch
    gone = subprocess.run(
        ["git", "update-ref", "-d", f"refs/heads/{agent.workspace.branch}"],
        cwd=repo,
        check=False,
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 0, gone.stderr
    shown = run_cli("diff", agent.id, cwd=repo)
    assert shown.returncode == 2, shown.stderr
    assert shown.stdout == ""
    [line] = shown.stderr.strip().splitlines()
    assert line.startswith(f"grove: error: branch {agent.workspace.branch} of agent {agent.id}")
    assert "it was deleted" in line
