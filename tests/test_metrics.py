"""Prometheus ``/metrics`` scraped over real HTTP after real runs, and OpenTelemetry spans.

The figures scraped must equal what the database holds: the test recomputes each one from the
agent records (histogram buckets included) rather than trusting the store's aggregate queries.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agentgrove.config import load_config
from agentgrove.dashboard import create_app
from agentgrove.errors import ConfigError
from agentgrove.grove import Grove
from agentgrove.metrics import render
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.store._stats import CLAIM_LATENCY_BUCKETS_S, RUN_DURATION_BUCKETS_S
from agentgrove.worker import Worker

SONNET = BUILTIN_ROLES["implementer"].model
HAIKU = BUILTIN_ROLES["file-writer"].model


def _behaviour(spec: RunSpec) -> RunResult:
    """Usage read from the task ("n=<k>"), so every agent's figures differ; "fail" fails."""
    n = int(spec.prompt.split("n=")[1].split()[0])
    if "fail" in spec.prompt:
        return RunResult(
            success=False,
            error="bad request",
            error_kind=ErrorKind.PERMANENT,
            tokens_in=n,
            tokens_out=1,
            cost_usd=n / 1000,
            duration_ms=n * 100,
        )
    return RunResult(
        success=True,
        output="ok",
        tokens_in=100 * n,
        tokens_out=10 * n,
        cost_usd=n / 100,
        duration_ms=n * 1500,  # 1.5 s, 3 s, ...: several histogram buckets
    )


class _Server:
    """uvicorn serving ``app`` on a free loopback port, in a thread, until :meth:`stop`."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)  # polling a condition with a deadline

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


def _scrape(grove: Grove) -> tuple[str, dict[str, list[Sample]]]:
    """GET /metrics of the dashboard's application, served by uvicorn."""
    server = _Server(create_app(grove))
    try:
        response = httpx.get(f"{server.url}/metrics", timeout=20)
    finally:
        server.stop()
    assert response.status_code == 200
    families = {f.name: f.samples for f in text_string_to_metric_families(response.text)}
    return response.headers["content-type"], families


def _by_labels(samples: list[Sample], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[k] for k in keys): s.value for s in samples if s.name == name}


def _cumulative(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    return [sum(v <= b for v in values) for b in bounds]


def test_scrape_after_runs_equals_the_database(repo: Path, database: str) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_behaviour)) as grove:
        ran = [
            grove.spawn("implementer", "n=1"),
            grove.spawn("implementer", "n=2"),
            grove.spawn("implementer", "n=3", model="opus"),
            grove.spawn("file-writer", "n=4"),
            grove.spawn("tester", "fail n=5"),
        ]
        anyio.run(grove.execute_async, [a.id for a in ran])
        queued = grove.spawn("reviewer", "n=6")  # claimable: counts in the queue depth
        grove.spawn("reviewer", "n=7", parent_id=queued.id)  # waits for its parent: does not
        agents = grove.store.list_agents()

        content_type, families = _scrape(grove)

    assert content_type == CONTENT_TYPE_LATEST
    statuses = {AgentStatus(s.labels["status"]): s.value for s in families["grove_agents"]}
    assert statuses == {
        AgentStatus.PENDING: 2,
        AgentStatus.EXECUTING: 0,
        AgentStatus.AWAITING_INPUT: 0,
        AgentStatus.AWAITING_APPROVAL: 0,
        AgentStatus.COMPLETED: 4,
        AgentStatus.FAILED: 1,
        AgentStatus.CANCELLED: 0,
    }
    assert [s.value for s in families["grove_queue_depth"]] == [1]

    expected: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for a in agents:
        figures = expected[(a.role, a.model)]
        figures[0] += a.tokens_in
        figures[1] += a.tokens_out
        figures[2] += a.cost_usd
    tokens = families["grove_tokens"]
    cost = _by_labels(families["grove_cost_usd"], "grove_cost_usd_total", "role", "model")
    tokens_in = _by_labels(tokens, "grove_tokens_total", "role", "model", "direction")
    assert {k: v for k, v in tokens_in.items() if k[2] == "in"} == {
        (*k, "in"): v[0] for k, v in expected.items()
    }
    assert {k: v for k, v in tokens_in.items() if k[2] == "out"} == {
        (*k, "out"): v[1] for k, v in expected.items()
    }
    assert cost == pytest.approx({k: v[2] for k, v in expected.items()})
    # The test's own figures are not vacuous: two models of one role, a failure's usage.
    assert tokens_in[("implementer", "opus", "in")] == 300
    assert cost[("tester", SONNET)] == pytest.approx(0.005)

    _check_histogram(families, "grove_claim_latency_seconds", CLAIM_LATENCY_BUCKETS_S, agents)
    _check_histogram(families, "grove_run_duration_seconds", RUN_DURATION_BUCKETS_S, agents)
    within_5s = _bucket(families["grove_run_duration_seconds"], "grove_run_duration_seconds", "5.0")
    # 1.5 s and 3 s, then 4.5 s (opus) are within 5 s; 6 s (file-writer) is not.
    assert within_5s[("implementer", SONNET)] == 2
    assert within_5s[("implementer", "opus")] == 1
    assert within_5s[("file-writer", HAIKU)] == 0


def _check_histogram(
    families: dict[str, list[Sample]],
    name: str,
    bounds: tuple[float, ...],
    agents: list[AgentRecord],
) -> None:
    """Recompute the histogram from the agent rows: count, sum and every bucket."""
    samples = families[name]
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for a in agents:
        if a.started_at is None:
            continue  # never claimed: neither waited-for nor ran
        if name == "grove_run_duration_seconds":
            if a.status.finished:
                values[(a.role, a.model)].append(a.duration_ms / 1000)
        else:
            values[(a.role, a.model)].append((a.started_at - a.created_at).total_seconds())
    assert set(values) == {
        ("implementer", SONNET),
        ("implementer", "opus"),
        ("file-writer", HAIKU),
        ("tester", SONNET),
    }
    counts = _by_labels(samples, f"{name}_count", "role", "model")
    sums = _by_labels(samples, f"{name}_sum", "role", "model")
    assert counts == {k: len(v) for k, v in values.items()}
    assert sums == pytest.approx({k: sum(v) for k, v in values.items()}, abs=0.01)
    for key, observed in values.items():
        buckets = {
            s.labels["le"]: s.value
            for s in samples
            if s.name == f"{name}_bucket" and (s.labels["role"], s.labels["model"]) == key
        }
        assert [buckets[repr(b)] for b in bounds] == _cumulative(observed, bounds), key
        assert buckets["+Inf"] == len(observed)


def _bucket(samples: list[Sample], name: str, le: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["role"], s.labels["model"]): s.value
        for s in samples
        if s.name == f"{name}_bucket" and s.labels["le"] == le
    }


def test_render_of_an_empty_grove_lists_every_status_at_zero(grove: Grove) -> None:
    families = {
        f.name: f.samples for f in text_string_to_metric_families(render(grove.store).decode())
    }
    assert {s.labels["status"]: s.value for s in families["grove_agents"]} == dict.fromkeys(
        [s.value for s in AgentStatus], 0.0
    )
    assert [s.value for s in families["grove_queue_depth"]] == [0]
    assert families["grove_tokens"] == [] and families["grove_run_duration_seconds"] == []


# -- OpenTelemetry -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the global tracer provider (set once per process, so join the
    provider another test module may have set)."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def _flaky_then_fine(spec: RunSpec) -> RunResult:
    if "flaky" in spec.prompt and spec.attempt == 1:
        return RunResult(
            success=False,
            error="overloaded",
            error_kind=ErrorKind.MODEL_ERROR,
            tokens_in=3,
            tokens_out=0,
            cost_usd=0.003,
        )
    return _behaviour(spec)


def test_one_span_per_attempt_with_real_times_and_attributes(
    repo: Path, spans: InMemorySpanExporter
) -> None:
    (repo / "grove.toml").write_text(
        "[telemetry]\notel = true\n\n[worker]\nretry_base_s = 0\npoll_s = 0.05\n"
    )
    with Grove.init(repo, runtime=ScriptedRuntime(_flaky_then_fine)) as grove:
        ok = grove.spawn("file-writer", "n=2")
        flaky = grove.spawn("implementer", "flaky n=1")
        bad = grove.spawn("tester", "fail n=5")
        anyio.run(grove.execute_async, [ok.id, flaky.id, bad.id])
        events = {a.id: grove.store.events(agent_id=a.id) for a in (ok, flaky, bad)}

    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    assert {s.name for s in finished} == {"grove.agent"}
    by_attempt = {
        (s.attributes["grove.agent.id"], s.attributes["grove.agent.attempt"]): s
        for s in finished
        if s.attributes is not None
    }
    assert sorted(by_attempt, key=str) == sorted(
        [(ok.id, 1), (flaky.id, 1), (flaky.id, 2), (bad.id, 1)], key=str
    )

    first = by_attempt[(flaky.id, 1)]
    assert dict(first.attributes or {}) == {
        "grove.agent.id": flaky.id,
        "grove.agent.role": "implementer",
        "grove.agent.model": SONNET,
        "grove.agent.status": "released",
        "grove.agent.error_kind": "model_error",
        "grove.agent.attempt": 1,
        "grove.agent.tokens_in": 3,
        "grove.agent.tokens_out": 0,
        "grove.agent.cost_usd": 0.003,
    }
    assert first.status.status_code is StatusCode.ERROR and first.status.description == (
        "overloaded"
    )
    second = by_attempt[(flaky.id, 2)]
    assert second.attributes is not None and second.attributes["grove.agent.status"] == (
        "completed"
    )
    assert second.attributes["grove.agent.tokens_in"] == 100  # this attempt's, not the sum
    assert second.status.status_code is StatusCode.UNSET

    failed = by_attempt[(bad.id, 1)]
    assert failed.attributes is not None
    assert failed.attributes["grove.agent.status"] == "failed"
    assert failed.attributes["grove.agent.error_kind"] == "permanent"
    assert failed.status.status_code is StatusCode.ERROR

    # Start and end are the database's times of the claim and of the attempt's end.
    for (agent_id, attempt), span in by_attempt.items():
        claimed = next(
            e for e in events[str(agent_id)]
            if e.kind == "agent.claimed" and e.data["attempt"] == attempt
        )  # fmt: skip
        ended = next(
            e for e in events[str(agent_id)]
            if e.kind in ("agent.completed", "agent.failed", "agent.released")
            and e.data["attempt"] == attempt
        )  # fmt: skip
        assert span.start_time == _ns(claimed.at) and span.end_time == _ns(ended.at)
        assert span.end_time >= span.start_time


def _ns(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def test_an_attempt_interrupted_by_shutdown_is_a_released_span(
    repo: Path, spans: InMemorySpanExporter
) -> None:
    (repo / "grove.toml").write_text(
        "[telemetry]\notel = true\n\n[worker]\ngrace_s = 0\nheartbeat_s = 0.05\n"
    )
    started: list[anyio.Event] = []

    async def hang(spec: RunSpec) -> RunResult:
        started[0].set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with Grove.init(repo, runtime=ScriptedRuntime(hang)) as grove:
        agent = grove.spawn("tester", "hang")

        async def main() -> None:
            started.append(anyio.Event())
            worker = Worker(grove.service, grove.config.worker, concurrency=1)
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await started[0].wait()
                    worker.request_stop()  # no grace: the run is interrupted

        anyio.run(main)
        assert grove.store.get_agent(agent.id).status is AgentStatus.PENDING

    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "grove.agent.id": agent.id,
        "grove.agent.role": "tester",
        "grove.agent.model": SONNET,
        "grove.agent.status": "released",
        "grove.agent.attempt": 1,
    }  # an interrupted attempt's usage is unknown: no token or cost attributes
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "interrupted"


def test_workflow_nodes_carry_run_id_and_node(repo: Path, spans: InMemorySpanExporter) -> None:
    (repo / "grove.toml").write_text("[telemetry]\notel = true\n")
    spec = {
        "name": "pair",
        "nodes": [
            {"key": "first", "role": "file-writer", "task": "n=1"},
            {"key": "second", "role": "file-writer", "task": "n=2", "depends_on": ["first"]},
        ],
    }
    with Grove.init(repo, runtime=ScriptedRuntime(_behaviour)) as grove:
        run = grove.run_workflow(spec)
    nodes = {
        s.attributes["grove.run.node"]: s.attributes["grove.run.id"]
        for s in spans.get_finished_spans()
        if s.attributes is not None
    }
    assert nodes == {"first": run.id, "second": run.id}


def test_telemetry_off_records_no_span(grove: Grove, spans: InMemorySpanExporter) -> None:
    assert not grove.config.telemetry.otel
    grove.run("file-writer", "n=1")
    assert spans.get_finished_spans() == ()


def test_telemetry_off_never_imports_opentelemetry(repo: Path) -> None:
    # Not through the metrics router: FastAPI itself imports OpenTelemetry when installed.
    script = (
        "import sys\n"
        "from agentgrove.grove import Grove\n"
        "from agentgrove.runtime import ScriptedRuntime\n"
        "with Grove.init('.', runtime=ScriptedRuntime()) as g:\n"
        "    assert g.run('file-writer', 'hi').status.value == 'completed'\n"
        "names = ('opentelemetry', 'agentgrove.telemetry')\n"
        "print(sorted(m for m in sys.modules if m.startswith(names)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_telemetry_setting_is_validated(repo: Path) -> None:
    (repo / "grove.toml").write_text('[telemetry]\notel = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"telemetry\.otel"):
        load_config(repo)
    (repo / "grove.toml").write_text("[telemetry]\nexporter = 'otlp'\n")
    with pytest.raises(ConfigError, match=r"telemetry\.exporter"):
        load_config(repo)
