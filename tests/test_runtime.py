"""One conformance suite for every Runtime: the scripted fake and the real Claude runtime (real
SDK and CLI against the scripted model server) must keep the same promises."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentgrove.models import ErrorKind
from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunResult, RunSpec, Runtime, ScriptedRuntime
from agentgrove.runtime._classify import classify
from agentgrove.runtime._policy import bash_refusal
from agentgrove.runtime.claude import ClaudeRuntime, _can_use_tool, sandbox_available
from agentgrove.testing import (
    Fault,
    ModelServer,
    Script,
    bash,
    file_writer_script,
    say,
    write_file,
)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(
        self, kind: str, message: dict[str, Any], event: tuple[str, dict[str, Any]] | None
    ) -> None:
        self.messages.append((kind, message))
        if event is not None:
            self.events.append(event)


def _spec(cwd: Path, **kw: Any) -> RunSpec:
    values: dict[str, Any] = {
        # Its own id: the runtime kills every process marked with it at the end of a run, and
        # tests in other xdist workers (test_hardening's) kill a fixed id's processes too.
        "agent_id": secrets.token_hex(6),
        "role": BUILTIN_ROLES["file-writer"],
        "prompt": "Create hello.txt containing hi",
        "model": "claude-haiku-4-5",
        "cwd": cwd,
        "max_turns": 5,
        "max_budget_usd": 1.0,
        "timeout_s": 120.0,
    }
    return RunSpec(**(values | kw))


def _scripted_writer(spec: RunSpec) -> RunResult:
    (spec.cwd / "hello.txt").write_text("hi\n")
    return RunResult(
        success=True, output="Created hello.txt", tokens_in=10, tokens_out=2, cost_usd=1e-4
    )


@pytest.fixture(params=["scripted", pytest.param("claude", marks=pytest.mark.e2e)])
def writer_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A runtime whose agent writes hello.txt with 'hi' and says so."""
    if request.param == "scripted":
        yield ScriptedRuntime(_scripted_writer)
        return
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        yield ClaudeRuntime(env=server.env())
        server.assert_done()


def test_conformance_success_reports_messages_and_usage(
    writer_runtime: Runtime, tmp_path: Path
) -> None:
    sink = Recorder()
    result = anyio.run(writer_runtime.run, _spec(tmp_path), sink)
    assert result.success and result.error_kind is None
    assert (tmp_path / "hello.txt").read_text() == "hi\n"
    assert result.tokens_in > 0 and result.tokens_out > 0 and result.cost_usd > 0
    assert result.output and "hello.txt" in result.output
    assert sink.messages, "every message must reach the sink before run() returns"
    assert any(kind == "agent.result" for kind, _ in sink.events)


@pytest.fixture(params=["scripted", pytest.param("claude", marks=pytest.mark.e2e)])
def permanent_failure_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    if request.param == "scripted":
        yield ScriptedRuntime(
            lambda spec: RunResult(success=False, error="401", error_kind=ErrorKind.PERMANENT)
        )
        return
    script = Script().on(role="file-writer", turns=[Fault.status(401)])
    with ModelServer(script) as server:
        yield ClaudeRuntime(env=server.env())


def test_conformance_failure_is_a_result_not_an_exception(
    permanent_failure_runtime: Runtime, tmp_path: Path
) -> None:
    result = anyio.run(permanent_failure_runtime.run, _spec(tmp_path), Recorder())
    assert not result.success
    assert result.error_kind is ErrorKind.PERMANENT
    assert result.error


@pytest.fixture(params=["scripted", pytest.param("claude", marks=pytest.mark.e2e)])
def hanging_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    if request.param == "scripted":

        async def hang(spec: RunSpec) -> RunResult:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        yield ScriptedRuntime(hang)
        return
    script = Script().on(role="file-writer", turns=[Fault.slow(3600, say("late"))], optional=True)
    with ModelServer(script) as server:
        yield ClaudeRuntime(env=server.env())


def test_conformance_timeout_is_reported_as_timeout(
    hanging_runtime: Runtime, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = anyio.run(hanging_runtime.run, _spec(tmp_path, timeout_s=3.0), Recorder())
    took = time.monotonic() - started
    assert not result.success and result.error_kind is ErrorKind.TIMEOUT
    # The run ends at its timeout, not seconds later: the real CLI was given 5 s more to exit
    # on its own after the deadline (a 3 s role failed after 8 s). A bound, not a speed.
    assert took < 3.0 + 4.0, took


@pytest.mark.e2e
def test_claude_runtime_refuses_writes_outside_the_worktree(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    worktree = tmp_path / "wt"
    worktree.mkdir()
    script = Script().on(
        role="file-writer",
        turns=[
            write_file(str(outside), "escaped\n"),
            lambda req: say(f"result: {req.tool_results}"),
        ],
    )
    with ModelServer(script) as server:
        result = anyio.run(ClaudeRuntime(env=server.env()).run, _spec(worktree), Recorder())
        server.assert_done()
    assert not outside.exists()
    assert result.success


def test_can_use_tool_confines_paths_including_dotdot_and_symlinks(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / "link").symlink_to(tmp_path)
    tools = ["Write", "Edit", "Read"]
    assert _can_use_tool(wt, tools, "Write", {"file_path": "ok.txt"}).behavior == "allow"
    assert _can_use_tool(wt, tools, "Write", {"file_path": str(wt / "a/b.txt")}).behavior == "allow"
    for bad in ["../x.txt", str(tmp_path / "x.txt"), "link/x.txt", "/etc/passwd"]:
        assert _can_use_tool(wt, tools, "Write", {"file_path": bad}).behavior == "deny", bad
    assert _can_use_tool(wt, tools, "Bash", {"command": "ls"}).behavior == "deny"


@pytest.mark.parametrize(
    "subtype, status, assistant_error, kind",
    [
        ("error_max_budget_usd", None, None, ErrorKind.BUDGET_EXCEEDED),
        ("error_max_turns", None, None, ErrorKind.MAX_TURNS),
        ("success", 401, "authentication_failed", ErrorKind.PERMANENT),
        ("success", 400, "invalid_request", ErrorKind.PERMANENT),
        ("success", 429, "rate_limit", ErrorKind.MODEL_ERROR),
        ("success", 529, "server_error", ErrorKind.MODEL_ERROR),
        ("success", 500, None, ErrorKind.MODEL_ERROR),
        ("error_during_execution", None, None, ErrorKind.MODEL_ERROR),
    ],
)
def test_classify(
    subtype: str, status: int | None, assistant_error: str | None, kind: ErrorKind
) -> None:
    assert (
        classify(subtype=subtype, api_error_status=status, assistant_error=assistant_error) is kind
    )


@pytest.mark.e2e
@pytest.mark.skipif(not sandbox_available(), reason="needs bubblewrap and socat")
def test_sandboxed_bash_cannot_write_outside_the_worktree(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    worktree = tmp_path / "wt"
    worktree.mkdir()
    script = Script().on(
        role="tester",
        turns=[
            bash(f"echo x > {outside}; echo inside > inside.txt"),
            lambda req: say(f"result: {req.tool_results}"),
        ],
    )
    spec = _spec(worktree, role=BUILTIN_ROLES["tester"], model="claude-sonnet-4-5")
    with ModelServer(script) as server:
        result = anyio.run(
            ClaudeRuntime(env=server.env(), sandbox="required").run, spec, Recorder()
        )
        server.assert_done()
    assert result.success
    assert not outside.exists()
    assert (worktree / "inside.txt").read_text() == "inside\n"


@pytest.mark.parametrize(
    "command, allowed",
    [
        ("git diff HEAD~1", True),
        ("grep -rn TODO src | head -5", True),
        ("cat SPEC.md", True),
        ("find . -name '*.py'", True),
        ("rm -rf src", False),
        ("echo x > file.txt", False),
        ("cat a; rm b", False),
        ("git commit -am oops", False),
        ("find . -delete", False),
        ("ls $(rm -rf /)", False),
        ('python3 -c \'open("x","w")\'', False),
        ("grep x y | tee out.txt", False),
    ],
)
def test_read_only_bash_policy(command: str, allowed: bool) -> None:
    assert (bash_refusal("read-only", command) is None) is allowed
    assert bash_refusal("full", command) is None
    assert bash_refusal("none", command) is not None


def test_reviewer_role_cannot_write_with_bash(tmp_path: Path) -> None:
    reviewer = BUILTIN_ROLES["reviewer"]
    decision = _can_use_tool(
        tmp_path, list(reviewer.tools), "Bash", {"command": "echo hacked > app.py"}, reviewer.bash
    )
    assert decision.behavior == "deny"
    assert (
        _can_use_tool(
            tmp_path, list(reviewer.tools), "Bash", {"command": "git diff"}, reviewer.bash
        ).behavior
        == "allow"
    )
    assert (
        _can_use_tool(
            tmp_path, list(reviewer.tools), "Write", {"file_path": "a"}, reviewer.bash
        ).behavior
        == "deny"
    )


def test_a_long_text_event_is_cut_with_an_ellipsis() -> None:
    """``grove logs`` shows ``agent.text`` events: a cut one says it was cut."""
    from claude_agent_sdk import AssistantMessage, TextBlock

    from agentgrove.runtime.claude import _report

    seen: list[Any] = []
    text = "x" * 499 + "yz" + "w" * 100
    message = AssistantMessage(content=[TextBlock(text=text)], model="m")
    _report(message, lambda kind, payload, event: seen.append(event))
    [(kind, data)] = seen
    assert kind == "agent.text"
    assert data["text"] == "x" * 499 + "…"
    short = AssistantMessage(content=[TextBlock(text="done")], model="m")
    _report(short, lambda kind, payload, event: seen.append(event))
    assert seen[-1] == ("agent.text", {"text": "done"})


def test_reported_tokens_fall_back_to_the_per_model_figures() -> None:
    from agentgrove.runtime.claude import reported_tokens

    usage = {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 3}
    assert reported_tokens(usage, None) == (7, 3)
    zero = {"input_tokens": 0, "output_tokens": 0}
    per_model = {
        "m1": {"inputTokens": 1000, "cacheReadInputTokens": 10, "outputTokens": 40},
        "m2": {"inputTokens": 5, "outputTokens": 1},
    }
    assert reported_tokens(zero, per_model) == (1015, 41)
    assert reported_tokens(None, None) == (0, 0)


@pytest.mark.e2e
def test_a_run_stopped_by_its_budget_records_the_tokens_it_spent(tmp_path: Path) -> None:
    """The CLI's result for a run past ``max_budget_usd`` has all-zero ``usage``; the tokens
    behind the cost it reports must still be recorded (not 0/0 next to a cost)."""
    from dataclasses import replace

    from agentgrove.testing import Usage

    big = Usage(input_tokens=1_000_000, output_tokens=1000)
    turns = [replace(write_file("a.txt", "x\n"), usage=big), say("done")]
    with ModelServer(Script().on(role="file-writer", turns=turns, optional=True)) as server:
        runtime = ClaudeRuntime(env=server.env())
        result = anyio.run(runtime.run, _spec(tmp_path, max_budget_usd=0.01), Recorder())
    assert result.error_kind is ErrorKind.BUDGET_EXCEEDED, result
    assert result.cost_usd > 0.01
    assert result.tokens_in >= 1_000_000 and result.tokens_out >= 1000, result
