"""One agent cannot stop a worker: whatever its role, budget or behaviour, an error tied to it
fails that agent (``internal``, with the message) and the worker goes on.

The report: a role with ``max_budget_usd`` below the smallest grant (0.0001, no budget limits)
made ``Store.claim`` raise in every worker that tried it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.roles import Role
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.store import NewAgent
from agentgrove.worker import Worker
from tests.conftest import run_cli

BEHAVIOURS = ("completes", "fails", "flaky", "raises", "hangs")


async def behave(spec: RunSpec) -> RunResult:
    """What the agent does is the first word of its task."""
    what = spec.prompt.split()[0]
    if what == "completes":
        return RunResult(success=True, output="ok", cost_usd=min(0.001, spec.max_budget_usd))
    if what == "fails":
        return RunResult(success=False, error="no", error_kind=ErrorKind.PERMANENT)
    if what == "flaky":
        return RunResult(success=False, error="529", error_kind=ErrorKind.MODEL_ERROR)
    if what == "raises":
        raise RuntimeError("the runtime broke")
    await anyio.sleep_forever()  # "hangs": ended by its timeout
    raise AssertionError("unreachable")


def _tiny_agent(grove: Grove, task: str, cap: float) -> str:
    """An agent whose stored cap is below the smallest grant (as an older grove, or a workflow
    planned before the role was changed, could leave one): config validation cannot stop it."""
    base = grove.service.workspaces.resolve_base(None)
    record = grove.store.insert_agent(
        NewAgent(
            role="tester", task=task, model="m", base_ref=base, max_budget_usd=cap, timeout_s=60
        )
    )
    grove.service.wakeup.notify()
    return record.id


def test_a_role_below_the_smallest_grant_is_refused_when_grove_toml_is_read(repo: Path) -> None:
    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.0001\n")
    result = run_cli("init", cwd=repo)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "roles.tester.max_budget_usd" in lines[0] and "0.01" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_agent_whose_claim_raises_fails_alone_and_the_worker_goes_on(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        broken = _tiny_agent(grove, "completes with a cap nobody can grant", 0.0001)
        fine = grove.spawn("tester", "completes normally").id
        grove.configure_worker(poll_s=0.05)
        anyio.run(Worker(grove.service, grove.config.worker, drain=True).run)
        failed, done = grove.get(broken), grove.get(fine)
    assert failed.status is AgentStatus.FAILED and failed.error_kind is ErrorKind.INTERNAL
    assert failed.error is not None and "grove could not start this agent" in failed.error
    assert failed.reserved_usd == 0 and failed.cost_usd == 0
    assert done.status is AgentStatus.COMPLETED


def test_a_runtime_that_raises_fails_its_agent_at_once_with_what_it_knew(repo: Path) -> None:
    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.3\n")
    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        agent = grove.spawn("tester", "raises inside the runtime", budget_usd=5.0).id
        grove.configure_worker(poll_s=0.05, lease_s=3600)  # no sweep could end it in time
        anyio.run(Worker(grove.service, grove.config.worker, only={agent}).run)
        failed = grove.get(agent)
    assert failed.status is AgentStatus.FAILED and failed.error_kind is ErrorKind.INTERNAL
    assert failed.error == "grove error: RuntimeError: the runtime broke"
    # The runtime ran and reported nothing: its whole reservation counts as spent.
    assert failed.reserved_usd == 0 and failed.cost_usd == pytest.approx(0.3)


# -- the property ---------------------------------------------------------------------


@pytest.fixture
def shared(repo: Path) -> Iterator[Grove]:
    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        grove.configure_worker(poll_s=0.02, grace_s=0, retry_base_s=0, heartbeat_s=0.05)
        yield grove


roles = st.fixed_dictionaries(
    {
        "max_budget_usd": st.sampled_from([1e-6, 1e-4, 0.0099, 0.01, 0.05, 2.0]),
        "max_attempts": st.integers(1, 3),
        "timeout_s": st.sampled_from([0.05, 0.2, 1.0]),
        "tools": st.lists(
            st.sampled_from(["Read", "Grep", "Glob", "Edit", "Write", "Bash"]),
            min_size=1,
            max_size=3,
            unique=True,
        ),
    }
)
limits = st.none() | st.sampled_from([1e-6, 0.005, 0.01, 0.02, 0.5])
agent_specs = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(BEHAVIOURS), limits), min_size=1, max_size=4
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    role_specs=st.lists(roles, min_size=3, max_size=3),
    daily=limits,
    fail_when_exhausted=st.booleans(),
    specs=agent_specs,
)
def test_the_worker_survives_any_role_budget_and_agent(
    shared: Grove,
    role_specs: list[dict[str, object]],
    daily: float | None,
    fail_when_exhausted: bool,
    specs: list[tuple[int, str, float | None]],
) -> None:
    grove = shared
    tester = grove.config.roles["tester"]
    for i, spec in enumerate(role_specs):
        # Roles as they are stored, past the load-time check: the claim must cope anyway.
        grove.config.roles[f"r{i}"] = Role.model_validate(
            {**tester.model_dump(), "name": f"r{i}", **spec}
        )
    grove.store.daily_limit_usd = daily
    grove.store.fail_when_exhausted = fail_when_exhausted
    base = grove.service.workspaces.resolve_base(None)
    ids = []
    for n, (role_index, behaviour, tree_limit) in enumerate(specs):
        role = grove.config.roles[f"r{role_index}"]
        ids.append(
            grove.store.insert_agent(
                NewAgent(
                    role=role.name,
                    task=f"{behaviour} agent {n}",
                    model=role.model,
                    base_ref=base,
                    max_attempts=role.max_attempts,
                    timeout_s=role.timeout_s,
                    budget_usd=tree_limit,
                    max_budget_usd=role.max_budget_usd,
                )
            ).id
        )

    def settled(agent: AgentRecord) -> bool:
        waiting = agent.status is AgentStatus.PENDING and (agent.wait_reason or "").startswith(
            "waiting for budget"
        )
        return agent.status.finished or waiting

    async def main() -> None:
        worker = Worker(grove.service, grove.config.worker, concurrency=4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)  # a worker that crashed raises out of this group
            with anyio.fail_after(120):
                while not all(settled(grove.get(i)) for i in ids):
                    await anyio.sleep(0.02)
            worker.request_stop()

    anyio.run(main)
    for agent_id in ids:
        agent = grove.get(agent_id)
        assert settled(agent), agent
        assert agent.reserved_usd == 0, agent
        if agent.status is AgentStatus.FAILED and agent.error_kind is ErrorKind.INTERNAL:
            assert agent.error, agent
    assert not grove.store.list_agents(status=AgentStatus.EXECUTING)
