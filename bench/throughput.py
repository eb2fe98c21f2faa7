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
from agentgrove.store._schema import events as events_table

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
            idle, pg_idle, _ = _drain(root, env, workers, concurrency)
            for i in range(agents):
                grove.spawn("tester", f"noop {i}")
            engine = grove.store.engine
            wall0 = time.monotonic()
            cpu, pg_cpu, busy = _drain(root, env, workers, concurrency)
            wall = time.monotonic() - wall0
            with engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.select(
                        agents_table.c.status, agents_table.c.started_at, agents_table.c.finished_at
                    )
                ).all()
                claims = conn.execute(
                    sqlalchemy.select(events_table.c.at, events_table.c.data).where(
                        events_table.c.kind == "agent.claimed"
                    )
                ).all()
    # When each worker process made its first claim: the later ones were still starting
    # (importing) while the first worked, which the rate below counts against them.
    firsts: dict[str, float] = {}
    for at, data in claims:
        owner = data["owner"] if isinstance(data, dict) else str(data)
        firsts[owner] = min(firsts.get(owner, at.timestamp()), at.timestamp())
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
        # PostgreSQL's share (0 on SQLite, bar other users of the shared server) and how busy
        # both cores were over the drain: 2.0 means the machine was the limit.
        "pg_ms": max(0.0, pg_cpu - pg_idle) / agents * 1000,
        "cores": busy / wall,
        "stagger_ms": (max(firsts.values()) - min(firsts.values())) * 1000,
    }


def _postgres_cpu_s() -> float:
    """User + system CPU seconds of every ``postgres`` process on this machine (the server's
    backends, WAL writer and the rest) and of the backends that have exited, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name.startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            # utime, stime and, for the postmaster, its reaped backends' cutime, cstime.
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _busy_s() -> float:
    """CPU seconds all cores spent not idle, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _drain(
    root: Path, env: dict[str, str], workers: int, concurrency: int
) -> tuple[float, float, float]:
    """Run ``workers`` ``grove worker --drain`` processes until they exit; their CPU seconds
    (user + system), the PostgreSQL server's, and the whole machine's busy seconds meanwhile."""
    pg0, busy0 = _postgres_cpu_s(), _busy_s()
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
    own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return own, _postgres_cpu_s() - pg0, _busy_s() - busy0


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
        f" {'CPU ms/agent':>12} {'PG ms/agent':>11} {'cores busy':>10} {'stagger ms':>10}"
        f" {'CPU-bound /s':>12}"
    )
    for backend in args.backends.split(","):
        one = statistics.median(r["rate"] for r in results[(backend, 1)])
        for workers in (1, 4):
            runs = results[(backend, workers)]
            rate = statistics.median(r["rate"] for r in runs)
            wall = statistics.median(r["wall_rate"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            cpu = statistics.median(r["cpu_ms"] for r in runs)
            pg = statistics.median(r["pg_ms"] for r in runs)
            cores = statistics.median(r["cores"] for r in runs)
            stagger = statistics.median(r["stagger_ms"] for r in runs)
            # The rate the machine's cores allow at these CPU costs (worker + PostgreSQL per
            # agent) with every core busy: one worker cannot pass 1 / its own CPU either.
            ceiling = os.cpu_count() or 1
            bound = ceiling / ((cpu + pg) / 1000) if cpu + pg else float("inf")
            if workers == 1 and cpu:
                bound = min(bound, 1000 / cpu)
            ratio = f"{rate / one:.2f}x" if workers == 4 else ""
            print(
                f"{backend:<11} {workers:>7} {rate:>9.0f} {wall:>7.0f} {p99:>8.1f} {ratio:>7}"
                f" {cpu:>12.2f} {pg:>11.2f} {cores:>10.2f} {stagger:>10.0f} {bound:>12.0f}"
            )


if __name__ == "__main__":
    main()
