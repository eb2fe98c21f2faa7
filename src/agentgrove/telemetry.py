"""Optional OpenTelemetry spans: one ``grove.agent`` span per ended agent attempt.

Enabled by ``[telemetry] otel = true`` in grove.toml. Spans go to the *globally configured*
tracer provider (``opentelemetry.trace.set_tracer_provider``), so users plug in whichever
exporter they run; grove configures none. Disabled, nothing imports this module, so
OpenTelemetry is never imported (it is the optional ``agentgrove[otel]`` extra).

Contracts:

* A span is recorded when the worker running an attempt sees it end: completed, failed, or
  released back to pending (a retry, or interrupted by shutdown). Its start and end are the
  times the database recorded for the attempt's claim and its end, so a span measures the
  whole attempt, workspace and commit included.
* Attributes: ``grove.agent.{id,role,model,status,error_kind,attempt,tokens_in,tokens_out,
  cost_usd}`` and ``grove.run.{id,node}``; those without a value are left out. ``status`` is
  the attempt's outcome (``completed``, ``failed``, ``released``); every outcome but
  ``completed`` sets the span's status to ERROR with the error.
* An attempt cut short elsewhere (cancelled from another process, lease lost, worker killed)
  gets no span: no process sees it end.
* Recording a span never fails a run: an error is reported on stderr and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from agentgrove.errors import ConfigError
from agentgrove.logs import say
from agentgrove.store import Store
from agentgrove.store._stats import Attempt

TRACER_NAME = "agentgrove"
SPAN_NAME = "grove.agent"

Observer = Callable[[str, str, dict[str, Any]], None]
"""The service's event observer: (agent_id, event kind, data)."""

_ENDINGS = frozenset({"agent.completed", "agent.failed", "agent.retry", "agent.released"})
"""The events the service emits when an attempt ends (``agent.retry`` follows a release)."""

log = logging.getLogger(__name__)


def with_agent_spans(store: Store, observer: Observer | None) -> Observer:
    """An observer that passes every event on to ``observer`` and records the span of each
    attempt that ends. Raises :class:`ConfigError` when OpenTelemetry is not installed."""
    try:
        from opentelemetry import trace  # noqa: F401  (checked here, used by record_span)
    except ImportError as exc:
        raise ConfigError(
            "grove.toml: telemetry.otel = true but OpenTelemetry is not installed: "
            "pip install 'agentgrove[otel]', or set otel = false"
        ) from exc

    def observe(agent_id: str, kind: str, data: dict[str, Any]) -> None:
        if observer is not None:
            observer(agent_id, kind, data)
        if kind in _ENDINGS:
            try:
                attempt = store.last_attempt(agent_id)
                if attempt is not None:
                    record_span(attempt)
            except Exception as exc:  # telemetry is a side channel: it must not stop agents
                say(
                    log,
                    "telemetry.failed",
                    f"telemetry: no span for agent {agent_id}: {exc!r}",
                    agent=agent_id,
                )

    return observe


def record_span(attempt: Attempt) -> None:
    """Record ``attempt`` as one finished ``grove.agent`` span, with its real start and end."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    tracer = trace.get_tracer(TRACER_NAME)
    span = tracer.start_span(
        SPAN_NAME, start_time=_nanoseconds(attempt.started_at), attributes=attributes(attempt)
    )
    if attempt.outcome != "completed":
        span.set_status(Status(StatusCode.ERROR, attempt.error or attempt.outcome))
    span.end(end_time=_nanoseconds(attempt.ended_at))


def attributes(attempt: Attempt) -> dict[str, str | int | float]:
    """The span's attributes (see the module doc); ``None`` values are left out."""
    values: dict[str, str | int | float | None] = {
        "grove.agent.id": attempt.agent_id,
        "grove.agent.role": attempt.role,
        "grove.agent.model": attempt.model,
        "grove.agent.status": attempt.outcome,
        "grove.agent.error_kind": attempt.error_kind,
        "grove.agent.attempt": attempt.attempt,
        "grove.agent.tokens_in": attempt.tokens_in,
        "grove.agent.tokens_out": attempt.tokens_out,
        "grove.agent.cost_usd": attempt.cost_usd,
        "grove.run.id": attempt.run_id,
        "grove.run.node": attempt.node_key,
    }
    return {key: value for key, value in values.items() if value is not None}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _nanoseconds(at: datetime) -> int:
    # Integer arithmetic: a float timestamp times 1e9 would blur the microseconds.
    return (at - _EPOCH) // timedelta(microseconds=1) * 1_000
