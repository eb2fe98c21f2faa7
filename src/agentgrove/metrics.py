"""Prometheus metrics, read from the database at scrape time.

Workers run in other processes (and on other machines with PostgreSQL), so no process holds the
figures in memory: the database is the truth, and each scrape asks it (a handful of ``GROUP BY``
queries, see :mod:`agentgrove.store._stats`). Exposed series:

* ``grove_agents{status}`` — gauge, agents per status (every status, zero included)
* ``grove_queue_depth`` — gauge, pending agents a worker could claim now
* ``grove_claim_latency_seconds{role,model}`` — histogram, ``created_at`` to first claim
* ``grove_run_duration_seconds{role,model}`` — histogram, ``duration_ms`` of finished agents
* ``grove_tokens_total{role,model,direction="in"|"out"}`` — counter
* ``grove_cost_usd_total{role,model}`` — counter
* ``grove_checks_total{role,model,result="passed"|"failed"}`` — counter, finished agents
  whose check passed or failed (both results for every (role, model) with a check; agents
  without one, and running agents between fix rounds, are not counted)
* ``grove_notifications_total{kind,result="sent"|"failed"}`` — counter, notifications
  delivered and given up (every kind, zero included; ``[notify]``)
* ``grove_notifications_queued`` — gauge, notifications waiting to be delivered or retried

The counters are sums over agent rows, which grove never deletes, so they only grow.

``router`` serves ``GET /metrics`` for the Grove at ``request.app.state.grove``;
:func:`render` gives the same text for any store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agentgrove.notify import ALL_KINDS
from agentgrove.store import Store
from agentgrove.store._stats import Histogram

__all__ = ["GroveCollector", "render", "router"]


class GroveCollector(Collector):
    """A custom collector: every :meth:`collect` queries ``store`` afresh."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        """``clock`` decides what "claimable now" means for the queue depth (tests fix it)."""
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[Metric]:
        agents = GaugeMetricFamily("grove_agents", "Agents by status.", labels=["status"])
        for status, n in self._store.agent_counts().items():
            agents.add_metric([status.value], n)
        yield agents

        yield GaugeMetricFamily(
            "grove_queue_depth",
            "Pending agents a worker could claim now.",
            value=self._store.queue_depth(self._clock()),
        )
        yield _histogram(
            "grove_claim_latency_seconds",
            "Seconds from an agent's creation to its first claim.",
            self._store.claim_latency_histograms(),
        )
        yield _histogram(
            "grove_run_duration_seconds",
            "Run duration of finished agents, in seconds.",
            self._store.run_duration_histograms(),
        )

        usage = self._store.usage_by_role_model()
        tokens = CounterMetricFamily(
            "grove_tokens", "Model tokens used.", labels=["role", "model", "direction"]
        )
        cost = CounterMetricFamily(
            "grove_cost_usd", "Cost in US dollars.", labels=["role", "model"]
        )
        for row in usage:
            tokens.add_metric([row.role, row.model, "in"], row.tokens_in)
            tokens.add_metric([row.role, row.model, "out"], row.tokens_out)
            cost.add_metric([row.role, row.model], row.cost_usd)
        yield tokens
        yield cost

        checks = CounterMetricFamily(
            "grove_checks", "Agents' checks by result.", labels=["role", "model", "result"]
        )
        for count in self._store.check_counts():
            checks.add_metric([count.role, count.model, count.result.value], count.agents)
        yield checks

        by_state = {(kind, state): n for kind, state, n in self._store.notification_counts()}
        notifications = CounterMetricFamily(
            "grove_notifications",
            "Notifications delivered (sent) and given up after every retry (failed).",
            labels=["kind", "result"],
        )
        for kind in ALL_KINDS:
            for result in ("sent", "failed"):
                notifications.add_metric(
                    [kind.value, result], by_state.get((kind.value, result), 0)
                )
        yield notifications
        yield GaugeMetricFamily(
            "grove_notifications_queued",
            "Notifications waiting to be delivered or retried.",
            value=sum(n for (_, state), n in by_state.items() if state in ("pending", "sending")),
        )


def _histogram(name: str, documentation: str, rows: list[Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["role", "model"])
    for row in rows:
        buckets: list[tuple[str, float]] = [
            (_bound(b), n) for b, n in zip(row.bounds, row.buckets, strict=True)
        ]
        buckets.append(("+Inf", row.count))
        family.add_metric([row.role, row.model], buckets, row.sum)
    return family


def _bound(bound: float) -> str:
    # The same spelling prometheus_client uses for its own buckets ("0.5", "10.0").
    return repr(float(bound))


def render(store: Store, *, clock: Callable[[], datetime] | None = None) -> bytes:
    """The Prometheus text exposition of ``store``'s metrics (what ``GET /metrics`` returns)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroveCollector(store, clock=clock))
    return generate_latest(registry)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint. A plain ``def``: FastAPI runs it in its thread pool, so the
    blocking database reads never stall the event loop."""
    store: Store = request.app.state.grove.store
    return Response(render(store), media_type=CONTENT_TYPE_LATEST)
