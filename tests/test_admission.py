"""Admission: concurrency limits by role, model and in all (across workers), per-model pace that
backs off on 429s, and the memory threshold."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgrove.admission import (
    AdmissionGate,
    Exclusions,
    ModelPacer,
    RunningCounts,
    exclusions,
    limits_concurrency,
    memory_refusal,
)
from agentgrove.errors import ConfigError
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.runtime._scripted import echo
from agentgrove.settings import AdmissionSettings
from agentgrove.worker import Worker
from tests.conftest import GROVE, run_cli

# -- the pure decisions --------------------------------------------------------------------


def test_exclusions_pass_over_what_is_full() -> None:
    settings = AdmissionSettings(max_running=5, per_role={"implementer": 2}, per_model={"m": 3})
    assert limits_concurrency(settings) and not limits_concurrency(AdmissionSettings())

    def counts(total: int, roles: dict[str, int], models: dict[str, int]) -> RunningCounts:
        return RunningCounts(total, roles, models)

    assert exclusions(settings, counts(2, {"implementer": 1}, {"m": 1})) == Exclusions()
    full_role = exclusions(settings, counts(2, {"implementer": 2}, {"m": 2}))
    assert full_role == Exclusions(roles=frozenset({"implementer"}))
    full_model = exclusions(settings, counts(3, {"tester": 3}, {"m": 3}), paced_out={"p"})
    assert full_model == Exclusions(models=frozenset({"m", "p"}))
    in_all = exclusions(settings, counts(5, {}, {}))
    assert in_all.full == "5 agents running, limit 5"
    assert exclusions(settings, None, paced_out={"p"}) == Exclusions(models=frozenset({"p"}))


def test_memory_refusal() -> None:
    settings = AdmissionSettings(min_available_mb=500)
    assert memory_refusal(settings, 499) is not None
    assert memory_refusal(settings, 500) is None
    assert memory_refusal(settings, None) is None  # unknown never blocks
    # Agents still starting have not taken their memory yet: each counts 220 MB already gone.
    assert memory_refusal(settings, 500 + 2 * 220, starting=2) is None
    refused = memory_refusal(settings, 500 + 2 * 220 - 1, starting=2)
    assert refused is not None and "2 agent(s) still starting" in refused


def _start(pacer: ModelPacer, model: str, now: float) -> float:
    """What a claim does: start when the pacer allows (counting the start), else wait."""
    delay = pacer.delay(model, now)
    if delay == 0.0:
        pacer.take(model, now)
    return delay


def test_pacer_admits_its_rate_then_spaces_starts() -> None:
    pacer = ModelPacer({"m": 6})
    assert [_start(pacer, "m", 0.0) for _ in range(6)] == [0.0] * 6
    assert _start(pacer, "m", 0.0) == pytest.approx(10.0)  # one token per 10 s at 6/min
    assert pacer.paced_out(0.0) == {"m"}
    assert _start(pacer, "m", 10.0) == 0.0
    assert _start(pacer, "unpaced", 0.0) == 0.0 and pacer.pace("unpaced") is None


def test_pacer_halves_on_429_holds_for_retry_after_and_recovers() -> None:
    pacer = ModelPacer({"m": 8})
    pacer.rate_limited("m", 0.0, 30.0)
    assert pacer.pace("m") == 4.0
    pacer.rate_limited("m", 5.0, 30.0)  # the same episode: not halved again
    assert pacer.pace("m") == 4.0
    assert _start(pacer, "m", 20.0) == pytest.approx(15.0)  # held until 35 s
    first = _start(pacer, "m", 35.0)
    assert first == pytest.approx(15.0)  # the bucket refills at the halved pace after the hold
    started = 35.0 + first
    assert _start(pacer, "m", started) == 0.0
    assert pacer.pace("m") == 5.0  # one more per minute with each start
    later = started
    for _ in range(10):
        later += 60.0
        assert _start(pacer, "m", later) == 0.0
    assert pacer.pace("m") == 8.0  # back to the configured pace, never above


def test_a_429_slows_even_an_unpaced_model() -> None:
    pacer = ModelPacer()
    pacer.rate_limited("m", 0.0, 12.0)
    assert _start(pacer, "m", 1.0) == pytest.approx(11.0)
    assert pacer.paced_out(1.0) == {"m"}


@given(
    rpm=st.integers(min_value=1, max_value=120),
    times=st.lists(st.floats(min_value=0, max_value=600), min_size=1, max_size=200),
)
def test_pacer_never_starts_more_than_its_rate_allows(rpm: int, times: list[float]) -> None:
    pacer = ModelPacer({"m": rpm})
    admitted = [t for t in sorted(times) if _start(pacer, "m", t) == 0.0]
    # Token bucket: at most `rpm` at once, then `rpm` per minute.
    for start in admitted:
        window = [t for t in admitted if start <= t < start + 60.0]
        assert len(window) <= 2 * rpm


def test_bad_admission_settings_are_one_line(repo: Path) -> None:
    (repo / "grove.toml").write_text("[admission]\nper_role = {implementer = 0}\n")
    with pytest.raises(ConfigError, match=r"admission\.per_role.*a limit must be 1 or more"):
        Grove.init(repo)


# -- the worker and the store ----------------------------------------------------------------


def _grove_with(repo: Path, runtime: ScriptedRuntime, admission: str) -> Grove:
    """A grove whose grove.toml has these ``[admission]`` lines (and a quick worker poll)."""
    (repo / "grove.toml").write_text(f"[worker]\npoll_s = 0.05\n\n[admission]\n{admission}\n")
    return Grove.init(repo, runtime=runtime)


class _Overlap:
    """A runtime behaviour that records how many agents of each role run at once, and holds
    each run until enough have been seen to prove a limit works or fails."""

    def __init__(self, hold_s: float = 0.3) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_total = 0
        self.hold_s = hold_s

    async def __call__(self, spec: RunSpec) -> RunResult:
        self.now[spec.role.name] += 1
        self.most[spec.role.name] = max(self.most[spec.role.name], self.now[spec.role.name])
        self.most_total = max(self.most_total, sum(self.now.values()))
        try:
            # A run lasts long enough for the worker to try to start everything else.
            await anyio.sleep(self.hold_s)
            return echo(spec)
        finally:
            self.now[spec.role.name] -= 1


def test_role_limit_holds_and_other_roles_pass_the_waiting_ones(repo: Path) -> None:
    overlap = _Overlap()
    with _grove_with(repo, ScriptedRuntime(overlap), "per_role = {implementer = 1}") as grove:
        ids = [grove.spawn("implementer", f"build {i}").id for i in range(3)]
        ids += [grove.spawn("tester", f"test {i}").id for i in range(2)]
        anyio.run(Worker(grove.service, grove.config.worker, concurrency=4, drain=True).run)
        agents = [grove.store.get_agent(i) for i in ids]
        claims = [e for e in grove.store.events() if e.kind == "agent.claimed"]
    assert all(a.status is AgentStatus.COMPLETED for a in agents)
    assert all(a.attempt == 1 for a in agents)
    assert len(claims) == 5, "full roles are passed over, never claimed and put back"
    assert overlap.most["implementer"] == 1
    assert overlap.most_total >= 2, "testers ran beside the implementer"


def test_model_limit_and_total_limit(repo: Path) -> None:
    overlap = _Overlap()
    with _grove_with(repo, ScriptedRuntime(overlap), "max_running = 2") as grove:
        for i in range(5):
            grove.spawn("tester", f"test {i}", model="m-a" if i % 2 else "m-b")
        anyio.run(Worker(grove.service, grove.config.worker, concurrency=5, drain=True).run)
    assert overlap.most_total == 2
    overlap.most_total = 0
    with _grove_with(repo, ScriptedRuntime(overlap), 'per_model = {"m-a" = 1}') as grove:
        for i in range(4):
            grove.spawn("implementer", f"build {i}", model="m-a")
        anyio.run(Worker(grove.service, grove.config.worker, concurrency=4, drain=True).run)
        counts = grove.store.count_by_status()
    assert overlap.most["implementer"] == 1
    assert counts == {AgentStatus.COMPLETED: 9}


def test_a_waiting_parent_does_not_hold_its_roles_slot(repo: Path) -> None:
    async def delegate(spec: RunSpec) -> RunResult:
        if "parent" in spec.prompt:
            assert spec.delegate is not None
            child = await spec.delegate.spawn_agent("implementer", "child work")
            [done] = await spec.delegate.wait_agents([child], 60)
            return RunResult(success=True, output=f"child said {done['output']}")
        return echo(spec)

    with _grove_with(repo, ScriptedRuntime(delegate), "per_role = {implementer = 1}") as grove:
        parent = grove.run("implementer", "parent work")
    assert parent.status is AgentStatus.COMPLETED
    assert parent.output is not None and "child said done" in parent.output


def test_a_parent_working_beside_its_child_still_holds_its_slot(repo: Path) -> None:
    # Only waiting gives the slot back: while the parent works on after spawning, a role limit
    # of 1 keeps its child pending, though the worker has free slots.
    stores: list[Any] = []
    seen: list[AgentStatus] = []

    async def behave(spec: RunSpec) -> RunResult:
        if "parent" not in spec.prompt:
            return echo(spec)
        assert spec.delegate is not None
        child = await spec.delegate.spawn_agent("implementer", "child work")
        for _ in range(15):  # working on, not waiting
            seen.append(stores[0].get_agent(child).status)
            await anyio.sleep(0.03)
        [done] = await spec.delegate.wait_agents([child], 60)
        return RunResult(success=True, output=f"child said {done['output']}")

    with _grove_with(repo, ScriptedRuntime(behave), "per_role = {implementer = 1}") as grove:
        stores.append(grove.store)
        parent = grove.spawn("implementer", "parent work")
        worker = Worker(grove.service, grove.config.worker, concurrency=3, drain=True)
        anyio.run(worker.run)
        final = grove.get(parent.id)
    assert seen == [AgentStatus.PENDING] * 15
    assert final.status is AgentStatus.COMPLETED
    assert final.output is not None and "child said done" in final.output


def test_no_agent_starts_while_memory_is_short(repo: Path) -> None:
    available = {"mb": 100}
    probes: list[int] = []

    def probe() -> int:
        probes.append(available["mb"])
        return available["mb"]

    async def scenario(grove: Grove, agent_id: str) -> AgentStatus:
        worker = Worker(grove.service, grove.config.worker, only={agent_id}, memory_probe=probe)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(30):
                while len(probes) < 5:  # the worker looked several times and waited
                    await anyio.sleep(0.01)
            assert grove.store.get_agent(agent_id).status is AgentStatus.PENDING
            available["mb"] = 10_000
        return grove.store.get_agent(agent_id).status

    with _grove_with(repo, ScriptedRuntime(), "min_available_mb = 500") as grove:
        agent = grove.spawn("tester", "needs memory")
        final = anyio.run(scenario, grove, agent.id)
    assert final is AgentStatus.COMPLETED


def test_a_burst_of_starts_cannot_all_pass_one_memory_reading(repo: Path) -> None:
    # 600 MB available, 500 needed: one CLI fits, and while it starts (its 220 MB not yet
    # visible) a second must not. Released, the first ends and the second may start.
    probes: list[int] = []
    release = anyio.Event()

    def probe() -> int:
        probes.append(600)
        return 600

    async def hold(spec: RunSpec) -> RunResult:
        await release.wait()
        return echo(spec)

    async def scenario(grove: Grove, ids: list[str]) -> list[AgentStatus]:
        worker = Worker(
            grove.service, grove.config.worker, concurrency=2, drain=True, memory_probe=probe
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(30):
                while len(probes) < 5:  # it looked again and again with a free slot
                    await anyio.sleep(0.01)
            statuses = sorted(grove.store.get_agent(i).status.value for i in ids)
            assert statuses == ["executing", "pending"], statuses
            release.set()
        return [grove.store.get_agent(i).status for i in ids]

    with _grove_with(repo, ScriptedRuntime(hold), "min_available_mb = 500") as grove:
        ids = [grove.spawn("tester", f"needs memory {i}").id for i in range(2)]
        final = anyio.run(scenario, grove, ids)
    assert final == [AgentStatus.COMPLETED, AgentStatus.COMPLETED]


def _until(condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.05)


LIMITS_OF_ONE = {
    "per-role": "per_role = {implementer = 1}",
    "per-model": 'per_model = {"m-limited" = 1}',
    "in-all": "max_running = 1",
}


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize("limit", list(LIMITS_OF_ONE.values()), ids=list(LIMITS_OF_ONE))
def test_limits_hold_across_worker_processes(repo: Path, limit: str) -> None:
    (repo / "grove.toml").write_text(
        """
[runtime]
kind = "scripted"
scripted_delay_s = 0.4

[worker]
concurrency = 3
poll_s = 0.05
heartbeat_s = 0.3
lease_s = 5

[admission]
"""
        + limit
        + "\n"
    )
    assert run_cli("init", cwd=repo).returncode == 0
    # Both workers are up and polling before any agent exists, so every claim is a race
    # between the two processes.
    workers = [
        subprocess.Popen(
            [*GROVE, "worker"],
            cwd=repo,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stderr is not None
            ready, _, _ = select.select([w.stderr], [], [], 60)
            assert ready, "a worker never started"
            assert "concurrency 3" in w.stderr.readline()
        with Grove.open(repo) as grove:
            ids = [grove.spawn("implementer", f"build {i}", model="m-limited").id for i in range(4)]
            _until(
                lambda: all(grove.store.get_agent(i).status is AgentStatus.COMPLETED for i in ids)
            )
        for w in workers:
            assert w.poll() is None, "both workers were polling throughout"
            w.send_signal(signal.SIGTERM)
        for w in workers:
            _, err = w.communicate(timeout=60)
            assert w.returncode == 0, err
    finally:
        for w in workers:
            w.kill()
    with Grove.open(repo) as grove:
        agents = [grove.store.get_agent(i) for i in ids]
        steps = [
            e.kind
            for e in grove.store.events(limit=10_000)
            if e.agent_id in ids and e.kind in ("agent.claimed", "agent.completed")
        ]
    assert all(a.status is AgentStatus.COMPLETED and a.attempt == 1 for a in agents)
    # Events in id order: a claim's event is written after it saw the previous agent's
    # completion committed, so ids give the real order (timestamps are taken before each
    # transaction waits for its lock). Never two limited agents running at once.
    assert steps == ["agent.claimed", "agent.completed"] * len(ids), steps


def test_ls_says_which_limit_holds_a_pending_agent_back(repo: Path) -> None:
    (repo / "grove.toml").write_text("[admission]\nper_role = {implementer = 1}\n")
    assert run_cli("init", cwd=repo).returncode == 0
    with Grove.open(repo) as grove:
        first = grove.spawn("implementer", "one")
        second = grove.spawn("implementer", "two")
        tester = grove.spawn("tester", "three")
        claimed = grove.store.claim("someone", 60, agent_id=first.id)
        assert claimed is not None
    listed = run_cli("ls", "--json", cwd=repo)
    assert listed.returncode == 0, listed.stderr
    reasons = {a["id"]: a["wait_reason"] for a in json.loads(listed.stdout)}
    assert reasons[second.id] == "waiting for a slot: role implementer at its limit of 1"
    assert reasons[first.id] is None and reasons[tester.id] is None
    table = run_cli("ls", cwd=repo, env={"COLUMNS": "200"})  # the reason is long
    assert "role implementer at its limit of 1" in table.stdout
    # show says what ls says, in text and in --json.
    shown = json.loads(run_cli("show", second.id, "--json", cwd=repo).stdout)
    assert shown["wait_reason"] == "waiting for a slot: role implementer at its limit of 1"
    text = run_cli("show", second.id, cwd=repo).stdout
    assert "waiting for a slot: role implementer at its limit of 1" in text


@pytest.mark.usefixtures("database")
def test_the_pace_is_shared_by_every_worker(repo: Path) -> None:
    # Two groves on one database stand for two worker processes, each with its own pacer.
    (repo / "grove.toml").write_text('[admission]\nrpm_per_model = {"m-slow" = 1}\n')
    with (
        Grove.init(repo, runtime=ScriptedRuntime()) as one,
        Grove.open(repo, runtime=ScriptedRuntime()) as other,
    ):
        gates = [
            AdmissionGate(g.config.admission, g.service.pacer, time.time) for g in (one, other)
        ]
        slow = [one.spawn("tester", f"slow {i}", model="m-slow").id for i in range(2)]
        # One start a minute on m-slow: the first worker's start uses it up for the second.
        first = one.store.claim("w1", 60, gate=gates[0])
        assert first is not None and first.id == slow[0]
        assert other.store.claim("w2", 60, gate=gates[1]) is None
        # A 429 one worker saw holds every worker's starts on that model.
        hot = one.spawn("tester", "on the rate-limited model", model="m-hot")
        cool = one.spawn("tester", "on another model", model="m-cool")
        one.store.record_rate_limit(one.service.pacer, "m-hot", time.time(), 3600)
        claimed = other.store.claim("w2", 60, gate=gates[1])
        assert claimed is not None and claimed.id == cool.id
        assert other.store.claim("w2", 60, gate=gates[1]) is None
        assert one.get(hot.id).status is AgentStatus.PENDING
        assert other.service.pacer.pace("m-hot") == 30.0  # halved from the unpaced 60
