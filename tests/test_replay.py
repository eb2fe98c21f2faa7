"""Record and replay: `grove dev record` proxies to an upstream and saves each conversation;
`grove dev model-server --replay` plays them back offline and fails loudly on a divergence.

The upstream is the scripted model server itself, so the whole loop runs offline: real CLI
processes for grove, the recorder and the replaying server; real SDK and Claude CLI agents."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentgrove.testing import Fault, ModelServer, Script, playground_script, say, write_file
from agentgrove.testing._record import Recorder, load_recording
from agentgrove.testing._replay import Replayer
from agentgrove.workspaces import IDENTITY, run_git
from tests.conftest import GROVE, run_cli

HEADER_KEY = "sk-ant-api03-header-only-key-7f3a9c2e1b"
"""The agents' key in these tests: sent in their headers, never in the recorder's env."""
BEARER_TOKEN = "oauth-token-5d1e8b7a2c9f4e60"


@dataclass
class Served:
    """A serving grove process: the environment its `export` line gives; its stderr once
    stopped."""

    env: dict[str, str]
    url: str
    stderr: str = field(default="")
    returncode: int | None = None


@contextmanager
def serving(*args: str, cwd: Path, env: dict[str, str]) -> Iterator[Served]:
    process = subprocess.Popen(
        [*GROVE, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    first = process.stdout.readline() if ready else ""
    export = process.stdout.readline() if ready else ""
    if not export.startswith("export "):
        process.kill()
        _, err = process.communicate(timeout=30)
        raise AssertionError(f"grove {' '.join(args)} did not start: {first}{export}{err}")
    pairs = dict(part.split("=", 1) for part in shlex.split(export)[1:])
    served = Served(pairs, pairs["ANTHROPIC_BASE_URL"])
    try:
        yield served
    finally:
        process.terminate()
        _, served.stderr = process.communicate(timeout=30)
        served.returncode = process.returncode


def _environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    return {**env, **extra}


def _post(
    url: str, body: dict[str, Any], credential: tuple[str, str] = ("x-api-key", HEADER_KEY)
) -> tuple[int, str, bytes]:
    """POST /v1/messages with the ``(header, value)`` credential; (status, content-type, body
    bytes)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(
            "POST",
            "/v1/messages",
            json.dumps(body),
            {
                "content-type": "application/json",
                credential[0]: credential[1],
                "anthropic-version": "2023-06-01",
            },
        )
        response = connection.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        connection.close()


def _body(
    prompt: str, *, stream: bool, history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": stream,
        "system": "agentgrove-role: file-writer\nagentgrove-agent: ag-1234",
        "metadata": {"user_id": json.dumps({"session_id": f"s-{prompt}-{stream}"})},
        "messages": [{"role": "user", "content": prompt}, *(history or [])],
    }


def test_recorder_relays_streams_byte_for_byte_saves_no_key_and_replays_them(
    tmp_path: Path,
) -> None:
    """In process: what the client got through the recorder is what the replay sends, for a
    stream and a plain reply; the file holds neither the header's key nor the environment's."""
    upstream_script = Script().on(
        role="file-writer", turns=[write_file("a.txt", "hi"), say("done")]
    )
    upstream_script.on(role="file-writer", prompt_contains="plain", turns=[say("plain reply")])
    recording = tmp_path / "rec.jsonl"
    history = [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "Write", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": f"wrote it; key {HEADER_KEY}",
                }
            ],
        },
    ]
    with ModelServer(upstream_script) as upstream:
        recorder = Recorder(recording, upstream.url)
        with ModelServer(Script(), forward=recorder) as proxy:
            got = [
                _post(proxy.url, _body("Create a.txt", stream=True)),
                _post(proxy.url, _body("Create a.txt", stream=True, history=history)),
                _post(proxy.url, _body("plain", stream=False)),
            ]
            bearer = ("authorization", f"Bearer {BEARER_TOKEN}")
            assert _post(proxy.url, _body(f"plain {BEARER_TOKEN}", stream=False), bearer)[0] == 200
    assert [status for status, _, _ in got] == [200, 200, 200]
    assert got[0][1] == "text/event-stream" and b"event: message_stop" in got[0][2]
    assert got[2][1] == "application/json"
    text = recording.read_text()
    assert HEADER_KEY not in text and "sk-test-not-a-real-key" not in text
    assert BEARER_TOKEN not in text
    assert len(load_recording(recording).exchanges) == 4
    assert "[redacted" in text  # the key echoed by the tool result was replaced

    replayer = Replayer(load_recording(recording))
    with ModelServer(Script.from_handler(replayer)) as replay:
        again = [
            _post(replay.url, _body("Create a.txt", stream=True)),
            _post(replay.url, _body("Create a.txt", stream=True, history=history)),
            _post(replay.url, _body("plain", stream=False)),
        ]
        assert again == got  # status, content type and every byte
        changed = [
            {**history[0]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "other"}],
            },
        ]
        status, _, body = _post(replay.url, _body("Create a.txt", stream=True, history=changed))
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "--replay" in message and "diverges" in message and "'other'" in message
    assert replayer.divergences == [message]
    lines, code = replayer.report()
    assert code == 1 and lines[-1] == f"replayed 3 request(s) from {recording}, 1 divergence(s)"
    # The Bearer request was never replayed (its task as saved: the token redacted).
    assert lines[:-1] == [
        "recorded conversation 3 (role 'file-writer', task 'plain [redacted:REQUEST_CREDENTIAL_0]')"
        " turn 0 never replayed"
    ], lines


def _branch_file(repo: Path, agent_id: str, path: str) -> str:
    shown = subprocess.run(
        ["git", "show", f"grove/{agent_id}:{path}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _status(repo: Path, agent_id: str) -> str:
    shown = run_cli("show", agent_id, "--json", cwd=repo)
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["status"])


def _tokens(out: str) -> str:
    found = re.search(r"\d+ in / \d+ out tokens", out)
    assert found, out
    return found.group(0)


@pytest.mark.e2e
def test_a_grove_run_recorded_through_the_proxy_replays_offline_and_a_new_task_diverges(
    repo: Path, tmp_path: Path
) -> None:
    recording = tmp_path / "run.jsonl"
    assert run_cli("init", cwd=repo).returncode == 0
    task = "Create a.txt containing hi"
    with ModelServer(playground_script()) as upstream:
        with serving(
            "dev",
            "record",
            "--to",
            str(recording),
            "--port",
            "0",
            "--upstream",
            upstream.url,
            cwd=repo,
            env=_environ(),
        ) as recorder:
            assert "ANTHROPIC_API_KEY" not in recorder.env  # the agents keep their own key
            made = run_cli(
                "run",
                "file-writer",
                task,
                cwd=repo,
                env={**recorder.env, "ANTHROPIC_API_KEY": HEADER_KEY},
            )
        assert made.returncode == 0, made.stdout + made.stderr
        assert upstream.requests, "the recorder relayed nothing upstream"
    assert "recorded" in recorder.stderr
    recorded_id = made.stderr.split()[0]
    assert _branch_file(repo, recorded_id, "a.txt") == "hi\n"
    text = recording.read_text()
    assert HEADER_KEY not in text
    assert len(load_recording(recording).exchanges) >= 2  # the Write, then the final text

    # The upstream is gone: the replay answers alone, offline.
    with serving(
        "dev", "model-server", "--replay", str(recording), "--port", "0", cwd=repo, env=_environ()
    ) as replay:
        again = run_cli("run", "file-writer", task, cwd=repo, env=replay.env)
        assert again.returncode == 0, again.stdout + again.stderr
        replayed_id = again.stderr.split()[0]
        assert replayed_id != recorded_id
        assert _branch_file(repo, replayed_id, "a.txt") == "hi\n"
        assert _status(repo, replayed_id) == "completed"
        # The same reply and the same usage figures as the recorded run.
        assert again.stdout.splitlines()[-1] == made.stdout.splitlines()[-1] == "Created a.txt"
        assert _tokens(again.stdout) == _tokens(made.stdout)

        other = run_cli(
            "run", "file-writer", "Create b.txt containing bye", cwd=repo, env=replay.env
        )
        # The same task where a.txt already exists: the recorded Write is refused by the CLI
        # (the file was not read first), so the tool result differs from the recorded one.
        (repo / "a.txt").write_text("old\n")
        run_git(["add", "a.txt"], repo)
        run_git(["commit", "-qm", "a.txt"], repo, identity=IDENTITY)
        changed = run_cli("run", "file-writer", task, cwd=repo, env=replay.env)
    assert other.returncode == 1, other.stdout + other.stderr
    said = other.stdout + other.stderr
    assert "--replay" in said and "diverges" in said and "Create b.txt" in said, said
    assert _status(repo, other.stderr.split()[0]) == "failed"
    assert "diverges from the recording" in replay.stderr and "Create b.txt" in replay.stderr
    # Each divergence once on the server's stderr, though the CLI re-sends a refused request.
    assert replay.stderr.count("diverges from the recording") == 2, replay.stderr
    # Stopped, the server sums up (the run, then turn 0 of the last) and exits 1.
    assert "replayed 3 request(s) from" in replay.stderr and "2 divergence(s)" in replay.stderr
    assert replay.returncode == 1, replay.stderr
    assert changed.returncode == 1, changed.stdout + changed.stderr
    said = changed.stdout + changed.stderr
    assert "--replay" in said and "turn 1 of recorded conversation" in said, said
    assert "File created successfully" in said  # what the recording has, named
    assert _status(repo, changed.stderr.split()[0]) == "failed"


def test_a_missing_or_bad_recording_is_one_line_and_exit_2(tmp_path: Path) -> None:
    good_header = json.dumps(
        {"format": "agentgrove-recording", "version": 1, "upstream": "x", "started": "now"}
    )
    cases = {
        "missing.jsonl": None,
        "empty.jsonl": "",
        "notjson.jsonl": "hello\n",
        "otherformat.jsonl": json.dumps({"format": "something", "version": 1}) + "\n",
        "badline.jsonl": good_header + "\n" + json.dumps({"conversation": "one"}) + "\n",
    }
    expected = {
        "missing.jsonl": "cannot read it (No such file or directory)",
        "empty.jsonl": "the file is empty",
        "notjson.jsonl": "line 1 is not the header of a recording",
        "otherformat.jsonl": "line 1 is not the header of a recording (format:",
        "badline.jsonl": "line 2 is not a recorded exchange (conversation:",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        result = run_cli("dev", "model-server", "--replay", str(path), "--port", "0", cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"grove: error: --replay {path}: "), lines
        assert expected[name] in lines[0] and "grove dev record --to FILE" in lines[0], lines
    both = run_cli(
        "dev", "model-server", "--replay", str(path), "--script", str(path), cwd=tmp_path
    )
    assert both.returncode == 2
    assert both.stderr.strip().splitlines() == ["grove: error: give --script or --replay, not both"]


def test_record_refuses_an_existing_file_a_bad_upstream_and_a_taken_port(tmp_path: Path) -> None:
    existing = tmp_path / "rec.jsonl"
    existing.write_text("keep me\n")
    result = run_cli("dev", "record", "--to", str(existing), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"grove: error: --to {existing}: the file exists; give a new file (or delete it first)"
    ]
    assert existing.read_text() == "keep me\n"

    fresh = tmp_path / "new.jsonl"
    result = run_cli("dev", "record", "--to", str(fresh), "--upstream", "ftp://x", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--upstream 'ftp://x': give an http:// or https:// URL" in result.stderr
    assert not fresh.exists()

    with ModelServer(Script()) as taken:
        result = run_cli(
            "dev", "record", "--to", str(fresh), "--port", str(taken.port), cwd=tmp_path
        )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot serve the recording proxy on 127.0.0.1:" in result.stderr
    assert not fresh.exists()


def test_replay_serves_recorded_retries_in_order_and_names_a_turn_past_the_recording(
    tmp_path: Path,
) -> None:
    """A recorded 529 and its retry replay as they came; two conversations with one task get
    the two recorded ones in turn; a turn the recording lacks diverges, naming it."""
    upstream_script = Script().on(
        role="file-writer", turns=[[Fault.status(529), say("after the retry")]], times=1
    )
    upstream_script.on(role="file-writer", turns=[say("second conversation")])
    recording = tmp_path / "rec.jsonl"
    first, second = _body("same task", stream=False), _body("same task", stream=True)
    upstream = ModelServer(upstream_script).start()
    with upstream, ModelServer(Script(), forward=Recorder(recording, upstream.url)) as proxy:
        got = [_post(proxy.url, first), _post(proxy.url, first), _post(proxy.url, second)]
    assert [status for status, _, _ in got] == [529, 200, 200]

    replayer = Replayer(load_recording(recording))
    assert len(replayer.unreplayed()) == 2
    with ModelServer(Script.from_handler(replayer)) as replay:
        assert [_post(replay.url, first), _post(replay.url, first)] == got[:2]
        assert _post(replay.url, second) == got[2]
        assert replayer.unreplayed() == []
        later = [
            {"role": "assistant", "content": [{"type": "text", "text": "after the retry"}]},
            {"role": "user", "content": "and now?"},
        ]
        status, _, body = _post(replay.url, _body("same task", stream=False, history=later))
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "recorded conversation 1 (role 'file-writer', task 'same task') has no turn 1" in message
    assert message.startswith(f"grove dev model-server --replay {recording}: ")


def test_an_unreachable_upstream_is_a_502_naming_it_and_nothing_is_recorded(
    tmp_path: Path,
) -> None:
    with ModelServer(Script()) as gone:
        url = gone.url  # a port that was just free: nothing listens there after the block
    recording = tmp_path / "rec.jsonl"
    with ModelServer(Script(), forward=Recorder(recording, url)) as proxy:
        status, kind, body = _post(proxy.url, _body("hello", stream=True))
    assert (status, kind) == (502, "application/json")
    assert f"cannot reach the upstream {url}" in json.loads(body)["error"]["message"]
    assert load_recording(recording).exchanges == []


def test_the_upstream_urls_userinfo_is_neither_stored_nor_shown(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    with ModelServer(Script().on(turns=[say("hi")])) as upstream:
        plain_url = upstream.url
        with_userinfo = plain_url.replace("http://", "http://gateway-user:gw-pass-8c1f@")
        recorder = Recorder(recording, with_userinfo)
        with ModelServer(Script(), forward=recorder) as proxy:
            status, _, _ = _post(proxy.url, _body("hello", stream=False))
    assert status == 200
    assert recorder.upstream == plain_url
    assert load_recording(recording).header.upstream == plain_url
    text = recording.read_text()
    assert "gw-pass-8c1f" not in text and "gateway-user" not in text
    # Unreachable, the 502 the agent reads (and its transcript keeps) names the host alone.
    with ModelServer(Script()) as gone:
        url = gone.url.replace("http://", "http://gateway-user:gw-pass-8c1f@")
    with ModelServer(Script(), forward=Recorder(tmp_path / "gone.jsonl", url)) as proxy:
        status, _, body = _post(proxy.url, _body("hello", stream=True))
    assert status == 502 and b"gw-pass-8c1f" not in body and b"gateway-user" not in body
