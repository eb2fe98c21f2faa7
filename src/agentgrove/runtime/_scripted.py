"""ScriptedRuntime: an in-process runtime for unit tests and benchmarks (no CLI, no network).

It keeps the Runtime contract: reports at least one message through the sink before returning,
returns a :class:`RunResult`, never raises for a failed run, and stops at once when cancelled.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Literal

import anyio

from agentgrove.models import ErrorKind
from agentgrove.runtime._base import MessageSink, RunResult, RunSpec

Behaviour = Callable[[RunSpec], RunResult | Awaitable[RunResult]]


def echo(spec: RunSpec) -> RunResult:
    """Default behaviour: succeed at once, echoing the task and attempt, with small usage."""
    return RunResult(
        success=True,
        output=f"done (attempt {spec.attempt}): {spec.prompt[:200]}",
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.0001,
        duration_ms=1,
        session_id=f"scripted-{spec.agent_id}-{spec.attempt}",
    )


def delayed_echo(delay_s: float, cost_usd: float | Literal["grant"] | None = None) -> Behaviour:
    """:func:`echo` after ``delay_s`` seconds (a stand-in for a model that takes time).
    ``cost_usd`` replaces echo's cost: a figure, or ``"grant"`` to spend the whole budget the
    attempt was given (``max_budget_usd``), as a greedy model would."""

    def spend(spec: RunSpec) -> RunResult:
        result = echo(spec)
        if cost_usd is None:
            return result
        cost = spec.max_budget_usd if cost_usd == "grant" else cost_usd
        return replace(result, cost_usd=cost)

    async def behave(spec: RunSpec) -> RunResult:
        await anyio.sleep(delay_s)
        return spend(spec)

    return behave if delay_s > 0 else spend


class ScriptedRuntime:
    """Runs ``behaviour(spec)`` instead of a model. ``runs`` records every spec it received."""

    def __init__(self, behaviour: Behaviour = echo) -> None:
        self._behaviour = behaviour
        self.runs: list[RunSpec] = []

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        self.runs.append(spec)
        sink("ScriptedStart", {"prompt": spec.prompt, "model": spec.model}, None)
        try:
            with anyio.fail_after(spec.timeout_s):
                produced = self._behaviour(spec)
                result = await produced if inspect.isawaitable(produced) else produced
        except TimeoutError:
            return RunResult(
                success=False,
                error=f"timed out after {spec.timeout_s:g} s",
                error_kind=ErrorKind.TIMEOUT,
            )
        sink(
            "ScriptedResult",
            {"success": result.success, "output": result.output, "error": result.error},
            ("agent.result", {"success": result.success}),
        )
        return result
