"""Start one attempt's Claude CLI without importing claude_agent_sdk.

Importing the SDK costs ~0.4-0.9 s of the interpreter (``mcp``'s pydantic models, which the
SDK's ``__init__`` loads), and the CLI's own start, its Bash sandbox included, takes ~0.5 s in
which it needs nothing from the SDK: it waits for the ``initialize`` request on its stdin.
Starting the CLI here first lets the two overlap, so ``grove run`` and a worker's first
agents no longer wait for the import before their CLI starts. :mod:`.claude` then hands the
running process to the SDK (``_StartedTransport``), which does everything else as usual.

Contract: :func:`command` and :func:`environment` are what the SDK's
``SubprocessCLITransport`` builds for the options :class:`~.claude.ClaudeRuntime` gives it
for the same :class:`CliCall` (the subset of ``ClaudeAgentOptions`` grove sets, with
``can_use_tool``, hence ``--permission-prompt-tool stdio``). tests/test_cli_start.py starts a
program through both and compares the argv and environment it received, so an SDK upgrade
that changes either fails there instead of drifting silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
from anyio.abc import Process

from agentgrove.models import ErrorKind
from agentgrove.processes import marker_env
from agentgrove.runtime._base import RunResult, RunSpec
from agentgrove.runtime._endpoint import CLI_ENV_DEFAULTS
from agentgrove.runtime._environment import (
    DEFAULT_ALLOW,
    DROP_ENV,
    dropped_names,
    real_cli,
    wrapper_for,
)
from agentgrove.runtime._homes import private_homes
from agentgrove.runtime._policy import SANDBOX_MISSING, SandboxMode, can_write, needs_sandbox

SERVER_NAME = "grove"
"""The in-process MCP server of the orchestrator tools (:mod:`._orchestrator_tools`)."""
TOOL_NAMES = [
    f"mcp__{SERVER_NAME}__{n}"
    for n in ("spawn_agent", "wait_agents", "merge_agent", "agent_result", "ask_human")
]
SDK_DISTRIBUTION = "claude-agent-sdk"
_SESSION_STATE_ENV = "CLAUDE_CODE_SDK_READS_SESSION_STATE"
_DERIVED_CLIENT_APP_ENV = "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP"


def sandbox_available() -> bool:
    """Whether the CLI's Bash sandbox can work here (it needs bubblewrap and socat)."""
    return shutil.which("bwrap") is not None and shutil.which("socat") is not None


@dataclasses.dataclass(frozen=True)
class CliCall:
    """What one attempt asks of the CLI: the ``ClaudeAgentOptions`` fields grove sets."""

    cli_path: Path
    cwd: Path
    system_prompt: str
    model: str
    tools: list[str]
    """The built-in tools offered (the orchestrator tools come through ``mcp_servers``)."""
    allowed: list[str]
    """Every tool the role may call, the orchestrator tools included (``can_use_tool``)."""
    mcp_servers: tuple[str, ...]
    """Names of the in-process MCP servers (each an SDK server, built by the runtime)."""
    max_turns: int
    max_budget_usd: float
    resume: str | None
    settings: str | None
    env: dict[str, str]


def plan(
    spec: RunSpec,
    *,
    cli_path: Path,
    confined: bool,
    env: Mapping[str, str],
    allow: tuple[str, ...],
) -> CliCall:
    """The CLI call of ``spec``: its tools, the sandbox settings when ``confined``, and its
    environment (``env``, the spec's, the attempt's markers, and the names the wrapper drops:
    every inherited variable neither set here nor matching ``allow``)."""
    tools = list(spec.role.tools)
    worktree = spec.cwd.resolve()
    servers: tuple[str, ...] = ()
    if spec.delegate is not None:
        servers = (SERVER_NAME,)
        tools += TOOL_NAMES
    call_env = {**env, **spec.env, **marker_env(spec.agent_id, spec.attempt)}
    call_env[DROP_ENV] = " ".join(dropped_names(os.environ, allow, call_env))
    settings: dict[str, Any] = {}
    if confined:
        settings["sandbox"] = sandbox_settings(
            worktree,
            spec.home,
            git_dir=spec.git_dir,
            writable=can_write(spec.role.tools, spec.role.bash),
        )
    return CliCall(
        cli_path=cli_path,
        cwd=worktree,
        system_prompt=spec.system_prompt,
        model=spec.model,
        tools=[t for t in tools if t not in TOOL_NAMES],
        allowed=tools,
        mcp_servers=servers,
        max_turns=spec.max_turns,
        max_budget_usd=spec.max_budget_usd,
        resume=spec.resume_session_id,
        settings=json.dumps(settings) if settings else None,
        env=call_env,
    )


def sandbox_settings(
    worktree: Path, home: Path | None, *, git_dir: Path | None = None, writable: bool = True
) -> dict[str, Any]:
    """The CLI's sandbox for an agent's Bash: writes only in the worktree (the CLI's own rule)
    and not even there for a role that cannot write; never in the main git directory (refs,
    objects, packed-refs, this worktree's HEAD and index: grove commits for the agent); no
    command outside it; nothing of the grove home readable but the agent's own worktree (the
    database, other agents' worktrees, the CLI wrapper), nothing of ``$HOME`` but toolchains,
    nothing of ``grove demo``'s repositories."""
    settings: dict[str, Any] = {"enabled": True, "allowUnsandboxedCommands": False}
    deny_read, allow_read = private_homes(worktree, git_dir)
    if home is not None:
        deny_read.append(str(home.resolve()))
    # A role that cannot write gets every entry of its worktree read-only (not the worktree
    # itself: the CLI must create its masks for .gitconfig, .gitmodules... there); a new file
    # at the top stays possible, and grove commits nothing of such a role.
    deny_write = [] if writable else sorted(str(p) for p in worktree.iterdir())
    if git_dir is not None:
        deny_write.append(str(git_dir.resolve()))
    settings["filesystem"] = {
        "denyRead": deny_read,
        "allowRead": allow_read,
        "denyWrite": deny_write,
    }
    return settings


def command(call: CliCall) -> list[str]:
    """The CLI's argv, in the SDK's order (``SubprocessCLITransport._build_command``)."""
    cmd = [str(call.cli_path), "--output-format", "stream-json", "--verbose"]
    cmd += ["--system-prompt", call.system_prompt]
    cmd += ["--tools", ",".join(call.tools)]
    if call.max_turns:
        cmd += ["--max-turns", str(call.max_turns)]
    cmd += ["--max-budget-usd", str(call.max_budget_usd)]
    if call.model:
        cmd += ["--model", call.model]
    # can_use_tool routes the CLI's permission prompts over the control protocol.
    cmd += ["--permission-prompt-tool", "stdio", "--permission-mode", "acceptEdits"]
    if call.resume:
        cmd.append(f"--resume={call.resume}")  # the equals form: never parsed as a flag
    if call.settings:
        cmd += ["--settings", call.settings]
    if call.mcp_servers:
        servers = {name: {"type": "sdk", "name": name} for name in call.mcp_servers}
        cmd += ["--mcp-config", json.dumps({"mcpServers": servers})]
    cmd += ["--setting-sources=", "--input-format", "stream-json"]
    return cmd


def environment(call: CliCall, inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment as the SDK builds it (``SubprocessCLITransport.connect``):
    ``inherited`` (``os.environ``) less ``CLAUDECODE``, the SDK's entry point, the call's
    ``env``, the SDK's version, a request for its session-state frames, and ``PWD``."""
    env = {k: v for k, v in (os.environ if inherited is None else inherited).items()}
    env.pop("CLAUDECODE", None)
    env = {
        **env,
        "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
        **call.env,
        "CLAUDE_AGENT_SDK_VERSION": importlib.metadata.version(SDK_DISTRIBUTION),
    }
    # No app label: the SDK derives one only for CLIs newer than any release so far.
    env.pop(_DERIVED_CLIENT_APP_ENV, None)
    _trace_context(env, call.env)
    if not any(key.upper() == _SESSION_STATE_ENV for key in env):
        env[_SESSION_STATE_ENV] = "1"
    env["PWD"] = str(call.cwd)
    return env


def _trace_context(env: dict[str, str], explicit: Mapping[str, str]) -> None:
    """The active OpenTelemetry span's context, as the SDK propagates it. Without
    ``opentelemetry`` imported nothing can have started a span, so nothing is imported here."""
    if "opentelemetry" not in sys.modules:
        return
    try:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    except Exception:  # best effort, as in the SDK: tracing never stops a run
        return
    if "traceparent" not in carrier:
        return
    for key in ("TRACEPARENT", "TRACESTATE"):
        if key not in explicit:
            env.pop(key, None)
    for key, value in carrier.items():
        if key.upper() not in explicit:
            env[key.upper()] = value


@dataclasses.dataclass
class StartedCli:
    """A CLI started for one attempt, waiting for the SDK's ``initialize``."""

    call: CliCall
    process: Process
    started: float
    """``time.monotonic()`` when it was started."""

    async def discard(self) -> None:
        """Kill and reap it: for a start whose run never happens (cancelled, no runtime)."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.aclose()


class CliStarter:
    """Starts the CLI of one attempt; :class:`~.claude.ClaudeRuntime` runs it."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        sandbox: SandboxMode = "auto",
        env_allow: tuple[str, ...] = (),
        sandbox_check: Callable[[], bool] = sandbox_available,
    ) -> None:
        self._env = {**CLI_ENV_DEFAULTS, **(env or {})}
        self._sandbox = sandbox
        self._sandbox_check = sandbox_check
        self._allow = (*DEFAULT_ALLOW, *env_allow)
        self._real_cli: str | None = None

    async def start(self, spec: RunSpec) -> StartedCli | RunResult:
        """The CLI of ``spec``, started; or why it cannot start (a ``permanent`` failure:
        the sandbox it needs cannot work here, the CLI or its wrapper is unusable)."""
        confined = self._sandbox != "off" and self._sandbox_check()
        if not confined and needs_sandbox(self._sandbox, spec.role.tools, spec.role.bash):
            return RunResult(
                success=False,
                error=SANDBOX_MISSING.format(role=f"role {spec.role.name}"),
                error_kind=ErrorKind.PERMANENT,
            )
        try:
            # Verified (owner, mode, content) before every run, never reused blindly: grove
            # runs it with the worker's whole environment.
            self._real_cli = self._real_cli or real_cli()
            cli_path = wrapper_for(self._real_cli, spec.home)
        except OSError as exc:
            return RunResult(
                success=False,
                error=f"the Claude CLI cannot be started: {exc}",
                error_kind=ErrorKind.PERMANENT,
            )
        call = plan(spec, cli_path=cli_path, confined=confined, env=self._env, allow=self._allow)
        started = time.monotonic()
        try:
            process = await anyio.open_process(
                command(call),
                stdin=PIPE,
                stdout=PIPE,
                stderr=PIPE,
                cwd=str(call.cwd),
                env=environment(call),
            )
        except OSError as exc:
            return RunResult(
                success=False,
                error=f"the Claude CLI cannot be started: {exc}",
                error_kind=ErrorKind.MODEL_ERROR,
            )
        return StartedCli(call=call, process=process, started=started)
