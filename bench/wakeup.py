"""Spawn -> start latency across processes: one `grove worker` process, agents spawned one at a
time from this process, on PostgreSQL with LISTEN/NOTIFY (the default), on PostgreSQL polling
only (`[worker] listen = false`), on SQLite with its wake-up socket (the default) and on SQLite
polling only. Not a test: prints a table.

    .venv/bin/python bench/wakeup.py [--agents 40]

Latency is the database's own timestamps: ``started_at - created_at`` of each agent (the
worker's claim minus the spawn's insert), so it includes the wake-up and the claim, not the
run. Needs PostgreSQL at 127.0.0.1:5432 (database ``test``, trust auth).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy
from rich.console import Console
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.workspaces import init_repo

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GROVE = [sys.executable, "-m", "agentgrove"]


def measure(label: str, db_url: str | None, listen: bool, agents: int) -> tuple[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="grove-wakeup-") as tmp:
        repo = Path(tmp) / "repo"
        init_repo(repo, {"README.md": "bench\n"})
        (repo / "grove.toml").write_text(
            '[runtime]\nkind = "scripted"\n\n[worker]\npoll_s = 0.5\n'
            f"listen = {'true' if listen else 'false'}\n"
        )
        if db_url is not None:
            os.environ["GROVE_DB_URL"] = db_url
        else:
            os.environ.pop("GROVE_DB_URL", None)
        env = dict(os.environ)  # the worker uses the same database as this process
        with Grove.init(repo) as grove:
            worker = subprocess.Popen(
                [*GROVE, "worker"], cwd=repo, env=env, stderr=subprocess.PIPE, text=True
            )
            try:
                assert worker.stderr is not None
                worker.stderr.readline()  # started
                time.sleep(1.0)  # let it reach its first wait (start-up is not measured)
                latencies = []
                for i in range(agents):
                    agent = grove.spawn("tester", f"latency {i}")
                    deadline = time.monotonic() + 30
                    while (record := grove.get(agent.id)).status is not AgentStatus.COMPLETED:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{label}: agent {agent.id} never completed")
                        time.sleep(0.002)
                    assert record.started_at is not None
                    latencies.append((record.started_at - record.created_at).total_seconds())
                    # A gap, so the worker is back in its wait when the next spawn comes.
                    time.sleep(0.05)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.communicate(timeout=60)
    return label, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=40)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    pg = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        runs = [
            measure("PostgreSQL, LISTEN/NOTIFY", pg, True, args.agents),
        ]
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        runs.append(measure("PostgreSQL, polling (listen = false)", pg, False, args.agents))
        runs.append(measure("SQLite, wake-up socket", None, True, args.agents))
        runs.append(measure("SQLite, polling (listen = false)", None, False, args.agents))
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()
    baseline = statistics.median(runs[1][1])
    table = Table(
        title=f"spawn -> start across processes, {args.agents} agents, poll_s = 0.5",
        caption="ratio: median / the polling PostgreSQL median",
    )
    for column in ("variant", "median ms", "p99 ms", "max ms", "ratio"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for label, values in runs:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        median = statistics.median(values)
        table.add_row(
            label,
            f"{median * 1000:.1f}",
            f"{p99 * 1000:.1f}",
            f"{ordered[-1] * 1000:.1f}",
            f"{median / baseline:.2f}x",
        )
    Console().print(table)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
