"""grove starts the Claude CLI itself, before the SDK is imported (runtime/_cli_start.py): the
command line and environment it starts it with must be the ones the SDK's own transport
builds from the options grove gives the SDK. Both start a small program that records the argv
and environment it received; the records must be equal, for every shape of attempt grove
makes (sandboxed or not, read-only role, orchestrator tools, a resumed session, a role's own
model, an ``env_allow`` pattern). An SDK upgrade that changes either fails here."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport
from claude_agent_sdk.types import _configure_can_use_tool

from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunSpec
from agentgrove.runtime._cli_start import (
    CliCall,
    CliStarter,
    StartedCli,
    command,
    environment,
    plan,
)
from agentgrove.runtime.claude import ClaudeRuntime
from agentgrove.testing import ModelServer, Script, say
from agentgrove.workspaces import init_repo


class _Delegate:
    """Never called: only its presence gives the attempt the orchestrator tools."""

    async def spawn_agent(self, role: str, task: str) -> str:
        raise AssertionError("not called")

    async def wait_agents(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        raise AssertionError("not called")

    async def merge_agent(self, agent_id: str) -> dict[str, Any]:
        raise AssertionError("not called")

    async def agent_result(self, agent_id: str) -> dict[str, Any]:
        raise AssertionError("not called")

    async def ask_human(self, question: str, choices: list[str]) -> str:
        raise AssertionError("not called")

    def asked(self) -> bool:
        return False


def _recorder(tmp_path: Path) -> Path:
    """A program that writes its argv and environment to ``$RECORD_TO`` and exits."""
    program = tmp_path / "record-cli"
    program.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['RECORD_TO'], 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, out)\n"
    )
    program.chmod(0o700)
    return program


def _through_sdk(runtime: ClaudeRuntime, spec: RunSpec, call: CliCall) -> dict[str, Any]:
    options = _configure_can_use_tool(runtime._options(spec, call, []))
    record = Path(call.env["RECORD_TO"])

    async def start() -> None:
        async def no_prompt() -> Any:
            return
            yield

        transport = SubprocessCLITransport(prompt=no_prompt(), options=options)
        await transport.connect()
        with anyio.fail_after(30):
            while not record.exists():
                await anyio.sleep(0.01)  # polls the program's record (no event to wait on)
        await transport.close()

    anyio.run(start)
    recorded: dict[str, Any] = json.loads(record.read_text())
    record.unlink()
    return recorded


def _through_grove(call: CliCall) -> dict[str, Any]:
    record = Path(call.env["RECORD_TO"])

    async def start() -> None:
        process = await anyio.open_process(command(call), cwd=str(call.cwd), env=environment(call))
        with anyio.fail_after(30):
            await process.wait()

    anyio.run(start)
    recorded: dict[str, Any] = json.loads(record.read_text())
    record.unlink()
    return recorded


SHAPES: dict[str, dict[str, Any]] = {
    "file-writer, sandboxed": {"role": "file-writer", "confined": True},
    "tester, no sandbox": {"role": "tester", "confined": False},
    "reviewer (read-only Bash), sandboxed": {"role": "reviewer", "confined": True},
    "orchestrator tools": {"role": "planner", "confined": True, "delegate": True},
    "resumed session": {"role": "implementer", "confined": True, "resume": "0b9d-11ef"},
    "an env_allow pattern": {"role": "tester", "confined": True, "allow": ("MY_TOOL_*",)},
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_grove_starts_the_cli_as_the_sdk_would(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = SHAPES[shape]
    # Inherited variables: one the wrapper drops, one an env_allow pattern keeps, one the
    # SDK itself leaves out.
    monkeypatch.setenv("SOME_SECRET", "s3cret")
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    monkeypatch.setenv("CLAUDECODE", "1")
    worktree = tmp_path / "wt"
    init_repo(worktree, {"README.md": "x\n"})
    role = BUILTIN_ROLES[settings["role"]]
    spec = RunSpec(
        agent_id="c11c0ffee001",
        role=role,
        prompt="Say done",
        model=role.model,
        cwd=worktree,
        max_turns=7,
        max_budget_usd=0.5,
        timeout_s=60,
        attempt=2,
        resume_session_id=settings.get("resume"),
        env={"RECORD_TO": str(tmp_path / "record.json")},
        delegate=_Delegate() if settings.get("delegate") else None,
        home=tmp_path / "grove-home",
        git_dir=worktree / ".git",
    )
    (tmp_path / "grove-home").mkdir()
    allow = ("PATH", "HOME", "CLAUDE_*", *settings.get("allow", ()))
    call = plan(
        spec,
        cli_path=_recorder(tmp_path),
        confined=settings["confined"],
        env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
        allow=allow,
    )
    runtime = ClaudeRuntime(sandbox="auto" if settings["confined"] else "off")

    sdk = _through_sdk(runtime, spec, call)
    ours = _through_grove(call)

    assert ours["argv"] == sdk["argv"]
    assert ours["env"] == sdk["env"]
    # What each shape is about reached the command line.
    argv = " ".join(sdk["argv"])
    assert ('"sandbox"' in argv) == settings["confined"]
    assert ("mcp__grove" not in argv) and (("--mcp-config" in argv) == bool(spec.delegate))
    assert ("--resume=0b9d-11ef" in argv) == bool(spec.resume_session_id)
    assert "SOME_SECRET" in sdk["env"]["GROVE_CLI_DROP"].split()
    assert ("MY_TOOL_HOME" in sdk["env"]["GROVE_CLI_DROP"].split()) != bool(settings.get("allow"))
    assert "CLAUDECODE" not in sdk["env"]


def test_a_started_cli_that_is_never_run_is_killed_and_reaped(tmp_path: Path) -> None:
    """A start whose run never happens (the runtime could not be built, the attempt was
    cancelled while the SDK was imported) leaves no process behind."""
    worktree = tmp_path / "wt"
    init_repo(worktree, {"README.md": "x\n"})
    role = BUILTIN_ROLES["tester"]
    spec = RunSpec(
        agent_id="c11c0ffee001",
        role=role,
        prompt="Say done",
        model=role.model,
        cwd=worktree,
        max_turns=3,
        max_budget_usd=0.5,
        timeout_s=60,
        home=tmp_path / "grove-home",
    )
    (tmp_path / "grove-home").mkdir()

    async def start_and_discard() -> int:
        with ModelServer(Script().on(turns=[say("done")])) as server:
            starter = CliStarter(env=server.env())
            begun = await starter.start(spec)
            assert isinstance(begun, StartedCli), begun
            assert begun.process.returncode is None  # still starting: waits for initialize
            pid = begun.process.pid
            await begun.discard()
            return pid

    pid = anyio.run(start_and_discard)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no such process, not even a zombie


def test_the_call_keeps_grove_s_allow_list_and_markers(tmp_path: Path) -> None:
    """The environment grove gives the CLI: its own settings, the attempt's markers, and the
    wrapper's drop list (the values ClaudeRuntime gave the SDK before grove started the CLI)."""
    role = BUILTIN_ROLES["tester"]
    spec = RunSpec(
        agent_id="c11c0ffee001",
        role=role,
        prompt="x",
        model=role.model,
        cwd=tmp_path,
        max_turns=3,
        max_budget_usd=0.5,
        timeout_s=60,
        attempt=3,
    )
    call = plan(spec, cli_path=tmp_path / "cli", confined=False, env={"A": "1"}, allow=())
    assert call.env["A"] == "1"
    assert call.env["GROVE_AGENT_ID"] == "c11c0ffee001"
    assert call.env["GROVE_AGENT_ATTEMPT"] == "3"
    assert dataclasses.replace(call, settings=None) == call  # not confined: no settings
