"""Agents/s through `grove worker` processes, 1 against 4, on PostgreSQL and SQLite. Not a test:
prints a table.

    .venv/bin/python bench/throughput.py [--agents 1200] [--repeats 3] [--concurrency 64]

N no-op agents (``[runtime] kind = "scripted"``, delay 0, a plain directory: no worktrees) are
spawned into a fresh database, then W ``grove worker --drain`` processes run them. Agents/s is
N over (last ``finished_at`` - first ``started_at``), from the database's own timestamps; the
per-agent latency is ``finished_at - started_at`` (claim -> finish); CPU ms/agent is the worker
processes' user + system time over N, less what the same workers cost draining an empty
database (their start-up). Needs PostgreSQL at
127.0.0.1:5432 (database ``test``, trust auth).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy

from agentgrove.grove import Grove
from agentgrove.store._schema import agents as agents_table

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GROVE = [sys.executable, "-m", "agentgrove"]


def measure(db_url: str | None, workers: int, agents: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="grove-throughput-") as tmp:
        root = Path(tmp)
        (root / "grove.toml").write_text('[runtime]\nkind = "scripted"\nscripted_delay_s = 0\n')
        env = {k: v for k, v in os.environ.items() if k not in ("GROVE_HOME", "GROVE_DB_URL")}
        if db_url is not None:
            env["GROVE_DB_URL"] = db_url
            os.environ["GROVE_DB_URL"] = db_url
        else:
            os.environ.pop("GROVE_DB_URL", None)
        os.environ.pop("GROVE_HOME", None)
        with Grove.init(root) as grove:
            # The same workers with nothing to do first: their start-up CPU, taken off below.
            idle = _drain(root, env, workers, concurrency)
            for i in range(agents):
                grove.spawn("tester", f"noop {i}")
            engine = grove.store.engine
            wall0 = time.monotonic()
            cpu = _drain(root, env, workers, concurrency)
            wall = time.monotonic() - wall0
            with engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.select(
                        agents_table.c.status, agents_table.c.started_at, agents_table.c.finished_at
                    )
                ).all()
    bad = [r for r in rows if r.status != "completed"]
    if bad or len(rows) != agents:
        raise SystemExit(f"{len(bad)} of {len(rows)} agents not completed")
    first = min(r.started_at for r in rows)
    last = max(r.finished_at for r in rows)
    lat = sorted((r.finished_at - r.started_at).total_seconds() for r in rows)
    span = (last - first).total_seconds()
    return {
        "rate": agents / span,
        "wall_rate": agents / wall,
        "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] * 1000,
        # The worker processes' own CPU (user + system, start-up excluded), per agent: much
        # less sensitive to other load on the machine than the rates.
        "cpu_ms": max(0.0, cpu - idle) / agents * 1000,
    }


def _drain(root: Path, env: dict[str, str], workers: int, concurrency: int) -> float:
    """Run ``workers`` ``grove worker --drain`` processes until they exit; their CPU seconds
    (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [
        subprocess.Popen(
            [*GROVE, "worker", "--drain", "--concurrency", str(concurrency)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"worker exited {proc.returncode}: {err[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="postgresql,sqlite")
    args = parser.parse_args()
    admin = sqlalchemy.create_engine(PG_URL)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for _ in range(args.repeats):
            for backend in args.backends.split(","):
                for workers in (1, 4):
                    url = None
                    schema = f"bench_{uuid.uuid4().hex[:8]}"
                    if backend == "postgresql":
                        with admin.begin() as conn:
                            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
                    try:
                        got = measure(url, workers, args.agents, args.concurrency)
                    finally:
                        if url is not None:
                            with admin.begin() as conn:
                                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                    results.setdefault((backend, workers), []).append(got)
    finally:
        admin.dispose()
    print(
        f"{args.agents} no-op agents, --concurrency {args.concurrency}, "
        f"median of {args.repeats}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'backend':<11} {'workers':>7} {'agents/s':>9} {'wall/s':>7} {'p99 ms':>8} {'4 vs 1':>7}"
        f" {'CPU ms/agent':>12}"
    )
    for backend in args.backends.split(","):
        one = statistics.median(r["rate"] for r in results[(backend, 1)])
        for workers in (1, 4):
            runs = results[(backend, workers)]
            rate = statistics.median(r["rate"] for r in runs)
            wall = statistics.median(r["wall_rate"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            cpu = statistics.median(r["cpu_ms"] for r in runs)
            ratio = f"{rate / one:.2f}x" if workers == 4 else ""
            print(
                f"{backend:<11} {workers:>7} {rate:>9.0f} {wall:>7.0f} {p99:>8.1f} {ratio:>7}"
                f" {cpu:>12.2f}"
            )


if __name__ == "__main__":
    main()
