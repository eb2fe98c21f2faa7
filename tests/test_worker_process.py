"""`grove worker` as a real process: the real CLI against the scripted model, SIGTERM handling
(T4 and T5 of the fault tests), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.processes import agent_processes
from agentgrove.testing import Fault, ModelServer, Script, say, write_file
from tests.conftest import GROVE

pytestmark = pytest.mark.e2e


def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.05)


def _processes_in(path: Path) -> list[int]:
    """PIDs whose working directory is ``path`` (a CLI left running in a worktree)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == path:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _start_worker(repo: Path, server: ModelServer, grace_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GROVE, "worker", "--grace", str(grace_s)],
        cwd=repo,
        env={**os.environ, **server.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.usefixtures("database")
def test_sigterm_with_long_grace_lets_the_agent_finish_on_the_same_worker(repo: Path) -> None:
    script = Script().on(
        role="file-writer",
        turns=[Fault.slow(2.0, write_file("slow.txt", "done\n")), say("Created slow.txt")],
    )
    with ModelServer(script) as server, Grove.init(repo) as grove:
        agent = grove.spawn("file-writer", "Create slow.txt")
        worker = _start_worker(repo, server, grace_s=120)
        _until(lambda: grove.store.get_agent(agent.id).status is AgentStatus.EXECUTING)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=120)
        final = grove.store.get_agent(agent.id)
        claims = [e for e in grove.store.events(agent_id=agent.id) if e.kind == "agent.claimed"]
        assert worker.returncode == 0, err
        assert final.status is AgentStatus.COMPLETED, (final, err)
        server.assert_done()
    assert "SIGTERM" in err
    assert final.status is AgentStatus.COMPLETED and final.attempt == 1
    assert len(claims) == 1
    assert final.workspace is not None and final.workspace.files_changed == ("slow.txt",)


@pytest.mark.usefixtures("database")
def test_sigterm_with_short_grace_returns_the_agent_to_pending_and_kills_the_cli(
    repo: Path,
) -> None:
    script = Script().on(role="file-writer", turns=[Fault.slow(3600, say("never"))], optional=True)
    with ModelServer(script) as server, Grove.init(repo) as grove:
        agent = grove.spawn("file-writer", "Create nothing, slowly")
        worker = _start_worker(repo, server, grace_s=0.5)
        _until(lambda: len(server.requests) > 0)  # the CLI is running and waiting on the model
        worktree = grove.config.worktrees_dir / agent.id
        assert _processes_in(worktree), "the CLI should be running in the worktree"
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        final = grove.store.get_agent(agent.id)
        kinds = [e.kind for e in grove.store.events(agent_id=agent.id)]
    assert worker.returncode == 0, err
    assert final.status is AgentStatus.PENDING
    assert final.attempt == 0, "a shutdown must not use up an attempt"
    assert final.lease_owner is None
    assert "agent.released" in kinds
    _until(lambda: not _processes_in(worktree), timeout_s=10)


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
@pytest.mark.usefixtures("database")
def test_on_postgresql_a_spawn_elsewhere_wakes_a_waiting_worker_at_once(repo: Path) -> None:
    # The worker would poll only once a minute: only the NOTIFY of the spawn's commit can start
    # the agent before the deadline below.
    (repo / "grove.toml").write_text('[runtime]\nkind = "scripted"\n\n[worker]\npoll_s = 60\n')
    with Grove.init(repo) as grove:
        worker = subprocess.Popen(
            [*GROVE, "worker"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            first = grove.spawn("tester", "picked up at start-up")
            _until(lambda: grove.get(first.id).status is AgentStatus.COMPLETED, timeout_s=30)
            second = grove.spawn("tester", "spawned while the worker waits")
            _until(lambda: grove.get(second.id).status is AgentStatus.COMPLETED, timeout_s=30)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err


def test_cancel_stops_a_running_cli_and_everything_it_started(repo: Path) -> None:
    # The real CLI waits on a model that answers in an hour; `grove cancel` from another
    # process: the worker's next heartbeat sees it, stops the run and kills the CLI's tree.
    (repo / "grove.toml").write_text("[worker]\nheartbeat_s = 0.3\n")
    script = Script().on(role="file-writer", turns=[Fault.slow(3600, say("never"))], optional=True)
    with ModelServer(script) as server, Grove.init(repo) as grove:
        agent = grove.spawn("file-writer", "Create nothing, slowly")
        worker = _start_worker(repo, server, grace_s=30)
        try:
            _until(lambda: len(server.requests) > 0)  # the CLI runs, waiting on the model
            worktree = grove.config.worktrees_dir / agent.id
            assert _processes_in(worktree) and agent_processes(agent.id)
            cancelled = subprocess.run(
                [*GROVE, "cancel", agent.id], cwd=repo, capture_output=True, text=True, check=False
            )
            assert cancelled.returncode == 0, cancelled.stderr
            _until(lambda: not agent_processes(agent.id), timeout_s=30)
            final = grove.store.get_agent(agent.id)
            claims = [e for e in grove.store.events(agent_id=agent.id) if e.kind == "agent.claimed"]
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert final.status is AgentStatus.CANCELLED
    assert not _processes_in(worktree)
    assert len(claims) == 1, "a cancelled agent is never retried"
    assert f"{agent.id} attempt 1: lease not renewed" in err
