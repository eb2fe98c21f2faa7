"""What admission limits cost a claim.

    .venv/bin/python bench/admission.py [--agents 400] [--rounds 3]

The same work — N agents of two roles spawned, then drained by one in-process Worker
(concurrency 8) on SQLite with the ScriptedRuntime in a plain directory — run side by side:

* baseline: no ``[admission]`` limits (the claim does not count anything);
* limits: ``max_running``, ``per_role`` and ``per_model`` set high enough never to refuse, so
  every claim pays for counting what runs but the schedule is the same;
* refusing: ``per_role = {implementer = 1}``, so claims are refused and passed over all along.

Reported per variant: median and p99 of one claim call (``Store.claim``, timed around the call),
agents per second through the whole drain, and the ratio of each against the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus
from agentgrove.runtime import ScriptedRuntime
from agentgrove.settings import AdmissionSettings
from agentgrove.store import Store

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "limits": {"max_running": 1000, "per_role": {"implementer": 1000}, "per_model": {"x": 1}},
    "refusing": {"per_role": {"implementer": 1}},
}


class TimedStore(Store):
    """The real store, with each claim call timed."""

    claim_s: list[float]

    def claim(self, *args: Any, **kwargs: Any) -> AgentRecord | None:
        started = time.perf_counter()
        try:
            return super().claim(*args, **kwargs)
        finally:
            self.claim_s.append(time.perf_counter() - started)


def run_variant(name: str, agents: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        place = Path(tmp)
        with Grove.init(place, runtime=ScriptedRuntime()) as grove:
            store = TimedStore(grove.store.url)
            store.claim_s = []
            grove.store.close()
            grove.store = grove.service.store = store
            config = grove.config
            grove.config = grove.service.config = type(config)(
                **{
                    **config.__dict__,
                    "admission": AdmissionSettings(**VARIANTS[name]),
                    "worker": config.worker.model_copy(update={"poll_s": 0.01}),
                }
            )
            for i in range(agents):
                grove.spawn("implementer" if i % 2 else "tester", f"task {i}")
            from agentgrove.worker import Worker

            started = time.perf_counter()
            anyio.run(Worker(grove.service, grove.config.worker, concurrency=8, drain=True).run)
            elapsed = time.perf_counter() - started
            counts = store.count_by_status()
            assert counts == {AgentStatus.COMPLETED: agents}, counts
            return store.claim_s, agents / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    claims: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:  # interleaved, so drifting load hits every variant alike
            timings, rate = run_variant(variant, args.agents)
            claims[variant] += timings
            rates[variant].append(rate)
    table = Table(title=f"claim cost with admission limits ({args.agents} agents x {args.rounds})")
    for column in ("variant", "claim p50 ms", "claim p99 ms", "p50 ratio", "agents/s", "ratio"):
        table.add_column(column, justify="right")
    base_p50 = statistics.median(claims["baseline"])
    base_rate = statistics.median(rates["baseline"])
    for variant in VARIANTS:
        ordered = sorted(claims[variant])
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        rate = statistics.median(rates[variant])
        table.add_row(
            variant,
            f"{p50 * 1000:.2f}",
            f"{p99 * 1000:.2f}",
            f"{p50 / base_p50:.2f}",
            f"{rate:.0f}",
            f"{rate / base_rate:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
