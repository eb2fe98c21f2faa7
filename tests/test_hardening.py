"""Production hardening: timeouts kill the whole process tree, cancellation, clean-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from agentgrove.processes import agent_processes, kill_agent_processes, marker_env
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
    # Branches no agent of this grove owns may be the user's: reported, never deleted
    # (tests/test_gc_safety.py); the finished agents' branches never moved, so they go.
    assert (
        "kept 2 branch(es) no agent of this grove owns (grove never deletes them): "
        "grove/deleted-agent, grove/ghost" in out
    )
    assert "deleted 2 merged branch(es) of finished agents" in out
    assert f"killed 1 leftover process(es): {straggler.pid} ({done.id})" in out
    branches = run_git(["branch", "--list", "grove/*"], repo)
    assert done.id not in branches and "ghost" in branches and "deleted-agent" in branches


def test_a_worker_cleans_up_a_crash_on_start_up_and_a_one_shot_run_does_not(repo: Path) -> None:
    from agentgrove.grove import Grove
    from agentgrove.runtime import ScriptedRuntime
    from agentgrove.workspaces import run_git

    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\n')
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        done = grove.run("tester", "finish")
        ghost = grove.config.worktrees_dir / "ghost"
        run_git(["worktree", "add", "-b", "grove/ghost", str(ghost)], repo)
        run_git(["branch", "grove/deleted-agent"], repo)
        straggler = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            env={"GROVE_AGENT_ID": done.id, "PATH": "/usr/bin:/bin"},
        )
    try:
        # A one-shot `grove run` starts at once and leaves the leftovers alone...
        one_shot = run_cli("run", "tester", "quick", cwd=repo)
        assert one_shot.returncode == 0, one_shot.stderr
        assert "start-up clean-up" not in one_shot.stderr
        assert straggler.poll() is None and ghost.is_dir()
        # ...a long-lived worker clears them before its first claim, and says so.
        worker = run_cli("worker", "--drain", cwd=repo)
        assert worker.returncode == 0, worker.stderr
        assert straggler.wait(timeout=10) == -9
    finally:
        straggler.kill()
        straggler.wait()
    assert "start-up clean-up: removed 1 orphaned worktree(s): ghost" in worker.stderr
    assert f"start-up clean-up: killed 1 leftover process(es): {straggler.pid}" in worker.stderr
    assert not ghost.exists()
    # Branches hold work: a worker's start-up clean-up touches none (only `grove gc` may).
    assert "branch" not in worker.stderr
    assert "deleted-agent" in run_git(["branch", "--list", "grove/*"], repo)


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


@pytest.mark.e2e
def test_the_cli_sees_only_allow_listed_environment(repo: Path) -> None:
    (repo / "grove.toml").write_text('[runtime]\nenv_allow = ["MY_TOOL_*"]\n')
    script = Script().on(
        role="tester", turns=[bash("env | sort > seen-env.txt; echo saved"), say("saved")]
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        env = {
            **server.env(),
            "DATABASE_PASSWORD": "hunter2-not-for-agents",
            "AWS_SECRET_ACCESS_KEY": "aws-not-for-agents",
            "MY_TOOL_HOME": "/opt/my-tool",
        }
        result = run_cli("run", "tester", "save env", "--json", cwd=repo, env=env)
        server.assert_done()
    assert result.returncode == 0, result.stderr
    agent = json.loads(result.stdout)
    seen = (Path(agent["workspace"]["path"]) / "seen-env.txt").read_text()
    names = {line.split("=", 1)[0] for line in seen.splitlines() if "=" in line}
    assert "DATABASE_PASSWORD" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert "hunter2" not in seen and "aws-not-for-agents" not in seen
    assert "GROVE_CLI_DROP" not in names, "the wrapper's own variable is gone too"
    assert {"PATH", "HOME", "MY_TOOL_HOME", "GROVE_AGENT_ID"} <= names


@pytest.mark.e2e
def test_rate_limit_honours_retry_after_slows_the_model_and_the_retry_resumes(
    repo: Path,
) -> None:
    from datetime import datetime

    import anyio

    from agentgrove.grove import Grove
    from agentgrove.models import AgentStatus
    from agentgrove.runtime.claude import ClaudeRuntime
    from agentgrove.testing import Fault, ModelRequest, TurnSpec, write_file

    retry_after_s = 3.0
    seen: list[ModelRequest] = []
    limited = {"left": 2}  # the first try and the CLI's one retry of the second turn

    def model(request: ModelRequest) -> TurnSpec:
        seen.append(request)
        if request.turn_index == 0:
            return write_file("first.txt", "from attempt 1\n")
        if limited["left"] > 0:
            limited["left"] -= 1
            return Fault.status(429, retry_after=retry_after_s)
        return say("finished after the rate limit")

    with ModelServer(Script(model)) as server:
        runtime = ClaudeRuntime(env={**server.env(), "CLAUDE_CODE_MAX_RETRIES": "1"})
        (repo / "grove.toml").write_text("[worker]\nretry_base_s = 0\npoll_s = 0.1\n")
        with Grove.init(repo, runtime=runtime) as grove:
            agent = grove.spawn("file-writer", "write first.txt")
            anyio.run(grove.execute_async, [agent.id])
            final = grove.store.get_agent(agent.id)
            events = grove.store.events(agent_id=agent.id)
            pace = grove.service.pacer.pace(final.model)
    assert final.status is AgentStatus.COMPLETED, final.error
    assert final.attempt == 2
    kinds = [e.kind for e in events]
    assert any(e.kind == "agent.api_retry" and e.data["status"] == 429 for e in events)
    [released] = [e for e in events if e.kind == "agent.released"]
    not_before = datetime.fromisoformat(released.data["not_before"])
    # Grove's own backoff (base 0 here) waits at least the Retry-After the API asked for.
    assert (not_before - released.at).total_seconds() >= retry_after_s - 0.5
    claims = [e for e in events if e.kind == "agent.claimed"]
    assert len(claims) == 2 and kinds.count("agent.completed") == 1
    assert claims[1].at >= not_before
    assert pace is not None and pace < 60, "the model's start pace slowed down after the 429"
    # The retry resumed the Claude session: its first request carries attempt 1's Write call
    # (a fresh session would start at turn 0 and write first.txt again).
    after = [r for r in seen if r.turn_index >= 1]
    assert after and all(r.turn_index >= 1 for r in seen[seen.index(after[0]) :])
    assert sum(1 for r in seen if r.turn_index == 0) == 1
    assert final.workspace is not None
    assert (Path(final.workspace.worktree_path) / "first.txt").read_text() == "from attempt 1\n"


def _marked_sleeper(agent_id: str, attempt: int) -> subprocess.Popen[bytes]:
    """A stand-in for a CLI left running by one attempt of an agent, returned once it runs
    with its marker (between fork and exec /proc shows the parent's environment, which made
    a lookup right after the spawn miss it now and then)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={"PATH": "/usr/bin:/bin", **marker_env(agent_id, attempt)},
    )
    marker = next(iter(marker_env(agent_id, attempt).items()))
    wanted = f"{marker[0]}={marker[1]}".encode()
    deadline = time.monotonic() + 30
    while wanted not in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0"):
        assert time.monotonic() < deadline, "the sleeper never started"
        time.sleep(0.01)
    return proc


def test_processes_are_told_apart_by_attempt() -> None:
    first, second = _marked_sleeper("a1b2c3d4e5f6", 1), _marked_sleeper("a1b2c3d4e5f6", 2)
    other = _marked_sleeper("ffffeeeedddd", 1)
    try:
        assert set(agent_processes("a1b2c3d4e5f6")) == {first.pid, second.pid}
        assert set(agent_processes("a1b2c3d4e5f6", attempt=2)) == {second.pid}
        assert set(agent_processes("a1b2c3d4e5f6", before_attempt=2)) == {first.pid}
        # A worker presumed dead kills only its own attempt's processes.
        assert kill_agent_processes("a1b2c3d4e5f6", attempt=1) == [first.pid]
        assert first.wait(timeout=10) == -9
        assert second.poll() is None and other.poll() is None
    finally:
        for proc in (first, second, other):
            proc.kill()
            proc.wait()


def test_a_new_attempt_stops_what_a_presumed_dead_attempt_left_running(repo: Path) -> None:
    from datetime import timedelta

    from agentgrove.grove import Grove
    from agentgrove.models import AgentStatus
    from agentgrove.runtime import ScriptedRuntime
    from agentgrove.store._core import utcnow

    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("tester", "survive a presumed-dead worker")
        # Attempt 1's worker claimed it and went silent; its CLI is still running here.
        claimed = grove.store.claim("silent-worker", 30, agent_id=agent.id)
        assert claimed is not None and claimed.attempt == 1
        left = _marked_sleeper(agent.id, 1)
        try:
            assert grove.store.sweep_expired(at=utcnow() + timedelta(seconds=60)) == [agent.id]
            anyio.run(grove.execute_async, [agent.id])
            final = grove.store.get_agent(agent.id)
            assert left.wait(timeout=10) == -9, "attempt 1's process was stopped"
        finally:
            left.kill()
            left.wait()
        warnings = [
            e.data["message"]
            for e in grove.store.events(agent_id=agent.id)
            if e.kind == "agent.warning"
        ]
    assert final.status is AgentStatus.COMPLETED and final.attempt == 2
    assert f"stopped 1 process(es) left by an earlier attempt: {left.pid}" in warnings
