"""Event-loop lateness of a worker while another process holds SQLite's write lock. Not a
test: prints a table.

    .venv/bin/python bench/loop_latency.py [--agents 8] [--lock-s 2]

One in-process ``Worker`` (concurrency = agents) runs agents whose runtime streams a message
every 20 ms (each message is a transcript write) until told to stop. A probe task on the same
event loop sleeps 10 ms at a time and records how late it wakes. Lateness is measured for
``--lock-s`` seconds with the database free, then for ``--lock-s`` seconds while another
process holds ``BEGIN EXCLUSIVE`` on the database file. A loop that waits for the database
shows the whole lock as lateness; one that does not stays near the free figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.runtime import RunResult, RunSpec
from agentgrove.runtime._base import MessageSink
from agentgrove.worker import Worker

_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


class Streaming:
    def __init__(self) -> None:
        self.started = 0
        self.stop = threading.Event()

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        self.started += 1
        i = 0
        while not self.stop.is_set():
            await anyio.sleep(0.02)
            i += 1
            sink("Tick", {"i": i}, None)
        return RunResult(success=True, output=f"{i} ticks")


def _summary(lags: list[float]) -> list[str]:
    ms = sorted(x * 1000 for x in lags)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return [str(len(ms)), f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{ms[-1]:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--lock-s", type=float, default=2.0)
    args = parser.parse_args()
    for var in ("GROVE_HOME", "GROVE_DB_URL"):
        os.environ.pop(var, None)
    with tempfile.TemporaryDirectory(prefix="grove-loop-") as tmp:
        root = Path(tmp)
        runtime = Streaming()
        phases: dict[str, list[float]] = {"free": [], "locked": []}
        phase: list[str | None] = [None]
        with Grove.init(root, runtime=runtime) as grove:
            grove.configure_worker(lease_s=30, heartbeat_s=0.3, poll_s=0.1)
            for i in range(args.agents):
                grove.spawn("tester", f"stream {i}")
            worker = Worker(grove.service, grove.config.worker, concurrency=args.agents)

            async def probe() -> None:
                while not runtime.stop.is_set():
                    before, during = time.monotonic(), phase[0]
                    await anyio.sleep(0.01)
                    if during is not None:  # counted in the phase it began in
                        phases[during].append(time.monotonic() - before - 0.01)

            async def main_loop() -> None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(probe)
                    await worker.run()
                    tg.cancel_scope.cancel()

            thread = threading.Thread(target=anyio.run, args=(main_loop,), daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while runtime.started < args.agents and time.monotonic() < deadline:
                time.sleep(0.05)
            phase[0] = "free"
            time.sleep(args.lock_s)
            path = grove.store.url.removeprefix("sqlite:///")
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLD, path, str(args.lock_s)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None
            holder.stdout.readline()
            phase[0] = "locked"
            holder.wait()
            phase[0] = None
            runtime.stop.set()
            worker.request_stop()
            thread.join(60)
    table = Table(title=f"event-loop lateness, {args.agents} streaming agents, SQLite")
    for column in ("database", "samples", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column)
    for name, lags in phases.items():
        label = "free" if name == "free" else f"write-locked by another process ({args.lock_s:g} s)"
        table.add_row(label, *(_summary(lags) if lags else ["0", "-", "-", "-"]))
    console = Console()
    console.print(table)
    console.print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
