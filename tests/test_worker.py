"""AgentService and Worker on the in-process scripted runtime, in a real git repository."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker
from tests.conftest import git, run_cli


def test_run_writes_in_worktree_and_commits_with_trailers(repo: Path) -> None:
    def write(spec: RunSpec) -> RunResult:
        (spec.cwd / "out.txt").write_text("hello\n")
        return RunResult(
            success=True, output="wrote out.txt", tokens_in=7, tokens_out=3, cost_usd=0.01
        )

    with Grove.init(repo, runtime=ScriptedRuntime(write)) as grove:
        agent = grove.run("implementer", "write out.txt")
    assert agent.status is AgentStatus.COMPLETED and agent.attempt == 1
    assert (agent.tokens_in, agent.tokens_out, agent.cost_usd) == (7, 3, 0.01)
    ws = agent.workspace
    assert ws is not None and ws.branch == f"grove/{agent.id}"
    assert ws.files_changed == ("out.txt",)
    assert not (repo / "out.txt").exists()
    assert (Path(ws.worktree_path) / "out.txt").read_text() == "hello\n"
    body = git(repo, "log", "-1", "--format=%B", ws.branch)
    assert f"Grove-Agent: {agent.id}" in body and "Grove-Role: implementer" in body
    assert git(repo, "rev-parse", ws.branch) == ws.head_commit
    assert git(repo, "rev-parse", f"{ws.branch}~1") == ws.base_ref


def test_base_ref_is_where_the_branch_starts(grove: Grove, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    (repo / "later.txt").write_text("x")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "later")
    agent = grove.run("implementer", "look", base=first)
    assert agent.base_ref == first
    assert agent.workspace is not None
    assert not (Path(agent.workspace.worktree_path) / "later.txt").exists()


def test_failed_run_is_recorded_and_not_retried_when_permanent(repo: Path) -> None:
    runtime = ScriptedRuntime(
        lambda spec: RunResult(success=False, error="bad request", error_kind=ErrorKind.PERMANENT)
    )
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("tester", "fail please")
    assert agent.status is AgentStatus.FAILED and agent.error_kind is ErrorKind.PERMANENT
    assert len(runtime.runs) == 1


def test_transient_failure_is_retried_then_completes(repo: Path) -> None:
    outcomes = [
        RunResult(success=False, error="overloaded", error_kind=ErrorKind.MODEL_ERROR),
        RunResult(success=True, output="ok"),
    ]
    runtime = ScriptedRuntime(lambda spec: outcomes[spec.attempt - 1])
    with Grove.init(repo, runtime=runtime) as grove:
        grove.configure_worker(retry_base_s=0.0, poll_s=0.05)
        agent = grove.run("tester", "flaky")
        kinds = [e.kind for e in grove.store.events(agent_id=agent.id)]
    assert agent.status is AgentStatus.COMPLETED and agent.attempt == 2
    assert [s.attempt for s in runtime.runs] == [1, 2]
    assert kinds.count("agent.claimed") == 2 and "agent.released" in kinds


def test_one_agents_crash_does_not_stop_the_worker(repo: Path) -> None:
    def behave(spec: RunSpec) -> RunResult:
        if "explode" in spec.prompt:
            raise RuntimeError("runtime bug")
        return RunResult(success=True, output="fine")

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        bad = grove.spawn("tester", "explode")
        good = grove.spawn("tester", "behave")
        # A lease of 2 s, not less: a loaded CI machine held one renewal up past 0.5 s.
        grove.configure_worker(lease_s=2.0, heartbeat_s=0.1, poll_s=0.05)
        worker = Worker(grove.service, grove.config.worker, drain=True, concurrency=1)
        anyio.run(worker.run)
        assert grove.store.get_agent(good.id).status is AgentStatus.COMPLETED
        failed = grove.store.get_agent(bad.id)
    # Failed at once, naming the error (it was left executing until its lease was swept).
    assert failed.status is AgentStatus.FAILED and failed.error_kind is ErrorKind.INTERNAL
    assert failed.error == "grove error: RuntimeError: runtime bug"


def test_in_process_spawn_wakes_the_worker_without_a_poll(grove: Grove) -> None:
    grove.configure_worker(
        poll_s=60.0
    )  # a poll would take a minute: only the wake-up can be this fast

    async def main() -> None:
        worker = Worker(grove.service, grove.config.worker, concurrency=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.sleep(0)
            agent = grove.spawn("tester", "wake up")
            with anyio.fail_after(10):
                while not grove.store.get_agent(agent.id).status.finished:
                    await anyio.sleep(0.01)
            worker.request_stop()

    anyio.run(main)


def test_cancel_stops_a_running_agent_at_its_next_heartbeat(repo: Path) -> None:
    events: dict[str, anyio.Event] = {}

    async def hang(spec: RunSpec) -> RunResult:
        events["started"].set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with Grove.init(repo, runtime=ScriptedRuntime(hang)) as grove:
        grove.configure_worker(heartbeat_s=0.05)
        agent = grove.spawn("tester", "hang")

        async def main() -> None:
            events["started"] = anyio.Event()
            worker = Worker(grove.service, grove.config.worker, only={agent.id})
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await events["started"].wait()
                assert grove.service.cancel(agent.id)
                with anyio.fail_after(20):
                    while worker.in_flight:
                        await anyio.sleep(0.01)
            assert worker.in_flight == []

        anyio.run(main)
        final = grove.store.get_agent(agent.id)
    assert final.status is AgentStatus.CANCELLED


@pytest.mark.parametrize(
    "grace_s, expect", [(30.0, AgentStatus.COMPLETED), (0.0, AgentStatus.PENDING)]
)
def test_stop_lets_in_flight_finish_within_grace_else_returns_them(
    repo: Path, grace_s: float, expect: AgentStatus
) -> None:
    events: dict[str, anyio.Event] = {}

    async def slow(spec: RunSpec) -> RunResult:
        events["started"].set()
        await events["release"].wait()
        return RunResult(success=True, output="done")

    with Grove.init(repo, runtime=ScriptedRuntime(slow)) as grove:
        grove.configure_worker(grace_s=grace_s, heartbeat_s=0.05)
        agent = grove.spawn("tester", "slow")

        async def main() -> None:
            events.update(started=anyio.Event(), release=anyio.Event())
            worker = Worker(grove.service, grove.config.worker, concurrency=1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await events["started"].wait()
                worker.request_stop()
                # Stopped workers claim nothing new.
                grove.spawn("tester", "later")
                if grace_s > 0:
                    events["release"].set()  # finishes within the grace period
                # with no grace, the worker must interrupt the run itself to return

        anyio.run(main)
        final = grove.store.get_agent(agent.id)
        later = next(a for a in grove.store.list_agents() if a.task == "later")
    assert final.status is expect
    assert final.status is not AgentStatus.EXECUTING
    assert final.attempt == (1 if expect is AgentStatus.COMPLETED else 0)
    assert later.status is AgentStatus.PENDING


def test_not_a_git_repository_runs_unisolated_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    seen: list[Path] = []

    def record(spec: RunSpec) -> RunResult:
        seen.append(spec.cwd)
        return RunResult(success=True)

    with Grove.init(plain, runtime=ScriptedRuntime(record)) as grove:
        agent = grove.run("tester", "here")
        kinds = [e.kind for e in grove.store.events(agent_id=agent.id)]
    assert seen == [plain.resolve()]
    assert agent.workspace is not None and agent.workspace.state == "unisolated"
    assert agent.status is AgentStatus.COMPLETED
    assert "agent.warning" in kinds


def test_spawn_from_another_thread_wakes_the_worker(repo: Path) -> None:
    ran = threading.Event()

    def behave(spec: RunSpec) -> RunResult:
        ran.set()
        return RunResult(success=True)

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        grove.configure_worker(
            poll_s=60.0
        )  # only the wake-up can start the agent before the deadline

        async def main() -> None:
            worker = Worker(grove.service, grove.config.worker, concurrency=1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await anyio.sleep(0)
                # Spawn and wait from a plain thread, so nothing else wakes the worker's loop.
                started = await anyio.to_thread.run_sync(
                    lambda: grove.spawn("tester", "from a thread") and ran.wait(10)
                )
                worker.request_stop()
            assert started, "the worker did not wake up for a spawn from another thread"

        anyio.run(main)


def _writes(name: str, text: str) -> Callable[[RunSpec], RunResult]:
    def write(spec: RunSpec) -> RunResult:
        (spec.cwd / name).write_text(text)
        return RunResult(success=True, output=f"wrote {name}")

    return write


def test_merge_brings_a_completed_agents_work_into_the_checkout(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_writes("feature.txt", "new\n"))) as grove:
        done = grove.run("implementer", "write feature.txt")
        waiting = grove.spawn("implementer", "not run yet")
    head_before = git(repo, "rev-parse", "HEAD")
    merged = run_cli("merge", done.id[:6], cwd=repo)
    assert merged.returncode == 0, merged.stderr
    assert f"merged grove/{done.id}" in merged.stdout and "feature.txt" in merged.stdout
    assert (repo / "feature.txt").read_text() == "new\n"
    parents = git(repo, "rev-list", "--parents", "-n", "1", "HEAD").split()[1:]
    assert parents == [head_before, done.workspace.head_commit]  # one merge commit
    refused = run_cli("merge", waiting.id, cwd=repo)
    assert refused.returncode == 2
    assert f"agent {waiting.id} has no git workspace" in refused.stderr


def test_a_conflicting_merge_changes_nothing_and_names_the_files(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_writes("README.md", "agent's\n"))) as grove:
        done = grove.run("implementer", "rewrite the README")
    (repo / "README.md").write_text("mine\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qam", "mine")
    head_before = git(repo, "rev-parse", "HEAD")
    result = run_cli("merge", done.id, cwd=repo)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"merging grove/{done.id} conflicts in: README.md; nothing was changed" in result.stderr
    assert git(repo, "rev-parse", "HEAD") == head_before
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "README.md").read_text() == "mine\n"


def test_merge_never_touches_a_merge_the_user_has_in_progress(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_writes("feature.txt", "new\n"))) as grove:
        done = grove.run("implementer", "write feature.txt")
    user = ["-c", "user.name=t", "-c", "user.email=t@x.invalid"]
    git(repo, "checkout", "-q", "-b", "theirs")
    (repo / "README.md").write_text("theirs\n")
    git(repo, *user, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "-")
    (repo / "README.md").write_text("ours\n")
    git(repo, *user, "commit", "-qam", "ours")
    subprocess.run(["git", *user, "merge", "theirs"], cwd=repo, capture_output=True, check=False)
    (repo / "staged.txt").write_text("the user's own work\n")
    git(repo, "add", "staged.txt")
    result = run_cli("merge", done.id, cwd=repo)
    assert result.returncode == 2
    assert "has a merge in progress: finish it" in result.stderr
    assert git(repo, "rev-parse", "-q", "--verify", "MERGE_HEAD")  # still the user's merge
    assert (repo / "staged.txt").exists()
    assert "README.md" in git(repo, "diff", "--name-only", "--diff-filter=U")


def test_an_agent_running_for_many_leases_keeps_its_lease_against_another_sweeper(
    repo: Path,
) -> None:
    """The heartbeat task is started by a loop callback when its first renewal is due: the
    lease is renewed all the same, no callback error reaches the event loop, and another
    worker's sweep (here a thread sweeping as fast as it can) never takes the agent over."""
    renewals: list[object] = []
    loop_errors: list[dict[str, object]] = []

    async def long_run(spec: RunSpec) -> RunResult:
        # Runs until its lease was renewed for longer than one lease (each renewal seen as a
        # new expiry: 25 renewals at heartbeat_s 0.1 take 2.5 s, past lease_s 2).
        with anyio.fail_after(60):
            while len(set(renewals)) < 25:
                renewals.append(grove.store.get_agent(spec.agent_id).lease_expires_at)
                await anyio.sleep(0.02)
        return RunResult(success=True, output="done")

    with Grove.init(repo, runtime=ScriptedRuntime(long_run)) as grove:
        # A lease of 2 s, not less: a loaded CI machine held one renewal up past 0.5 s.
        grove.configure_worker(lease_s=2.0, heartbeat_s=0.1, poll_s=0.05)
        store = grove.store
        agent = grove.spawn("tester", "long")
        stop = threading.Event()
        swept: list[str] = []

        def sweeper() -> None:
            while not stop.is_set():
                swept.extend(store.sweep_expired())

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(
                lambda _loop, context: loop_errors.append(context)
            )
            worker = Worker(grove.service, grove.config.worker, only={agent.id})
            await worker.run()

        thread = threading.Thread(target=sweeper, daemon=True)
        thread.start()
        try:
            anyio.run(main)
        finally:
            stop.set()
            thread.join(timeout=30)
        final = store.get_agent(agent.id)
    assert swept == [] and loop_errors == []
    assert final.status is AgentStatus.COMPLETED and final.attempt == 1
