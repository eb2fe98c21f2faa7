"""ClaudeRuntime: one agent attempt through claude-agent-sdk and its bundled Claude Code CLI.

The only module that imports ``claude_agent_sdk``. Permission set-up that works as root (where
``bypassPermissions`` is refused): ``acceptEdits`` with the role's tools as the offered set and
nothing pre-approved, so every tool call the CLI does not approve itself goes through
:func:`_can_use_tool`, which refuses tools outside the role and paths that resolve (``..`` and
symlinks included) outside the worktree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream, TextSendStream
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ToolPermissionContext,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk._internal._task_compat import spawn_detached
from claude_agent_sdk._internal.transport import subprocess_cli
from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

from agentgrove.models import ErrorKind
from agentgrove.processes import kill_agent_processes
from agentgrove.runtime._base import MessageSink, RunResult, RunSpec
from agentgrove.runtime._classify import classify
from agentgrove.runtime._cli_start import (
    SERVER_NAME,
    CliCall,
    CliStarter,
    StartedCli,
    sandbox_available,
)
from agentgrove.runtime._endpoint import CLI_ENV_DEFAULTS
from agentgrove.runtime._orchestrator_tools import ASK_HUMAN, orchestrator_server
from agentgrove.runtime._policy import BashPolicy, SandboxMode, bash_refusal
from agentgrove.secrets import redact

_PATH_TOOLS = {
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    # Readers too: another agent's worktree, the database, the CLI's files and $HOME are not
    # this agent's to read (the CLI's Read/Grep/Glob run outside the sandbox).
    "Read": "file_path",
    "NotebookRead": "notebook_path",
    "Grep": "path",
    "Glob": "path",
    "LS": "path",
}
_STDERR_KEEP = 20
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
"""What a session id the CLI reported looks like (a UUID): nothing that names another path."""


def sandbox_works() -> str | None:
    """Why bubblewrap cannot confine a command here (no user namespaces, say), or ``None``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not on PATH"
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-pid", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


class ClaudeRuntime:
    """Runs agents with the real Claude Code CLI.

    The CLI's environment is ``env`` plus only those inherited variables that match
    :data:`~agentgrove.runtime._environment.DEFAULT_ALLOW` or ``env_allow`` (see
    :mod:`agentgrove.runtime._environment`)."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        sandbox: SandboxMode = "auto",
        env_allow: Iterable[str] = (),
        sandbox_check: Callable[[], bool] = sandbox_available,
    ) -> None:
        """``sandbox``: see :data:`~agentgrove.runtime._policy.SandboxMode`; an agent that
        needs the sandbox where ``sandbox_check()`` says it cannot work fails ``permanent``
        before its CLI starts."""
        self._env = {**CLI_ENV_DEFAULTS, **(env or {})}
        self.starter = CliStarter(
            env=env, sandbox=sandbox, env_allow=tuple(env_allow), sandbox_check=sandbox_check
        )

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        begun = await self.starter.start(spec)
        if isinstance(begun, RunResult):
            return begun
        return await self.run_started(spec, sink, begun)

    async def run_started(self, spec: RunSpec, sink: MessageSink, begun: StartedCli) -> RunResult:
        """Run ``spec`` on its CLI, which :attr:`starter` started (maybe before the SDK was
        imported: grove's ``_DeferredRuntime`` does so); the CLI is gone when it returns."""
        started = begun.started
        stderr_tail: list[str] = []
        options = self._options(spec, begun.call, stderr_tail)
        last_error: str | None = None
        pressure = _ApiPressure()
        left = spec.timeout_s - (time.monotonic() - started)
        deadline = anyio.current_time() + left
        try:
            # The outer bound also covers the CLI's start and the client's close.
            with anyio.fail_after(left + _CLOSE_S):
                transport = _StartedTransport(begun, options)
                async with ClaudeSDKClient(options=options, transport=transport) as client:
                    with anyio.move_on_at(deadline) as run_scope:
                        await client.query(_prompt_stream(spec.prompt))
                        async for message in client.receive_response():
                            _report(message, sink)
                            pressure.observe(message)
                            if isinstance(message, AssistantMessage) and message.error:
                                last_error = message.error
                                pressure.rate_limited |= message.error == "rate_limit"
                            if isinstance(message, ResultMessage):
                                return pressure.apply(_result(message, last_error, started))
                            refused = _permanent_retry(message)
                            if refused is not None:
                                # The CLI retries even 401/400 up to ten times with backoff;
                                # a refused key or a bad request will not get better.
                                return RunResult(
                                    success=False,
                                    error=refused,
                                    error_kind=ErrorKind.PERMANENT,
                                    duration_ms=_ms_since(started),
                                )
                    if run_scope.cancelled_caught:
                        # Killed before the client's close, which would give the CLI 5 s to
                        # exit on its own: a role's timeout_s is when its run ends.
                        kill_agent_processes(spec.agent_id, attempt=spec.attempt)
                        raise TimeoutError
        except TimeoutError:
            return RunResult(
                success=False,
                error=f"timed out after {spec.timeout_s:g} s",
                error_kind=ErrorKind.TIMEOUT,
                duration_ms=_ms_since(started),
            )
        except ClaudeSDKError as exc:
            detail = " | ".join(stderr_tail[-3:])
            return RunResult(
                success=False,
                error=f"Claude CLI failed: {exc}" + (f" ({detail})" if detail else ""),
                error_kind=ErrorKind.MODEL_ERROR,
                duration_ms=_ms_since(started),
            )
        finally:
            # Whatever the ending (result, timeout, cancellation), nothing the agent started
            # may outlive its run: the CLI, its Bash commands, servers left in the background.
            # This attempt's only: a newer attempt (this worker was presumed dead) keeps its own.
            kill_agent_processes(spec.agent_id, attempt=spec.attempt)
            await begun.discard()  # reaped, even when the SDK never took it
        return RunResult(
            success=False,
            error="the CLI ended without a result message",
            error_kind=ErrorKind.MODEL_ERROR,
            duration_ms=_ms_since(started),
        )

    def has_session(self, session_id: str) -> bool:
        """Whether the CLI on this machine can resume ``session_id``: its file is in the CLI's
        config directory (``$CLAUDE_CONFIG_DIR``, else ``~/.claude``), under any project (the
        CLI finds a session whatever the directory it ran in). Another machine's session is
        not here, and the CLI would refuse it ("No conversation found")."""
        if not _SESSION_ID.fullmatch(session_id):
            return False
        env = {**os.environ, **self._env}
        config = env.get("CLAUDE_CONFIG_DIR") or str(
            Path(env.get("HOME") or Path.home()) / ".claude"
        )
        projects = Path(config) / "projects"
        try:
            return any((p / f"{session_id}.jsonl").is_file() for p in projects.iterdir())
        except OSError:
            return False

    def _options(self, spec: RunSpec, call: CliCall, stderr_tail: list[str]) -> ClaudeAgentOptions:
        """The options whose command line and environment :func:`command` and
        :func:`environment` build for ``call`` (the CLI already runs with them: the SDK uses
        them for the control protocol, and tests/test_cli_start.py checks they agree)."""
        tools = call.allowed
        worktree = call.cwd

        async def can_use_tool(
            name: str, tool_input: dict[str, Any], _ctx: ToolPermissionContext
        ) -> PermissionResultAllow | PermissionResultDeny:
            return _can_use_tool(worktree, tools, name, tool_input, spec.role.bash)

        async def pre_tool_use(
            data: HookInput, _tool_use_id: str | None, _ctx: HookContext
        ) -> HookJSONOutput:
            # Runs before the CLI's permission mode, which would approve touch, mkdir, rm,
            # sed -i... in the cwd (acceptEdits) without asking can_use_tool.
            if data["hook_event_name"] != "PreToolUse":
                return {}
            decision = _can_use_tool(
                worktree, tools, data["tool_name"], data["tool_input"], spec.role.bash
            )
            if isinstance(decision, PermissionResultAllow):
                return {}
            return {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": decision.message,
                }
            }

        async def post_tool_use(
            data: HookInput, _tool_use_id: str | None, _ctx: HookContext
        ) -> HookJSONOutput:
            # A question taken: the CLI records the tool's result in the session and stops
            # there, without another model request (seen with the CLI bundled with
            # claude-agent-sdk 0.2.184); the answer resumes the session as the next message.
            if (
                data["hook_event_name"] == "PostToolUse"
                and data["tool_name"] == ASK_HUMAN
                and spec.delegate is not None
                and spec.delegate.asked()
            ):
                return {"continue_": False, "stopReason": "waiting for a person's answer"}
            return {}

        def keep_stderr(line: str) -> None:
            stderr_tail.append(line.rstrip())
            del stderr_tail[:-_STDERR_KEEP]

        mcp_servers: dict[str, Any] = {}
        if spec.delegate is not None:
            mcp_servers[SERVER_NAME] = orchestrator_server(spec.delegate)
        return ClaudeAgentOptions(
            system_prompt=call.system_prompt,
            model=call.model,
            tools=call.tools,
            mcp_servers=mcp_servers,
            # Nothing pre-approved: every call goes through can_use_tool, the one gate.
            allowed_tools=[],
            permission_mode="acceptEdits",
            can_use_tool=can_use_tool,
            # The same decision, before the permission mode: every call, whatever the mode.
            # A hook that fails blocks the call.
            hooks={
                "PreToolUse": [HookMatcher(matcher=None, hooks=[pre_tool_use], on_failure="block")],
                "PostToolUse": [HookMatcher(matcher=ASK_HUMAN, hooks=[post_tool_use])],
            },
            max_turns=call.max_turns,
            max_budget_usd=call.max_budget_usd,
            cwd=str(worktree),
            resume=call.resume,
            env=call.env,
            cli_path=call.cli_path,
            settings=call.settings,
            setting_sources=[],
            stderr=keep_stderr,
        )


class _StartedTransport(SubprocessCLITransport):
    """The SDK's own transport over a CLI that :class:`CliStarter` started: only the start
    differs (what ``SubprocessCLITransport.connect`` does after its ``open_process``, on the
    process given); reading, writing, the stderr callback and the close are the SDK's.

    It sets the SDK transport's private fields, so it is pinned to the SDK's version: every
    end-to-end test runs through it, and tests/test_cli_start.py checks the start itself."""

    def __init__(self, begun: StartedCli, options: ClaudeAgentOptions) -> None:
        super().__init__(prompt=_no_prompt(), options=options)
        self._begun = begun

    async def connect(self) -> None:
        if self._process:
            return
        process = self._begun.process
        self._cli_path = str(self._begun.call.cli_path)
        self._process = process
        subprocess_cli._ACTIVE_CHILDREN.add(process)  # the SDK's reaper at exit, as usual
        if process.stdout:
            self._stdout_stream = TextReceiveStream(process.stdout)
        if process.stderr:
            self._stderr_stream = TextReceiveStream(process.stderr)
            self._stderr_task = spawn_detached(self._handle_stderr())
        if process.stdin:
            self._stdin_stream = TextSendStream(process.stdin)
        self._ready = True


async def _no_prompt() -> AsyncIterator[dict[str, Any]]:
    # The transport's prompt is unused in streaming mode: the client sends the prompt.
    return
    yield {}  # pragma: no cover  (makes this an async generator)


def _can_use_tool(
    worktree: Path,
    tools: list[str],
    name: str,
    tool_input: dict[str, Any],
    bash: BashPolicy = "full",
) -> PermissionResultAllow | PermissionResultDeny:
    """Allow the role's tools; confine path-taking tools (writers and readers, a Glob's
    pattern too) to the worktree; apply the role's Bash policy."""
    if name not in tools:
        return PermissionResultDeny(message=f"tool {name} is not available to this role")
    if name == "Bash":
        refusal = bash_refusal(bash, str(tool_input.get("command", "")))
        if refusal is not None:
            return PermissionResultDeny(message=refusal)
    key = _PATH_TOOLS.get(name)
    if key is not None:
        raw = str(tool_input.get(key) or "")
        if raw and not _inside(worktree, raw):
            return PermissionResultDeny(
                message=f"{raw} is outside this agent's worktree {worktree}; use paths inside it"
            )
    if name == "Glob":
        pattern = str(tool_input.get("pattern") or "")
        # ``..`` anywhere (``{..,src}`` expands to it) and a leading ``~`` leave the worktree.
        if (
            ".." in pattern
            or pattern.startswith("~")
            or (os.path.isabs(pattern) and not _inside(worktree, _glob_root(pattern)))
        ):
            return PermissionResultDeny(
                message=f"the pattern {pattern} reaches outside this agent's worktree "
                f"{worktree}; use a pattern relative to it, without '..'"
            )
    return PermissionResultAllow()


def _inside(worktree: Path, raw: str) -> bool:
    """Whether ``raw`` (relative to the worktree or absolute) resolves, ``..`` and symlinks
    included, to the worktree or below it."""
    if raw.startswith("~"):
        # The CLI expands ``~`` and ``~user`` to a home directory, never to a folder here.
        return False
    target = Path(raw) if os.path.isabs(raw) else worktree / raw
    resolved = target.resolve()
    return resolved == worktree or worktree in resolved.parents


def _glob_root(pattern: str) -> str:
    """The literal folder a glob pattern starts from (``/a/b`` of ``/a/b/**/*.py``)."""
    root: list[str] = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?[{"):
            break
        root.append(part)
    return str(Path(*root)) if root else "/"


async def _prompt_stream(prompt: str) -> AsyncIterator[dict[str, Any]]:
    # Streaming-input mode is required for can_use_tool; one user message is the whole prompt.
    yield {"type": "user", "message": {"role": "user", "content": prompt}}


def _report(message: object, sink: MessageSink) -> None:
    kind = type(message).__name__
    payload = _jsonable(message)
    event: tuple[str, dict[str, Any]] | None = None
    if isinstance(message, AssistantMessage):
        for block in message.content:
            if isinstance(block, ToolUseBlock):
                event = ("agent.tool_use", {"tool": block.name, "input": _short(block.input)})
            elif isinstance(block, TextBlock) and event is None:
                event = ("agent.text", {"text": _short(block.text, 500)})
    elif isinstance(message, UserMessage) and isinstance(message.content, list):
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                event = (
                    "agent.tool_result",
                    {"is_error": bool(block.is_error), "content": _short(block.content)},
                )
    elif isinstance(message, SystemMessage) and message.subtype == "api_retry":
        event = (
            "agent.api_retry",
            {
                "status": message.data.get("error_status"),
                "error": message.data.get("error"),
                "delay_ms": message.data.get("retry_delay_ms"),
                "attempt": message.data.get("attempt"),
            },
        )
    elif isinstance(message, ResultMessage):
        event = (
            "agent.result",
            {"subtype": message.subtype, "is_error": message.is_error, "turns": message.num_turns},
        )
    sink(kind, payload, event)


class _ApiPressure:
    """What the CLI's own retries said about the API during a run: whether it was rate
    limited, and the delay it last waited (which honours the API's Retry-After)."""

    def __init__(self) -> None:
        self.rate_limited = False
        self.retry_after_s: float | None = None

    def observe(self, message: object) -> None:
        if isinstance(message, SystemMessage) and message.subtype == "api_retry":
            delay_ms = message.data.get("retry_delay_ms")
            if isinstance(delay_ms, int | float):
                self.retry_after_s = delay_ms / 1000
            if message.data.get("error_status") == 429:
                self.rate_limited = True

    def apply(self, result: RunResult) -> RunResult:
        if not self.rate_limited and self.retry_after_s is None:
            return result
        return dataclasses.replace(
            result, rate_limited=self.rate_limited, retry_after_s=self.retry_after_s
        )


def _permanent_retry(message: object) -> str | None:
    """The reason, if ``message`` is the CLI announcing a retry of an error that is permanent."""
    if not isinstance(message, SystemMessage) or message.subtype != "api_retry":
        return None
    error = str(message.data.get("error", ""))
    status = message.data.get("error_status")
    if classify(subtype="success", api_error_status=status, assistant_error=error) is not (
        ErrorKind.PERMANENT
    ):
        return None
    return f"the model API refused the request: {error} (HTTP {status})"


def reported_tokens(
    usage: dict[str, Any] | None, model_usage: dict[str, Any] | None
) -> tuple[int, int]:
    """(tokens in, tokens out) of a run as the CLI's result reports them: ``usage`` (cache
    reads and writes count as input), else, when that is all zeros, the per-model
    ``model_usage`` totals (a run stopped by its budget reports zero ``usage`` yet names
    what it spent there)."""

    def count(source: dict[str, Any], *keys: str) -> int:
        return sum(int(source.get(key, 0) or 0) for key in keys)

    usage = usage or {}
    tokens_in = count(
        usage, "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"
    )
    tokens_out = count(usage, "output_tokens")
    if tokens_in or tokens_out:
        return tokens_in, tokens_out
    per_model = [m for m in (model_usage or {}).values() if isinstance(m, dict)]
    return (
        sum(
            count(m, "inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
            for m in per_model
        ),
        sum(count(m, "outputTokens") for m in per_model),
    )


def _result(message: ResultMessage, assistant_error: str | None, started: float) -> RunResult:
    tokens_in, tokens_out = reported_tokens(message.usage, message.model_usage)
    common: dict[str, Any] = {
        "output": message.result,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": float(message.total_cost_usd or 0.0),
        "duration_ms": message.duration_ms or _ms_since(started),
        "session_id": message.session_id,
    }
    if not message.is_error and message.subtype == "success":
        return RunResult(success=True, **common)
    kind = classify(
        subtype=message.subtype,
        api_error_status=message.api_error_status,
        assistant_error=assistant_error,
    )
    reason = "; ".join(message.errors or []) or message.result or message.subtype
    # The CLI labels a run that ended on an API error "success"; that label would mislead.
    error = reason if message.subtype in ("success", reason) else f"{message.subtype}: {reason}"
    return RunResult(success=False, error=error, error_kind=kind, **common)


def _jsonable(message: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(message), default=str))
        return data
    return {"repr": repr(message)}


_CLOSE_S = 3.0
"""Time allowed past ``timeout_s`` for a CLI that will not start or close (it is killed)."""


def _short(value: object, limit: int = 300) -> str:
    # Redacted before it is escaped (JSON would hide a secret's non-ASCII, quotes and
    # backslashes) and before it is cut (the cut could split one).
    value = redact(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


__all__ = ["ClaudeRuntime", "reported_tokens", "sandbox_available", "sandbox_works"]
