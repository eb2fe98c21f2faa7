"""Tests for the scripted Anthropic model server (agentgrove.testing).

Unit tests talk to the server over real loopback HTTP with urllib; the e2e
tests drive the real Claude Code CLI through claude-agent-sdk.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentgrove.testing import (
    DEMO_GREETING,
    Fault,
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    Usage,
    bash,
    demo_script,
    file_writer_script,
    say,
    text,
    tool_use,
    write_file,
)

# --- helpers ---------------------------------------------------------------


def make_body(
    prompt: str = "do the thing",
    *,
    role: str | None = "worker",
    agent: str | None = None,
    history: int = 0,
    tool_result: str = "ok",
    stream: bool = True,
    session: str | None = "sess-1",
    cwd: str = "/tmp/ws",
) -> dict[str, Any]:
    """A request body shaped like the CLI's, with ``history`` tool-use round trips."""
    system_lines = ["You are a Claude agent."]
    if role is not None:
        system_lines.append(f"agentgrove-role: {role}")
    if agent is not None:
        system_lines.append(f"agentgrove-agent: {agent}")
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<system-reminder>\n# Environment\n"
                    f" - Primary working directory: {cwd}\n - Platform: linux\n</system-reminder>",
                },
                {"type": "text", "text": "<system-reminder>\nToday is a day.\n</system-reminder>"},
                {"type": "text", "text": prompt},
            ],
        }
    ]
    for i in range(history):
        messages.append(
            {"role": "assistant", "content": [tool_use("Bash", {"command": "true"}, id=f"t{i}")]}
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": f"t{i}",
                        "content": f"{tool_result}\n\n<system-reminder>\nnoise\n</system-reminder>",
                    }
                ],
            }
        )
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "system": [{"type": "text", "text": line} for line in system_lines],
        "messages": messages,
        "tools": [{"name": "Bash"}, {"name": "Write"}],
        "max_tokens": 32000,
        "stream": stream,
    }
    if session is not None:
        body["metadata"] = {"user_id": json.dumps({"device_id": "d", "session_id": session})}
    return body


def post(
    server: ModelServer, body: dict[str, Any], path: str = "/v1/messages?beta=true"
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body``; returns (status, lower-cased headers, raw body) even for HTTP errors."""
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            headers = {k.lower(): v for k, v in err.headers.items()}
            return err.code, headers, err.read()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split a text/event-stream body into (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def assemble(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rebuild content blocks from streaming deltas, as a client would."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[data["index"]]["text"] += delta["text"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return [blocks[i] for i in sorted(blocks)]


# --- ModelRequest parsing --------------------------------------------------


def test_model_request_properties() -> None:
    body = make_body("build it", role="implementer", agent="a7", history=2, tool_result="42")
    request = ModelRequest.from_body(body)
    assert request.prompt == "build it"
    assert request.cwd == Path("/tmp/ws")
    assert request.turn_index == 2
    assert request.tool_results == ["42"]
    assert request.role == "implementer"
    assert request.agent_id == "a7"
    assert request.tool_names == ["Bash", "Write"]
    assert request.stream is True
    assert request.session_id == "sess-1"
    assert "agentgrove-role: implementer" in request.system


def test_model_request_session_header_fallback_and_anonymous_key() -> None:
    body = make_body(session=None)
    assert ModelRequest.from_body(body, "hdr-1").conversation_key == "hdr-1"
    anonymous = ModelRequest.from_body(body)
    assert anonymous.session_id is None
    same = ModelRequest.from_body(make_body(session=None))
    other = ModelRequest.from_body(make_body("other", session=None))
    assert anonymous.conversation_key == same.conversation_key
    assert anonymous.conversation_key != other.conversation_key


def test_turn_stop_reason_and_helpers() -> None:
    assert say("hi").stop_reason == "end_turn"
    assert write_file("a.txt", "x").stop_reason == "tool_use"
    mixed = Turn([text("running"), tool_use("Bash", {"command": "ls"})], Usage(10, 5))
    assert mixed.stop_reason == "tool_use"
    assert mixed.blocks[1]["id"].startswith("toolu_")
    assert bash("ls").blocks[0]["input"] == {"command": "ls"}
    assert Fault.status(529).then(say("x"))[0] == Fault.status(529)


# --- server over HTTP ------------------------------------------------------


def test_streaming_sse_turn() -> None:
    script = Script().on(
        role="worker",
        turns=[Turn([text("Writing."), tool_use("Write", {"file_path": "a.txt", "content": "x"})])],
    )
    with ModelServer(script) as server:
        status, headers, raw = post(server, make_body())
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(raw)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    blocks = assemble(events)
    assert blocks[0] == {"type": "text", "text": "Writing."}
    assert blocks[1]["name"] == "Write"
    assert blocks[1]["input"] == {"file_path": "a.txt", "content": "x"}
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 120
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 30
    server.assert_done()


def test_json_mode_turn() -> None:
    script = Script().on(role="worker", turns=[Turn([text("hello")], Usage(7, 3))])
    with ModelServer(script) as server:
        status, headers, raw = post(server, make_body(stream=False), path="/v1/messages")
        assert len(server.requests) == 1
        assert server.requests[0].stream is False
    assert status == 200
    assert headers["content-type"] == "application/json"
    message = json.loads(raw)
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "hello"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == 7
    assert message["usage"]["output_tokens"] == 3


def test_turn_index_selects_reply_and_callable_turn_sees_tool_results() -> None:
    def echo(request: ModelRequest) -> Turn:
        return say("got " + "|".join(request.tool_results))

    script = Script().on(role="worker", turns=[bash("echo hi"), echo, say("last")])
    with ModelServer(script) as server:
        first = assemble(parse_sse(post(server, make_body(history=0))[2]))
        second = json.loads(post(server, make_body(history=1, tool_result="hi", stream=False))[2])
        third = json.loads(post(server, make_body(history=2, stream=False))[2])
        server.assert_done()
    assert first[0]["type"] == "tool_use"
    assert first[0]["input"] == {"command": "echo hi"}
    assert second["content"] == [{"type": "text", "text": "got hi"}]
    assert third["content"] == [{"type": "text", "text": "last"}]


def test_unexpected_request_is_400_and_recorded() -> None:
    script = Script().on(role="worker", turns=[say("only one")])
    with ModelServer(script) as server:
        status, _, raw = post(server, make_body(role="stranger", prompt="hello there"))
        past_end_status, _, _ = post(server, make_body(history=1))
        errors = server.errors
        with pytest.raises(AssertionError) as excinfo:
            server.assert_done()
    assert status == 400
    payload = json.loads(raw)
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    message = payload["error"]["message"]
    assert message.startswith("scripted model server: unexpected request")
    assert "role='stranger'" in message
    assert "turn=0" in message
    assert "hello there" in message
    assert past_end_status == 400
    assert len(errors) == 2
    assert "only 1 turn" in errors[1]
    assert "unexpected" in str(excinfo.value)


def test_unconsumed_turns_reported_optional_excluded() -> None:
    script = (
        Script()
        .on(role="worker", turns=[say("one"), say("two")])
        .on(role="never", turns=[say("unused")])
        .on(role="maybe", turns=[say("optional")], optional=True)
    )
    with ModelServer(script) as server:
        assert post(server, make_body())[0] == 200
        unconsumed = script.unconsumed()
        with pytest.raises(AssertionError) as excinfo:
            server.assert_done()
    assert len(unconsumed) == 2
    assert "role='worker'" in unconsumed[0]
    assert "turns[1]" in unconsumed[0]
    assert "two" in unconsumed[0]
    assert "role='never'" in unconsumed[1]
    assert "optional" not in str(excinfo.value)


def test_fault_429_with_retry_after_then_success_on_repeat() -> None:
    script = Script().on(
        role="worker", turns=[Fault.status(429, retry_after=2).then(say("recovered"))]
    )
    with ModelServer(script) as server:
        status1, headers1, raw1 = post(server, make_body(stream=False))
        status2, _, raw2 = post(server, make_body(stream=False))
        other_status, _, _ = post(server, make_body(stream=False, session="sess-2"))
        server.assert_done()
    assert status1 == 429
    assert headers1["retry-after"] == "2"
    assert json.loads(raw1)["error"]["type"] == "rate_limit_error"
    assert status2 == 200
    assert json.loads(raw2)["content"][0]["text"] == "recovered"
    # attempts are counted per conversation: a new session starts with the fault again
    assert other_status == 429


@pytest.mark.parametrize(("code", "kind"), [(529, "overloaded_error"), (500, "api_error")])
def test_fault_status_error_types(code: int, kind: str) -> None:
    script = Script().on(role="worker", turns=[[Fault.status(code), say("ok")]])
    with ModelServer(script) as server:
        status, headers, raw = post(server, make_body())
        assert post(server, make_body())[0] == 200
    assert status == code
    assert "retry-after" not in headers
    assert json.loads(raw)["error"]["type"] == kind


def test_fault_drop_truncates_stream() -> None:
    script = Script().on(role="worker", turns=[Fault.drop().then(say("after drop"))])
    with ModelServer(script) as server:
        status, _, raw = post(server, make_body())
        again = json.loads(post(server, make_body(stream=False))[2])
        server.assert_done()
    assert status == 200
    names = [name for name, _ in parse_sse(raw)]
    assert names == ["message_start"]
    assert again["content"][0]["text"] == "after drop"


def test_fault_slow_delivers_whole_turn() -> None:
    script = Script().on(role="worker", turns=[Fault.slow(0.2, say("slowly"))])
    with ModelServer(script) as server:
        started = time.monotonic()
        raw = post(server, make_body())[2]
        elapsed = time.monotonic() - started
        server.assert_done()
    assert elapsed >= 0.2
    assert assemble(parse_sse(raw)) == [{"type": "text", "text": "slowly"}]


def test_stop_releases_stalled_reply() -> None:
    script = Script().on(role="worker", turns=[Fault.slow(60.0)])
    server = ModelServer(script).start()
    result: list[bytes] = []
    client = threading.Thread(target=lambda: result.append(post(server, make_body())[2]))
    client.start()
    deadline = time.monotonic() + 10
    while not server.requests and time.monotonic() < deadline:
        client.join(0.01)
    server.stop()
    client.join(10)
    assert not client.is_alive()
    assert [name for name, _ in parse_sse(result[0])] == ["message_start"]


def test_times_routes_later_conversations_to_later_rules() -> None:
    script = (
        Script()
        .on(role="worker", times=1, turns=[bash("first"), say("first done")])
        .on(role="worker", turns=[say("everyone else")])
    )
    with ModelServer(script) as server:
        a0 = json.loads(post(server, make_body(stream=False, session="a"))[2])
        b0 = json.loads(post(server, make_body(stream=False, session="b"))[2])
        a1 = json.loads(post(server, make_body(stream=False, session="a", history=1))[2])
        c0 = json.loads(post(server, make_body(stream=False, session="c"))[2])
        server.assert_done()
    assert a0["content"][0]["input"] == {"command": "first"}
    assert b0["content"][0]["text"] == "everyone else"
    assert a1["content"][0]["text"] == "first done"
    assert c0["content"][0]["text"] == "everyone else"


def test_match_prompt_and_handler_fallback() -> None:
    script = Script().on(prompt_contains="magic", turns=[say("by prompt")])
    script.on(match=lambda r: r.agent_id == "a9", turns=[say("by predicate")])

    @script.handler
    def fallback(request: ModelRequest) -> Turn | None:
        return say(f"handled {request.prompt}") if request.role == "worker" else None

    with ModelServer(script) as server:
        by_prompt = json.loads(post(server, make_body("some magic words", stream=False))[2])
        by_match = json.loads(post(server, make_body(agent="a9", session="s9", stream=False))[2])
        handled = json.loads(post(server, make_body("plain", session="s3", stream=False))[2])
        status, _, _ = post(server, make_body(role="nobody", session="s4"))
        assert len(server.errors) == 1
    assert by_prompt["content"][0]["text"] == "by prompt"
    assert by_match["content"][0]["text"] == "by predicate"
    assert handled["content"][0]["text"] == "handled plain"
    assert status == 400


def test_count_tokens_and_unknown_path() -> None:
    with ModelServer(Script()) as server:
        status, _, raw = post(server, make_body(), path="/v1/messages/count_tokens?beta=true")
        missing, _, _ = post(server, make_body(), path="/v1/other")
        errors = server.errors
    assert status == 200
    assert json.loads(raw)["input_tokens"] > 0
    assert missing == 404
    assert len(errors) == 1
    assert "/v1/other" in errors[0]


def test_env_and_serve_forever_until_stop() -> None:
    server = ModelServer(Script())
    worker = threading.Thread(target=server.serve_forever, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    port = 0
    while not port and time.monotonic() < deadline:
        try:
            port = server.port
        except RuntimeError:
            worker.join(0.01)
    env = server.env()
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["ENABLE_TOOL_SEARCH"] == "false"
    assert env["ANTHROPIC_API_KEY"]
    server.stop()
    worker.join(10)
    assert not worker.is_alive()


# --- end to end: the real CLI ----------------------------------------------


async def run_agent(
    server: ModelServer, cwd: Path, role: str, agent: str, prompt: str
) -> tuple[Any, list[Any]]:
    """Run one claude-agent-sdk query; returns (ResultMessage, all messages)."""
    from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

    options = ClaudeAgentOptions(
        cwd=cwd,
        model="claude-haiku-4-5",
        system_prompt=f"agentgrove-role: {role}\nagentgrove-agent: {agent}\nYou are the {role}.",
        tools=["Write", "Read", "Bash"],
        allowed_tools=["Write", "Read", "Bash"],
        permission_mode="acceptEdits",
        max_turns=5,
        env=server.env(),
    )
    messages: list[Any] = []
    result: Any = None
    async for message in query(prompt=prompt, options=options):
        messages.append(message)
        if isinstance(message, ResultMessage):
            result = message
    assert result is not None, messages
    return result, messages


@pytest.mark.e2e
def test_e2e_file_writer(tmp_path: Path) -> None:
    with ModelServer(file_writer_script("notes/hello.txt", "hi from grove\n")) as server:
        result, _ = anyio.run(
            run_agent, server, tmp_path, "file-writer", "a1", "Write notes/hello.txt"
        )
        server.assert_done()
        requests = server.requests
    assert (tmp_path / "notes" / "hello.txt").read_text() == "hi from grove\n"
    assert result.is_error is False
    assert result.result == "Created notes/hello.txt"
    assert result.total_cost_usd is not None
    assert result.total_cost_usd > 0
    assert [r.turn_index for r in requests] == [0, 1]
    assert requests[0].cwd == tmp_path
    assert requests[0].agent_id == "a1"
    assert requests[0].prompt == "Write notes/hello.txt"


@pytest.mark.e2e
def test_e2e_demo_script_three_roles(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with ModelServer(demo_script()) as server:
        results = {}
        for role, prompt in [
            ("spec-writer", "Write SPEC.md for greet.py"),
            ("implementer", "Implement greet.py per SPEC.md"),
            ("tester", "Test greet.py"),
        ]:
            results[role], _ = anyio.run(run_agent, server, tmp_path, role, f"{role}-1", prompt)
        server.assert_done()
        tester_requests = [r for r in server.requests if r.role == "tester"]
    assert "Hello, <name>!" in (tmp_path / "SPEC.md").read_text()
    ran = subprocess.run(
        ["python3", "greet.py", "Grove"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert ran.stdout.strip() == DEMO_GREETING
    assert tester_requests[-1].tool_results == [DEMO_GREETING]
    verdict = results["tester"].result
    assert verdict.startswith("Ran greet.py:")
    assert DEMO_GREETING in verdict
    assert verdict.endswith("PASS")
    assert all(r.total_cost_usd > 0 for r in results.values())


def test_demo_tester_fails_without_greeting() -> None:
    script = demo_script()
    first = script.resolve(ModelRequest.from_body(make_body(role="tester")))
    assert isinstance(first.reply, Turn)
    assert first.reply.blocks[0]["input"]["command"] == "python3 greet.py Grove"
    bad = script.resolve(
        ModelRequest.from_body(make_body(role="tester", history=1, tool_result="Traceback"))
    )
    good = script.resolve(
        ModelRequest.from_body(make_body(role="tester", history=1, tool_result=DEMO_GREETING))
    )
    assert isinstance(bad.reply, Turn)
    assert isinstance(good.reply, Turn)
    assert bad.reply.blocks[0]["text"].endswith("FAIL")
    assert good.reply.blocks[0]["text"].endswith("PASS")
