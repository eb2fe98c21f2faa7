"""Live progress: the tree view over real records, plain and live output of `grove run` and
`grove workflow run --wait`, and `grove logs -f` streaming an agent that is still running."""

from __future__ import annotations

import io
import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from agentgrove.cli._live import (
    LiveProgress,
    Snapshot,
    agent_line,
    agent_source,
    progress_view,
    run_source,
)
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.runtime import MessageSink, RunResult, RunSpec, ScriptedRuntime
from agentgrove.store._core import utcnow
from agentgrove.testing import (
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    file_writer_script,
    say,
    write_file,
)
from tests.conftest import GROVE, run_cli

ANSI = re.compile(r"\x1b\[")

CHAIN = """
name: chain
nodes:
  - {key: design, role: planner, task: "design it"}
  - {key: build, role: implementer, task: "build it", depends_on: [design]}
"""


def _render(renderable: object) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _usage_by_role(spec: RunSpec) -> RunResult:
    """Planner: 100/20 tokens, $0.02; a failing tester; everyone else 7/3 tokens, $0.003."""
    if spec.role.name == "tester":
        return RunResult(
            success=False,
            error="bad request",
            error_kind=ErrorKind.PERMANENT,
            tokens_in=1,
            tokens_out=0,
            cost_usd=0.001,
        )
    if spec.role.name == "planner":
        return RunResult(success=True, output="ok", tokens_in=100, tokens_out=20, cost_usd=0.02)
    return RunResult(success=True, output="ok", tokens_in=7, tokens_out=3, cost_usd=0.003)


def test_tree_shows_a_parent_over_its_children_with_statuses_usage_and_totals(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_usage_by_role)) as grove:
        parent = grove.spawn("planner", "plan the work")
        child = grove.spawn("implementer", "do the work", parent_id=parent.id)
        failing = grove.spawn("tester", "test the work", parent_id=parent.id)
        anyio.run(grove.execute_async, [parent.id])
        snapshot = agent_source(grove.store, parent.id)()
    text = _render(progress_view(snapshot, now=utcnow()))
    lines = text.splitlines()
    assert lines[0] == f"planner {parent.id}: completed"
    [p_line] = [line for line in lines[1:] if parent.id[:8] in line]
    [c_line] = [line for line in lines if child.id[:8] in line]
    [f_line] = [line for line in lines if failing.id[:8] in line]
    assert "planner completed" in p_line and "100 in / 20 out  $0.0200" in p_line
    assert "implementer completed" in c_line and "7 in / 3 out  $0.0030" in c_line
    assert "tester failed" in f_line and "permanent" in f_line
    # Children sit one level deeper than their parent in the tree.
    assert lines.index(p_line) < lines.index(c_line)
    assert c_line.index(child.id[:8]) > p_line.index(parent.id[:8])
    assert lines[-1] == ("3 agents (2 completed, 1 failed)  108 in / 23 out tokens  $0.0240"), (
        "totals add up over parent and children"
    )


def test_tree_of_a_workflow_run_shows_waiting_nodes_then_the_finished_run(repo: Path) -> None:
    (repo / "chain.yaml").write_text(CHAIN)
    with Grove.init(repo, runtime=ScriptedRuntime(_usage_by_role)) as grove:
        run = grove.start_workflow(repo / "chain.yaml")
        read = run_source(grove.store, run.id)
        before = _render(progress_view(read(), now=utcnow()))
        assert f"chain {run.id}: running" in before
        assert re.search(r"\S{8} design \(planner\) pending", before)
        assert "build (implementer) waiting" in before
        assert "1 agent (1 pending)" in before

        anyio.run(grove.execute_run_async, run.id)
        after = _render(progress_view(read(), now=utcnow()))
    assert f"chain {run.id}: completed" in after
    assert re.search(r"design \(planner\) completed .*100 in / 20 out  \$0\.0200", after)
    assert re.search(r"build \(implementer\) completed .*7 in / 3 out  \$0\.0030", after)
    assert "waiting" not in after
    assert after.splitlines()[-1] == "2 agents (2 completed)  107 in / 23 out tokens  $0.0230"


def test_a_long_run_hides_completed_then_unstarted_agents_but_totals_count_all(
    grove: Grove,
) -> None:
    agents = [grove.spawn("implementer", f"task {i}") for i in range(8)]
    anyio.run(grove.execute_async, [a.id for a in agents[:4]])
    records = [grove.store.get_agent(a.id) for a in agents]
    running = replace(records[3], status=AgentStatus.EXECUTING, finished_at=None)
    snapshot = Snapshot(title="many", agents=(*records[:3], running, *records[4:]))
    now = utcnow()
    text = _render(progress_view(snapshot, now=now, max_lines=4))
    assert text.splitlines()[1:] == [
        "├── … 3 completed agents not shown",
        "├── " + _render(agent_line(running, now)).strip(),
        "├── " + _render(agent_line(records[4], now)).strip(),
        "└── … 3 more pending",
        "8 agents (3 completed, 1 executing, 4 pending)  40 in / 20 out tokens  $0.0004",
    ]


def test_elapsed_runs_to_now_while_executing(grove: Grove) -> None:
    agent = grove.spawn("implementer", "x")
    now = utcnow()
    executing = replace(
        grove.store.get_agent(agent.id),
        status=AgentStatus.EXECUTING,
        started_at=now - timedelta(seconds=65),
    )
    text = _render(
        progress_view(
            Snapshot(title="t", agents=(executing,)),
            now=now,
            recent_tools={agent.id: "Write {'file_path': 'a.txt'}"},
        )
    )
    assert "implementer executing  1m05s" in text
    assert "▸ Write {'file_path': 'a.txt'}" in text


class HeldRuntime:
    """Reports a tool call, then holds the attempt until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        call = {"tool": "Write", "input": {"file_path": "notes.txt"}}
        sink("AssistantMessage", call, ("agent.tool_use", call))
        await anyio.to_thread.run_sync(self.release.wait)
        result = {"is_error": False, "content": "File created successfully"}
        sink("UserMessage", result, ("agent.tool_result", result))
        return RunResult(success=True, output="wrote notes", tokens_in=4, tokens_out=2)


def test_plain_progress_prints_transitions_and_tool_calls_in_order(repo: Path) -> None:
    runtime = HeldRuntime()
    runtime.release.set()
    out = io.StringIO()
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.spawn("implementer", "write notes")
        progress = LiveProgress(
            agent_source(grove.store, agent.id), console=Console(file=out, width=120), mode="plain"
        )
        grove.service.observer = progress.observe
        final = progress.run(lambda: grove.execute_async([agent.id]))
    assert [a.status for a in final.agents] == [AgentStatus.COMPLETED]
    lines = out.getvalue().splitlines()
    short = agent.id[:8]
    assert lines[0] == f"  {short} implementer: pending"
    assert f"  {short} Write file_path=notes.txt" in lines
    tool = lines.index(f"  {short} Write file_path=notes.txt")
    assert lines.index(f"  {short} implementer: executing") < tool < len(lines) - 1
    assert re.fullmatch(
        rf"  {short} implementer: completed \(4 in / 2 out, \$0\.0000, \d+\.\ds\)", lines[-1]
    )
    assert not ANSI.search(out.getvalue())


# -- the real CLI --------------------------------------------------------------------------


def _scripted(repo: Path, delay_s: float) -> None:
    (repo / "grove.toml").write_text(
        f'[runtime]\nkind = "scripted"\nscripted_delay_s = {delay_s}\n\n'
        "[worker]\npoll_s = 0.1\nheartbeat_s = 0.3\n"
    )
    assert run_cli("init", cwd=repo).returncode == 0


@pytest.mark.e2e
def test_run_without_a_terminal_prints_plain_lines(repo: Path) -> None:
    _scripted(repo, 0.2)
    result = run_cli("run", "implementer", "do [red]it[/]", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout + result.stderr)
    agent_id = result.stderr.split()[0]
    short = agent_id[:8]
    for state in ("pending", "executing"):
        assert f"  {short} implementer: {state}\n" in result.stderr
    assert f"  {short} implementer: completed (10 in / 5 out, $0.0001, " in result.stderr
    assert result.stdout.startswith(f"completed {agent_id} implementer: 10 in / 5 out tokens")
    assert "do [red]it[/]" in result.stdout  # user text is printed, not read as markup


@pytest.mark.e2e
def test_workflow_run_wait_without_a_terminal_prints_plain_lines(repo: Path) -> None:
    _scripted(repo, 0.1)
    (repo / "chain.yaml").write_text(CHAIN)
    result = run_cli("workflow", "run", "chain.yaml", "--wait", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout + result.stderr)
    err = result.stderr
    assert "  build: waiting\n" in err
    assert re.search(r"  \S{8} design \(planner\): completed \(10 in / 5 out", err)
    # Plain lines sample the states (a state that lasts less than a refresh may be skipped),
    # but never out of order: the dependent appears only after its dependency completed.
    build_first = re.search(r"build \(implementer\): (pending|executing)", err)
    assert build_first is not None, err
    assert err.index("design (planner): completed") < build_first.start()
    assert re.search(r"build\s+implementer\s+completed", result.stdout)


def _visible(output: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)


def _run_in_pty(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    on_output: Callable[[str], None] = lambda _out: None,
    timeout_s: float = 120,
) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; returns (rc, output).
    ``on_output`` sees the output so far after each read."""
    master, slave = pty.openpty()
    env = {
        **os.environ,
        **(env or {}),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "40",
    }
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*GROVE, *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            # Wait with the deadline, so a child that hangs with the terminal open fails the
            # test instead of blocking it.
            if not select.select([master], [], [], remaining)[0]:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not data:
                break
            chunks.append(data)
            on_output(b"".join(chunks).decode(errors="replace"))
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, b"".join(chunks).decode(errors="replace")


@pytest.mark.e2e
def test_run_on_a_terminal_shows_the_live_tree_and_the_summary(repo: Path) -> None:
    _scripted(repo, 1.0)
    rc, out = _run_in_pty(["run", "implementer", "live please"], repo)
    assert rc == 0, out
    assert ANSI.search(out)
    plain = _visible(out)
    agent_id = re.search(r"([0-9a-f]{12}) implementer on", plain)
    assert agent_id, plain
    short = agent_id.group(1)[:8]
    assert re.search(rf"{short} implementer executing", plain), "a frame while it runs"
    assert re.search(rf"{short} implementer completed .*10 in / 5 out  \$0\.0001", plain)
    assert "1 agent (1 completed)" in plain
    assert f"completed {agent_id.group(1)} implementer: 10 in / 5 out tokens" in plain


@pytest.mark.e2e
def test_workflow_run_wait_on_a_terminal_shows_the_live_tree(repo: Path) -> None:
    _scripted(repo, 0.6)
    (repo / "chain.yaml").write_text(CHAIN)
    rc, out = _run_in_pty(["workflow", "run", "chain.yaml", "--wait"], repo)
    assert rc == 0, out
    assert ANSI.search(out)
    plain = _visible(out)
    assert re.search(r"\S{8} design \(planner\) executing", plain)
    assert "build (implementer) waiting" in plain
    assert re.search(r"\S{8} build \(implementer\) completed", plain)
    assert "2 agents (2 completed)  20 in / 10 out tokens  $0.0002" in plain


@pytest.mark.e2e
def test_run_with_the_real_sdk_prints_tool_calls_between_transitions(repo: Path) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        result = run_cli("run", "file-writer", "Create hello.txt", cwd=repo, env=server.env())
        server.assert_done()
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout + result.stderr)
    short = result.stderr.split()[0][:8]
    lines = result.stderr.splitlines()
    executing = lines.index(f"  {short} file-writer: executing")
    [write] = [i for i, line in enumerate(lines) if line.startswith(f"  {short} Write ")]
    assert "hello.txt" in lines[write]
    [completed] = [i for i, line in enumerate(lines) if ": completed (" in line]
    assert executing < write < completed


@pytest.mark.e2e
def test_live_tree_shows_the_tool_call_of_an_agent_held_mid_run(repo: Path) -> None:
    """The real SDK and CLI under a terminal: the second model turn is held back until the
    live tree has shown the agent executing with its Write call."""
    release = threading.Event()

    def after_the_write(_request: ModelRequest) -> Turn:
        release.wait(timeout=90)
        return say("Created hello.txt")

    def watch(output: str) -> None:
        if re.search(r"file-writer executing .*▸ Write .*hello\.txt", _visible(output)):
            release.set()

    script = Script().on(
        role="file-writer", turns=[write_file("hello.txt", "hi\n"), after_the_write]
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        rc, out = _run_in_pty(
            ["run", "file-writer", "Create hello.txt"], repo, env=server.env(), on_output=watch
        )
        server.assert_done()
    assert release.is_set(), _visible(out)
    assert rc == 0, _visible(out)
    assert "Created hello.txt" in _visible(out)


# -- grove logs -f -------------------------------------------------------------------------


class Follower:
    """``grove logs -f`` in a subprocess; its stdout lines arrive on a queue as printed."""

    def __init__(self, repo: Path, agent_id: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*GROVE, "logs", "-f", agent_id, *args],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, done: Callable[[str], bool]) -> list[str]:
        """Lines up to the first one ``done`` accepts (60 s at most)."""
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if done(line):
                return seen
        raise AssertionError(f"never saw the expected line; got {seen}")

    def close(self) -> str:
        """Stop it if it still runs; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._pump.join(timeout=60)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


@pytest.fixture
def held(repo: Path) -> Iterator[tuple[Grove, HeldRuntime]]:
    runtime = HeldRuntime()
    with Grove.init(repo, runtime=runtime) as grove:
        yield grove, runtime
        runtime.release.set()


@pytest.mark.e2e
def test_logs_follow_streams_tool_calls_of_a_running_agent_and_ends_with_it(
    repo: Path, held: tuple[Grove, HeldRuntime]
) -> None:
    grove, runtime = held
    agent = grove.spawn("implementer", "write notes")
    executor = threading.Thread(target=anyio.run, args=(grove.execute_async, [agent.id]))
    executor.start()
    text_follower = Follower(repo, agent.id[:6])
    json_follower = Follower(repo, agent.id, "--json")
    try:
        seen_text = text_follower.read_until(lambda line: "agent.tool_use" in line)
        seen_json = json_follower.read_until(lambda line: '"agent.tool_use"' in line)
        # The agent is still held: both followers keep following.
        assert text_follower.proc.poll() is None and json_follower.proc.poll() is None
        assert "Write file_path=notes.txt" in seen_text[-1]
        runtime.release.set()
        seen_text += text_follower.read_until(lambda line: "agent.completed" in line)
        seen_json += json_follower.read_until(lambda line: '"agent.completed"' in line)
        assert text_follower.proc.wait(timeout=60) == 0
        assert json_follower.proc.wait(timeout=60) == 0
    finally:
        runtime.release.set()
        executor.join(timeout=60)
        text_follower.close()
        json_follower.close()
    kinds = [line.split()[1] for line in seen_text]
    assert kinds == [
        "agent.spawned",
        "agent.claimed",
        "agent.tool_use",
        "agent.tool_result",
        "agent.completed",
    ], seen_text
    assert "File created successfully" in seen_text[3]
    events = [json.loads(line) for line in seen_json]
    assert [e["kind"] for e in events] == kinds
    assert events[2]["data"] == {"tool": "Write", "input": {"file_path": "notes.txt"}}
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


@pytest.mark.e2e
def test_logs_follow_stops_cleanly_on_ctrl_c(repo: Path, grove: Grove) -> None:
    agent = grove.spawn("implementer", "never run here")
    follower = Follower(repo, agent.id)
    try:
        follower.read_until(lambda line: "agent.spawned" in line)
        follower.proc.send_signal(signal.SIGINT)
        assert follower.proc.wait(timeout=60) == 130
    finally:
        err = follower.close()
    assert "Traceback" not in err
