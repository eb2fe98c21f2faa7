"""How workflow orchestration time grows with the number of nodes.

    .venv/bin/python bench/scale.py [--quick] [--sizes 100,1000,10000]

Workflows of N nodes, run to completion by one in-process Worker (concurrency 8) on SQLite,
every node an agent on the in-process ScriptedRuntime (no model, no git: orchestration only):

* chain: n0 -> n1 -> ... -> n(N-1)
* fan-out/fan-in: one root, N-2 parallel nodes depending on it, one sink depending on all

Reported per shape and size: time to start the run (validate + insert), time to run it, time
per node, and growth against the smallest size: ``time ratio / node ratio`` is 1.00 for exactly
linear growth. Target: x100 nodes costs at most x110 time (growth <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.models import RunStatus
from agentgrove.runtime import ScriptedRuntime


def chain(n: int) -> dict[str, Any]:
    nodes = [
        {"key": f"n{i}", "role": "tester", "task": "step", "depends_on": [f"n{i - 1}"] if i else []}
        for i in range(n)
    ]
    return {"name": f"chain-{n}", "nodes": nodes}


def fan(n: int) -> dict[str, Any]:
    middle = [f"m{i}" for i in range(n - 2)]
    nodes = [{"key": "root", "role": "tester", "task": "start"}]
    nodes += [{"key": k, "role": "tester", "task": "work", "depends_on": ["root"]} for k in middle]
    nodes += [{"key": "sink", "role": "tester", "task": "join", "depends_on": middle}]
    return {"name": f"fan-{n}", "nodes": nodes}


@dataclass
class Result:
    shape: str
    nodes: int
    start_s: float
    run_s: float

    @property
    def per_node_ms(self) -> float:
        return (self.start_s + self.run_s) / self.nodes * 1000


def measure(shape: str, spec: dict[str, Any]) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="grove-scale-"))
    os.chdir(workdir)  # a plain directory: no worktrees, orchestration only
    with Grove.init(workdir, runtime=ScriptedRuntime()) as grove:
        grove.configure_worker(concurrency=8)
        started = time.perf_counter()
        run = grove.start_workflow(spec)
        begun = time.perf_counter()
        final = anyio.run(grove.execute_run_async, run.id)
        finished = time.perf_counter()
        assert final.status is RunStatus.COMPLETED, final.status
        assert all(n.state == "completed" for n in final.nodes)
    return Result(shape, len(spec["nodes"]), begun - started, finished - begun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 1000 only")
    parser.add_argument("--sizes", help="comma-separated node counts")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    console = Console()
    table = Table(title="workflow orchestration time by size (ScriptedRuntime, SQLite)")
    for column in (
        "shape",
        "nodes",
        "start s",
        "run s",
        "ms/node",
        "x nodes",
        "x time",
        "growth",
        "<= 1.10",
    ):
        table.add_column(column, justify="right")
    os.environ.pop("GROVE_HOME", None)
    os.environ.pop("GROVE_DB_URL", None)
    for shape, build in (("chain", chain), ("fan-out/fan-in", fan)):
        base: Result | None = None
        for n in sizes:
            result = measure(shape, build(n))
            base = base or result
            x_nodes = result.nodes / base.nodes
            x_time = (result.start_s + result.run_s) / (base.start_s + base.run_s)
            growth = x_time / x_nodes
            table.add_row(
                shape,
                str(n),
                f"{result.start_s:.2f}",
                f"{result.run_s:.2f}",
                f"{result.per_node_ms:.2f}",
                f"{x_nodes:.0f}",
                f"{x_time:.1f}",
                f"{growth:.2f}",
                "yes" if growth <= 1.10 else "NO",
            )
            console.print(f"{shape} {n}: {result.start_s + result.run_s:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()
