"""Production hardening: timeouts kill the whole process tree, cancellation, clean-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgrove.processes import agent_processes
from agentgrove.testing import ModelServer, Script, bash, say
from tests.conftest import run_cli


@pytest.mark.e2e
def test_timeout_kills_the_cli_and_everything_it_started(repo: Path) -> None:
    # Without the bubblewrap sandbox (which would kill its children itself) grove alone is tested.
    (repo / "grove.toml").write_text('[roles.tester]\ntimeout_s = 6\n[runtime]\nsandbox = "off"\n')
    script = Script().on(
        role="tester",
        # A background server left running, then a foreground command that outlives the
        # deadline: both must be gone when the agent has failed.
        turns=[bash("(sleep 600 &) ; sleep 600"), say("never reached")],
        optional=True,
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "tester", "wait forever", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert result.returncode == 1
    assert agent["status"] == "failed" and agent["error_kind"] == "timeout"
    assert agent_processes(agent["id"]) == {}
    assert Path(agent["workspace"]["path"]).is_dir(), "the worktree is kept for inspection"


@pytest.mark.e2e
def test_a_completed_agent_leaves_no_background_process(repo: Path) -> None:
    (repo / "grove.toml").write_text('[runtime]\nsandbox = "off"\n')
    script = Script().on(
        role="tester", turns=[bash("(sleep 600 &) ; echo started"), say("left a server running")]
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "tester", "start a server", "--json", cwd=repo, env=server.env())
        server.assert_done()
    agent = json.loads(result.stdout)
    assert result.returncode == 0 and agent["status"] == "completed"
    assert agent_processes(agent["id"]) == {}


def test_gc_removes_orphans_stale_branches_and_leftover_processes(repo: Path) -> None:
    import subprocess
    import sys

    from agentgrove.grove import Grove
    from agentgrove.runtime import ScriptedRuntime
    from agentgrove.workspaces import run_git

    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        done = grove.run("tester", "finish")
        grove.run("tester", "finish too")
        # Leftovers of a crash: a worktree and branch of an agent the database never recorded,
        # and a process of a finished agent still running.
        run_git(
            ["worktree", "add", "-b", "grove/ghost", str(grove.config.worktrees_dir / "ghost")],
            repo,
        )
        run_git(["branch", "grove/deleted-agent"], repo)
        straggler = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            env={"GROVE_AGENT_ID": done.id, "PATH": "/usr/bin:/bin"},
        )
    try:
        result = run_cli("gc", cwd=repo)
        assert result.returncode == 0, result.stderr
        assert straggler.wait(timeout=10) == -9
    finally:
        straggler.kill()
        straggler.wait()
    out = result.stdout
    assert "removed 2 worktree(s) of finished agents" in out
    assert "removed 1 orphaned worktree(s): ghost" in out
    assert "grove/deleted-agent" in out and "grove/ghost" in out
    assert f"killed 1 leftover process(es): {straggler.pid} ({done.id})" in out
    branches = run_git(["branch", "--list", "grove/*"], repo)
    assert done.id in branches and "ghost" not in branches and "deleted-agent" not in branches


@pytest.mark.e2e
def test_a_planted_api_key_never_reaches_the_database_or_logs(repo: Path) -> None:
    key = "sk-ant-planted-0123456789abcdef"
    script = Script().on(
        role="tester",
        turns=[
            bash("env | grep -c ANTHROPIC || true; echo the key is $ANTHROPIC_API_KEY"),
            say(f"I found the key {key} in my environment"),
        ],
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        env = {**server.env(), "ANTHROPIC_API_KEY": key}
        result = run_cli("run", "tester", "look around", "--json", cwd=repo, env=env)
        server.assert_done()
    assert result.returncode == 0, result.stderr
    agent = json.loads(result.stdout)
    assert "[redacted:ANTHROPIC_API_KEY]" in agent["output"]
    logs = (
        run_cli("logs", agent["id"], cwd=repo).stdout
        + run_cli("show", agent["id"], cwd=repo).stdout
    )
    stored = b"".join(p.read_bytes() for p in (repo / ".grove").glob("grove.db*"))
    for place in (result.stdout, result.stderr, logs, stored.decode(errors="replace")):
        assert key not in place
