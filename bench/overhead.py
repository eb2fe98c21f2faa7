"""How much agentgrove itself costs, next to the floor it is built on.

    .venv/bin/python bench/overhead.py [--quick] [--only latency,throughput,cli]

1. spawn -> start latency, in one process: a Worker in the same event loop as the spawner,
   agents on the in-process ScriptedRuntime, spawned one at a time; measured from the
   ``grove.spawn`` call to the moment the runtime's behaviour is called. In a plain directory
   (orchestration only) and in a git repository (a worktree per agent). Floor: raw ``sqlite3``
   insert + claim handed over through an ``anyio.Event``. Target: p99 < 50 ms.
2. Throughput, agents/s through the whole lifecycle (spawn -> claim -> run -> finish) on SQLite
   with the ScriptedRuntime in a plain directory: all spawned then ``Worker(drain=True)``, and
   spawns interleaved with a running worker. Floor: the same writes and reads with ``sqlite3``.
   Target: >= 300 agents/s. Then (2a) what one claim costs as the pending backlog grows.
3. One ``grove run file-writer ...`` (a subprocess, in a git repository, against the scripted
   model server) next to a bare ``claude -p`` doing the same work: wall time, CPU (user+sys of
   the process tree, from ``wait4``), peak memory. Target: ratio <= 1.10. Followed by where the
   difference goes (interpreter start-up, imports, git, the rest).

Nothing here touches the network: the model is :class:`agentgrove.testing.ModelServer`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from agentgrove.config import find_root
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.runtime._scripted import echo
from agentgrove.testing import ModelServer, file_writer_script
from agentgrove.worker import Worker
from agentgrove.workspaces import Workspaces, init_repo, run_git

ROLE = "file-writer"
TASK = "Create hello.txt containing hi"
LATENCY_TARGET_P99_MS = 50.0
THROUGHPUT_TARGET = 300.0
RATIO_TARGET = 1.10
WAIT_LIMIT_S = 120.0
WARMUP = 5  # agents spawned before the latency measurement starts (cold statement caches)

console = Console(width=None if sys.stdout.isatty() else 150)


# -- small helpers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def verdict(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[bold red]NO[/]"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def new_table(title: str, caption: str, columns: Sequence[str], *, notes: int = 0) -> Table:
    """Numbers right-aligned; the first column (row labels) and the last ``notes`` columns left."""
    table = Table(
        title=title, caption=caption, title_justify="left", caption_justify="left", min_width=110
    )
    for i, name in enumerate(columns):
        text = i == 0 or i >= len(columns) - notes
        table.add_column(name, justify="left" if text else "right")
    return table


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"grove-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def plain_dir(base: Path) -> Path:
    """A directory outside any git repository (so grove creates no worktrees)."""
    path = base / "plain"
    path.mkdir()
    if find_root(path)[1]:
        raise SystemExit(f"bench: {path} is inside a git repository; set TMPDIR elsewhere")
    return path


def git_repo(base: Path, name: str = "repo") -> Path:
    path = base / name
    init_repo(path, {"README.md": "# bench repo\n"})
    return path


def now_text() -> str:
    """A UTC timestamp as SQLAlchemy stores ``DateTime`` in SQLite."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


# -- the floor: the same rows with the sqlite3 module ------------------------------------------


class RawStore:
    """grove's per-agent writes and reads as plain ``sqlite3`` statements on grove's own schema.

    Same pragmas as grove (WAL, synchronous=NORMAL, foreign keys), the same
    ``BEGIN IMMEDIATE`` per write transaction, the same rows and events. ``batched``: no
    transaction of its own, for running everything inside one outer transaction.
    """

    def __init__(self, db: Path, *, batched: bool = False) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.batched = batched
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(agents)")}
        # The claim waits for a parent when the schema has that notion (as Store.claim does).
        self._parent_check = (
            " AND (after_parent IS 0 OR EXISTS (SELECT 1 FROM agents AS parent "
            "WHERE parent.id = agents.parent_id AND parent.status = 'completed'))"
            if "after_parent" in columns
            else ""
        )
        self.claim_select = (
            "SELECT id FROM agents WHERE status = 'pending' AND "
            f"(not_before IS NULL OR not_before <= ?){self._parent_check} "
            "ORDER BY priority DESC, created_at, id LIMIT 1"
        )

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.batched:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _event(self, agent_id: str, kind: str, data: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO events (at, agent_id, kind, data) VALUES (?, ?, ?, ?)",
            (now_text(), agent_id, kind, json.dumps(data)),
        )

    def insert_agent(self, agent_id: str, task: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO agents (id, role, task, model, status, attempt, max_attempts, "
                "tokens_in, tokens_out, cost_usd, duration_ms, priority, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', 0, 3, 0, 0, 0.0, 0, 0, ?)",
                (agent_id, ROLE, task, "claude-haiku-4-5", now_text()),
            )
            self._event(agent_id, "agent.spawned", {"role": ROLE})

    def get_agent(self, agent_id: str) -> tuple[Any, ...]:
        if not self.batched:
            self.conn.execute("BEGIN")
        row = self.conn.execute(
            "SELECT * FROM agents LEFT OUTER JOIN workspaces ON workspaces.agent_id = agents.id "
            "WHERE agents.id = ?",
            (agent_id,),
        ).fetchone()
        if not self.batched:
            self.conn.execute("ROLLBACK")
        assert row is not None
        return tuple(row)

    def claim(self, owner: str) -> tuple[str, int] | None:
        now = now_text()
        expires = (datetime.now(UTC) + timedelta(seconds=60)).replace(tzinfo=None).isoformat(" ")
        with self._write() as conn:
            row = conn.execute(
                "UPDATE agents SET status = 'executing', lease_owner = ?, lease_expires_at = ?, "
                "attempt = attempt + 1, started_at = coalesce(started_at, ?) "
                f"WHERE id = ({self.claim_select}) AND status = 'pending' RETURNING id, attempt",
                (owner, expires, now, now),
            ).fetchone()
            if row is None:
                return None
            self._event(row[0], "agent.claimed", {"owner": owner, "attempt": row[1]})
        return str(row[0]), int(row[1])

    def save_workspace(self, agent_id: str, path: str) -> None:
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE workspaces SET repo_path = NULL, worktree_path = ?, branch = NULL, "
                "base_ref = NULL, head_commit = NULL, diffstat = NULL, files_changed = '[]', "
                "state = 'unisolated' WHERE agent_id = ?",
                (path, agent_id),
            )
            if updated.rowcount == 0:
                conn.execute(
                    "INSERT INTO workspaces (agent_id, worktree_path, files_changed, state) "
                    "VALUES (?, ?, '[]', 'unisolated')",
                    (agent_id, path),
                )

    def record_message(
        self, agent_id: str, owner: str, attempt: int, seq: int, event: str | None
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO transcripts (agent_id, attempt, seq, at, kind, message) "
                "SELECT :id, :attempt, :seq, :at, 'Scripted', :message WHERE EXISTS (SELECT 1 "
                "FROM agents WHERE id = :id AND status = 'executing' AND lease_owner = :owner "
                "AND attempt = :attempt)",
                {"id": agent_id, "attempt": attempt, "seq": seq, "at": now_text(),
                 "message": json.dumps({"seq": seq}), "owner": owner},
            )  # fmt: skip
            if event is not None:
                self._event(agent_id, event, {"success": True})

    def finish(self, agent_id: str, owner: str, attempt: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE agents SET status = 'completed', output = ?, error = NULL, "
                "error_kind = NULL, tokens_in = tokens_in + 10, tokens_out = tokens_out + 5, "
                "cost_usd = cost_usd + 0.0001, duration_ms = duration_ms + 1, session_id = ?, "
                "lease_owner = NULL, lease_expires_at = NULL, finished_at = ? "
                "WHERE id = ? AND status = 'executing' AND lease_owner = ? AND attempt = ?",
                ("done", f"scripted-{agent_id}", now_text(), agent_id, owner, attempt),
            )
            self._event(agent_id, "agent.completed", {"attempt": attempt})

    def lifecycle(self, agent_id: str, attempt: int, owner: str, cwd: str) -> None:
        """What grove writes and reads for one claimed agent on the ScriptedRuntime, unisolated:
        workspace row, two transcript messages (one with an event), workspace again (after the
        no-op commit), the fenced finish."""
        self.get_agent(agent_id)
        self.save_workspace(agent_id, cwd)
        self.record_message(agent_id, owner, attempt, 0, None)
        self.record_message(agent_id, owner, attempt, 1, "agent.result")
        self.save_workspace(agent_id, cwd)
        self.finish(agent_id, owner, attempt)


def fresh_grove_db(base: Path) -> Path:
    """An empty database with grove's current schema (made by grove's own migrations)."""
    base.mkdir(parents=True, exist_ok=True)
    home = plain_dir(base)
    with Grove.init(home, runtime=ScriptedRuntime()) as grove:
        db = grove.config.home / "grove.db"
    return db


# -- 1. spawn -> start latency ------------------------------------------------------------------


class Signals:
    """Per-agent anyio events: ``start`` (runtime behaviour called) and ``done`` (completed)."""

    def __init__(self) -> None:
        self.started_at: dict[str, float] = {}
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self.completed = 0
        self.all_done = anyio.Event()
        self.expect_total: int | None = None

    def event(self, kind: str, agent_id: str) -> anyio.Event:
        return self._events.setdefault((kind, agent_id), anyio.Event())

    def behaviour(self, spec: RunSpec) -> RunResult:
        self.started_at[spec.agent_id] = time.perf_counter()
        self.event("start", spec.agent_id).set()
        return echo(spec)

    def observer(self, agent_id: str, kind: str, _data: dict[str, Any]) -> None:
        if kind == "agent.completed":
            self.event("done", agent_id).set()
            self.completed += 1
            if self.expect_total is not None and self.completed >= self.expect_total:
                self.all_done.set()


@dataclass
class LatencyRun:
    label: str
    spawn_call_ms: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)
    note: str = ""


async def grove_latency(
    path: Path, label: str, n: int, concurrency: int, gap_s: float
) -> LatencyRun:
    """Spawn ``n`` agents one at a time (after ``WARMUP`` unrecorded ones), each only once the
    previous one completed and ``gap_s`` passed, so every spawn finds the worker idle."""
    signals = Signals()
    run = LatencyRun(label)
    with Grove.init(
        path, runtime=ScriptedRuntime(signals.behaviour), observer=signals.observer
    ) as grove:
        run.note = f"worker poll_s={grove.config.worker.poll_s:g}, concurrency={concurrency}"
        worker = Worker(grove.service, grove.config.worker, concurrency=concurrency)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.sleep(0.05)  # let the worker reach its first wait
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                agent = grove.spawn(ROLE, f"latency probe {i}")
                t1 = time.perf_counter()
                with anyio.fail_after(WAIT_LIMIT_S):
                    await signals.event("start", agent.id).wait()
                    await signals.event("done", agent.id).wait()
                if i >= WARMUP:
                    run.spawn_call_ms.append((t1 - t0) * 1e3)
                    run.start_ms.append((signals.started_at[agent.id] - t0) * 1e3)
                await anyio.sleep(gap_s)
            worker.request_stop()
    return run


async def floor_latency(db: Path, n: int, gap_s: float) -> LatencyRun:
    """Insert a row, set an event; a consumer task claims it with one UPDATE ... RETURNING."""
    raw = RawStore(db)
    run = LatencyRun("floor: sqlite3 insert + claim via anyio.Event")
    started: dict[str, float] = {}
    start_events: dict[str, anyio.Event] = {}
    wake = [anyio.Event()]
    stopping = anyio.Event()

    async def consumer() -> None:
        while not stopping.is_set():
            claimed = raw.claim("floor")
            if claimed is None:
                wake[0] = anyio.Event()
                await wake[0].wait()
                continue
            agent_id, attempt = claimed
            started[agent_id] = time.perf_counter()
            start_events.setdefault(agent_id, anyio.Event()).set()
            raw.finish(agent_id, "floor", attempt)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.01)
        for i in range(WARMUP + n):
            agent_id = uuid.uuid4().hex[:12]
            t0 = time.perf_counter()
            raw.insert_agent(agent_id, f"latency probe {i}")
            t1 = time.perf_counter()
            wake[0].set()
            with anyio.fail_after(WAIT_LIMIT_S):
                await start_events.setdefault(agent_id, anyio.Event()).wait()
            if i >= WARMUP:
                run.spawn_call_ms.append((t1 - t0) * 1e3)
                run.start_ms.append((started[agent_id] - t0) * 1e3)
            await anyio.sleep(gap_s)
        stopping.set()
        wake[0].set()
    raw.close()
    return run


def bench_latency(quick: bool) -> list[LatencyRun]:
    n_plain, n_git = (50, 15) if quick else (200, 40)
    gap_s, concurrency = 0.002, 4
    with scratch_dir("latency") as base:
        plain, repo = plain_dir(base), git_repo(base)
        floor_db = fresh_grove_db(base / "floor")
        cases = [
            (plain, "grove, plain dir (no worktree)", n_plain),
            (repo, "grove, git repo (worktree per agent)", n_git),
        ]
        runs = [anyio.run(grove_latency, p, label, n, concurrency, gap_s) for p, label, n in cases]
        runs.append(anyio.run(floor_latency, floor_db, n_plain, gap_s))
    return runs


def print_latency(runs: list[LatencyRun]) -> None:
    floor = runs[-1]
    f50, f99 = percentile(floor.start_ms, 50), percentile(floor.start_ms, 99)
    table = new_table(
        "1. spawn() call -> runtime start, ms (one agent at a time, each after the previous "
        f"completed; {WARMUP} warm-up agents not counted)",
        f"target: p99 < {LATENCY_TARGET_P99_MS:g} ms; {runs[0].note}; "
        "'vs floor' = this row / the floor row",
        ["variant", "n", "spawn() p50", "p50", "p99", "max", "p50 vs floor", "p99 vs floor",
         f"p99 < {LATENCY_TARGET_P99_MS:g} ms"],
    )  # fmt: skip
    for run in runs:
        p50, p99 = percentile(run.start_ms, 50), percentile(run.start_ms, 99)
        is_floor = run is floor
        table.add_row(
            run.label,
            str(len(run.start_ms)),
            f"{percentile(run.spawn_call_ms, 50):.2f}",
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{max(run.start_ms):.2f}",
            "-" if is_floor else fmt_ratio(p50 / f50),
            "-" if is_floor else fmt_ratio(p99 / f99),
            "-" if is_floor else verdict(p99 < LATENCY_TARGET_P99_MS),
        )
    console.print(table)


# -- 2. throughput ----------------------------------------------------------------------------


@dataclass
class ThroughputRun:
    label: str
    agents: int
    spawn_s: float
    run_s: float
    total_s: float
    cpu_s: float
    is_floor: bool = False

    @property
    def rate(self) -> float:
        return self.agents / self.total_s


def _check_all_completed(grove: Grove, n: int) -> None:
    counts = grove.store.count_by_status()
    done = counts.get(AgentStatus.COMPLETED, 0)
    if done != n:
        raise SystemExit(f"bench: expected {n} completed agents, got {dict(counts)}")


async def grove_batch(path: Path, n: int, concurrency: int) -> ThroughputRun:
    with Grove.init(path, runtime=ScriptedRuntime()) as grove:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            grove.spawn(ROLE, f"throughput {i}")
        t1 = time.perf_counter()
        worker = Worker(grove.service, grove.config.worker, concurrency=concurrency, drain=True)
        with anyio.fail_after(WAIT_LIMIT_S):
            await worker.run()
        t2, c2 = time.perf_counter(), time.process_time()
        _check_all_completed(grove, n)
    label = f"grove: spawn all, then Worker(drain=True, concurrency={concurrency})"
    return ThroughputRun(label, n, spawn_s=t1 - t0, run_s=t2 - t1, total_s=t2 - t0, cpu_s=c2 - c0)


async def grove_interleaved(path: Path, n: int, concurrency: int) -> ThroughputRun:
    signals = Signals()
    signals.expect_total = n
    with Grove.init(path, runtime=ScriptedRuntime(), observer=signals.observer) as grove:
        worker = Worker(grove.service, grove.config.worker, concurrency=concurrency)
        t0, c0 = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            for i in range(n):
                grove.spawn(ROLE, f"throughput {i}")
                await anyio.sleep(0)  # hand the loop to the worker between spawns
            t1 = time.perf_counter()
            with anyio.fail_after(WAIT_LIMIT_S):
                await signals.all_done.wait()
            worker.request_stop()
        t2, c2 = time.perf_counter(), time.process_time()
        _check_all_completed(grove, n)
    label = f"grove: spawn while a Worker(concurrency={concurrency}) runs"
    return ThroughputRun(label, n, spawn_s=t1 - t0, run_s=t2 - t1, total_s=t2 - t0, cpu_s=c2 - c0)


def floor_throughput(db: Path, n: int, *, batched: bool) -> ThroughputRun:
    raw = RawStore(db, batched=batched)
    cwd = str(db.parent)
    if batched:
        raw.conn.execute("BEGIN IMMEDIATE")
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        agent_id = uuid.uuid4().hex[:12]
        raw.insert_agent(agent_id, f"throughput {i}")
        raw.get_agent(agent_id)
    t1 = time.perf_counter()
    done = 0
    while (claimed := raw.claim("floor")) is not None:
        raw.lifecycle(claimed[0], claimed[1], "floor", cwd)
        done += 1
    if batched:
        raw.conn.execute("COMMIT")
    t2, c2 = time.perf_counter(), time.process_time()
    raw.close()
    assert done == n, (done, n)
    label = (
        "floor: sqlite3, same rows, all in one transaction"
        if batched
        else "floor: sqlite3, same rows and transactions"
    )
    return ThroughputRun(
        label,
        n,
        spawn_s=t1 - t0,
        run_s=t2 - t1,
        total_s=t2 - t0,
        cpu_s=c2 - c0,
        is_floor=True,
    )


def bench_throughput(quick: bool) -> list[ThroughputRun]:
    # The interleaved variant is smaller: it exercises the same paths, and time is bounded.
    n, n_interleaved, concurrency = (300, 300, 8) if quick else (2000, 1000, 8)
    runs: list[ThroughputRun] = []
    with scratch_dir("batch") as base:
        runs.append(anyio.run(grove_batch, plain_dir(base), n, concurrency))
    with scratch_dir("interleaved") as base:
        runs.append(anyio.run(grove_interleaved, plain_dir(base), n_interleaved, concurrency))
    with scratch_dir("floor") as base:
        runs.append(floor_throughput(fresh_grove_db(base), n, batched=False))
    with scratch_dir("floor1") as base:
        runs.append(floor_throughput(fresh_grove_db(base), n, batched=True))
    return runs


def print_throughput(runs: list[ThroughputRun]) -> None:
    floor = next(r for r in runs if r.is_floor)
    table = new_table(
        "2. throughput: spawn -> claim -> run -> finish (ScriptedRuntime, SQLite, plain dir)",
        f"target: >= {THROUGHPUT_TARGET:g} agents/s end to end; 'time vs floor' = total time / "
        "the first floor row's, i.e. what grove costs over the same rows written with sqlite3. "
        "CPU s = this process's CPU time (all threads), which other load on the machine barely "
        "affects: agents/CPU-s is what the throughput would be with a core to itself.",
        ["variant", "agents", "spawn s", "run s", "total s", "ms/agent", "agents/s", "CPU s",
         "agents/CPU-s", "time vs floor", f">= {THROUGHPUT_TARGET:g}/s"],
    )  # fmt: skip
    for run in runs:
        table.add_row(
            run.label,
            str(run.agents),
            f"{run.spawn_s:.2f}",
            f"{run.run_s:.2f}",
            f"{run.total_s:.2f}",
            f"{run.total_s / run.agents * 1e3:.2f}",
            f"{run.rate:,.0f}",
            f"{run.cpu_s:.2f}",
            f"{run.agents / run.cpu_s:,.0f}",
            fmt_ratio(run.total_s / floor.total_s),
            "-" if run.is_floor else verdict(run.rate >= THROUGHPUT_TARGET),
        )
    console.print(table)


@dataclass(frozen=True)
class ClaimCost:
    backlog: int
    grove_ms: float
    floor_ms: float


def bench_claim_scaling(quick: bool) -> tuple[list[ClaimCost], str]:
    """``Store.claim()`` (and the same UPDATE in sqlite3) with a growing pending backlog; and
    SQLite's plan for the claim's subquery."""
    sizes, probes = ((100, 1000) if quick else (100, 1000, 2000)), 20
    costs: list[ClaimCost] = []
    with (
        scratch_dir("claim") as base,
        Grove.init(plain_dir(base), runtime=ScriptedRuntime()) as grove,
    ):
        raw = RawStore(grove.config.home / "grove.db")
        pending = 0

        def fill(size: int) -> None:
            nonlocal pending
            for _ in range(size - pending):
                raw.insert_agent(uuid.uuid4().hex[:12], "backlog")
            pending = size

        fill(2)  # one unmeasured claim each: compile caches, first-use set-up
        assert grove.store.claim("probe", 60) is not None
        assert raw.claim("probe") is not None
        pending = 0
        for size in sizes:
            fill(size)
            t0 = time.perf_counter()
            for _ in range(probes):
                assert grove.store.claim("probe", 60) is not None
            grove_ms = (time.perf_counter() - t0) / probes * 1e3
            pending -= probes
            fill(size)
            t0 = time.perf_counter()
            for _ in range(probes):
                assert raw.claim("probe") is not None
            floor_ms = (time.perf_counter() - t0) / probes * 1e3
            pending -= probes
            costs.append(ClaimCost(size, grove_ms, floor_ms))
        plan = raw.conn.execute(f"EXPLAIN QUERY PLAN {raw.claim_select}", (now_text(),)).fetchall()
        raw.close()
    return costs, "; ".join(str(row[-1]) for row in plan)


def print_claim_scaling(result: tuple[list[ClaimCost], str]) -> None:
    costs, plan = result
    table = new_table(
        "2a. one claim (UPDATE ... WHERE id = (next pending) RETURNING) vs the pending backlog",
        f"SQLite plan of the claim's subquery: {plan}",
        ["pending agents", "Store.claim() ms", "same UPDATE in sqlite3, ms"],
    )
    for cost in costs:
        table.add_row(str(cost.backlog), f"{cost.grove_ms:.2f}", f"{cost.floor_ms:.2f}")
    console.print(table)


# -- 3. one grove run vs bare claude -p --------------------------------------------------------


PAGE = os.sysconf("SC_PAGE_SIZE")


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, rss bytes) of every process, from /proc/<pid>/stat."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


class TreeRss:
    """Samples the summed RSS of a process and its descendants every ``interval_s``."""

    def __init__(self, root: int, interval_s: float = 0.02) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            procs = _process_table()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _rss) in procs.items():
                children.setdefault(ppid, []).append(pid)
            total, todo = 0, [self.root]
            while todo:
                pid = todo.pop()
                if pid in procs:
                    total += procs[pid][1]
                todo.extend(children.get(pid, ()))
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    tree_peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 180
) -> ChildRun:
    """Run ``cmd``; wall time, and from ``wait4`` the user+sys CPU and peak RSS of it and every
    descendant it reaped (the largest single process), plus the sampled peak of the tree's sum."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        with TreeRss(proc.pid) as sampler:
            _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            maxrss_mb=usage.ru_maxrss / 1024,
            tree_peak_mb=sampler.peak / 2**20,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def claude_binary() -> Path:
    import claude_agent_sdk

    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    if not path.exists():
        raise SystemExit(f"bench: the bundled claude CLI is missing at {path}")
    return path


def grove_command() -> list[str]:
    script = Path(sys.executable).parent / "grove"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentgrove"]


def base_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GROVE_", "ANTHROPIC_", "CLAUDE_"))
    }
    env["HOME"] = str(home)
    return env


def bare_system_prompt(cwd: Path) -> str:
    """The system prompt grove would give a file-writer agent working in ``cwd``."""
    spec = RunSpec(
        agent_id="bare0000",
        role=BUILTIN_ROLES[ROLE],
        prompt=TASK,
        model=BUILTIN_ROLES[ROLE].model,
        cwd=cwd,
        max_turns=10,
        max_budget_usd=0.25,
        timeout_s=300,
    )
    return spec.system_prompt


def _grove_branches(repo: Path) -> set[str]:
    out = run_git(["for-each-ref", "--format=%(refname:short)", "refs/heads/grove/"], repo)
    return set(out.split())


def one_grove_run(repo: Path, env: dict[str, str]) -> ChildRun:
    before = _grove_branches(repo)
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        result = run_measured([*grove_command(), "run", ROLE, TASK], repo, {**env, **server.env()})
        problems = [*server.errors, *server.script.unconsumed()]
    new = _grove_branches(repo) - before
    content = run_git(["show", f"{next(iter(new))}:hello.txt"], repo) if len(new) == 1 else None
    if result.returncode != 0 or problems or content != "hi":
        raise SystemExit(
            f"bench: grove run failed (exit {result.returncode}, branches {new}, "
            f"hello.txt={content!r}, server: {problems})\n{result.stdout}\n{result.stderr}"
        )
    return result


def one_bare_run(cwd: Path, env: dict[str, str]) -> ChildRun:
    target = cwd / "hello.txt"
    target.unlink(missing_ok=True)
    cmd = [str(claude_binary()), "-p", TASK, "--model", BUILTIN_ROLES[ROLE].model]
    cmd += ["--system-prompt", bare_system_prompt(cwd), "--allowedTools", "Write"]
    cmd += ["--permission-mode", "acceptEdits", "--output-format", "json"]
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        result = run_measured(cmd, cwd, {**env, **server.env()})
        problems = [*server.errors, *server.script.unconsumed()]
    written = target.read_text() if target.exists() else None
    if result.returncode != 0 or problems or written != "hi\n":
        raise SystemExit(
            f"bench: bare claude failed (exit {result.returncode}, hello.txt={written!r}, "
            f"server: {problems})\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result


@dataclass(frozen=True)
class Phase:
    label: str
    wall_s: float
    cpu_s: float
    how: str


@dataclass
class CliComparison:
    grove: list[ChildRun]
    bare: list[ChildRun]
    phases: list[Phase]
    imports: list[tuple[str, float]]


def median_of(runs: list[ChildRun], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def min_of(runs: list[ChildRun], attr: str) -> float:
    return min(float(getattr(r, attr)) for r in runs)


def _best_usage(cmd: list[str], cwd: Path, env: dict[str, str], reps: int) -> tuple[float, float]:
    """The least wall and CPU seconds of running ``cmd`` ``reps`` times (the least disturbed)."""
    runs = [run_measured(cmd, cwd, env) for _ in range(reps)]
    for run in runs:
        if run.returncode != 0:
            raise SystemExit(f"bench: {cmd} failed:\n{run.stderr}")
    return min(r.wall_s for r in runs), min(r.cpu_s for r in runs)


def _cpu_now() -> float:
    """User+sys CPU seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _git_phase(base: Path, reps: int) -> tuple[float, float]:
    """Least wall and CPU of what grove runs git for in one agent: worktree create + commit."""
    repo = git_repo(base, "git-phase")
    ws = Workspaces(repo, repo / ".grove" / "worktrees", repo)
    head = run_git(["rev-parse", "HEAD"], repo)
    walls, cpus = [], []
    for i in range(reps):
        agent_id = f"phase{i:04d}"
        t0, c0 = time.perf_counter(), _cpu_now()
        record = ws.create(agent_id, head)
        (Path(record.worktree_path) / "hello.txt").write_text("hi\n")
        ws.commit(record, f"file-writer: {TASK}", {"Grove-Agent": agent_id})
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_now() - c0)
    return min(walls), min(cpus)


IMPORT_PACKAGES = frozenset(
    ("agentgrove.cli", "agentgrove.runtime.claude", "claude_agent_sdk", "mcp", "sqlalchemy",
     "alembic", "pydantic", "pydantic_settings", "typer", "rich", "anyio")
)  # fmt: skip


def _import_costs(cwd: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """Cumulative first-import ms of the heavy packages, from ``-X importtime``."""
    code = "import agentgrove.cli, agentgrove.runtime.claude"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in IMPORT_PACKAGES and parts[1].isdigit():
            costs[parts[2]] = int(parts[1]) / 1000
    return sorted(costs.items(), key=lambda kv: -kv[1])


def bench_cli(quick: bool) -> CliComparison:
    runs = 2 if quick else 5
    with scratch_dir("cli") as base:
        home = base / "home"
        home.mkdir()
        env = base_env(home)
        repo = git_repo(base, "grove-repo")
        bare_dir = git_repo(base, "bare-repo")
        _best_usage([*grove_command(), "init"], repo, env, 1)
        # Warm-up (page cache for the 370 MB CLI binary, Python's bytecode cache): not counted.
        one_grove_run(repo, env)
        one_bare_run(bare_dir, env)
        grove_runs: list[ChildRun] = []
        bare_runs: list[ChildRun] = []
        for i in range(runs):
            if i % 2 == 0:
                grove_runs.append(one_grove_run(repo, env))
                bare_runs.append(one_bare_run(bare_dir, env))
            else:
                bare_runs.append(one_bare_run(bare_dir, env))
                grove_runs.append(one_grove_run(repo, env))

        reps = 2 if quick else 3
        py, both = sys.executable, "import agentgrove.cli, agentgrove.runtime.claude"
        startup = _best_usage([py, "-c", "pass"], repo, env, reps)
        cli = _best_usage([py, "-c", "import agentgrove.cli, os; os._exit(0)"], repo, env, reps)
        sdk = _best_usage([py, "-c", f"{both}, os; os._exit(0)"], repo, env, reps)
        sdk_exit = _best_usage([py, "-c", both], repo, env, reps)
        git = _git_phase(base, reps)
        imports = _import_costs(repo, env)

    def minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return a[0] - b[0], a[1] - b[1]

    parts = [
        ("python interpreter start-up", startup, "python -c pass"),
        ("import agentgrove.cli (sqlalchemy, alembic, typer, pydantic, ...)",
         minus(cli, startup), "import it, os._exit(0); - start-up"),
        ("import agentgrove.runtime.claude (claude_agent_sdk -> mcp)", minus(sdk, cli),
         "import both, os._exit(0); - the above (lazy, in default_runtime())"),
        ("interpreter shutdown after those imports (module teardown)", minus(sdk_exit, sdk),
         "import both; - import both, os._exit(0)"),
        ("git: worktree add, then add/commit/diff", git, "Workspaces.create + commit"),
        ("the claude CLI doing the work",
         (min_of(bare_runs, "wall_s"), min_of(bare_runs, "cpu_s")), "best bare claude -p run"),
    ]  # fmt: skip
    phases = [Phase(label, wall, cpu, how) for label, (wall, cpu), how in parts]
    grove = (min_of(grove_runs, "wall_s"), min_of(grove_runs, "cpu_s"))
    rest = (grove[0] - sum(p.wall_s for p in phases), grove[1] - sum(p.cpu_s for p in phases))
    phases.append(
        Phase(
            "the rest: DB, SDK control protocol, waiting, noise",
            *rest,
            "best grove run - the above",
        )
    )
    return CliComparison(grove_runs, bare_runs, phases, imports)


def print_cli(result: CliComparison) -> None:
    table = new_table(
        f'3. `grove run {ROLE} "{TASK}"` vs bare `claude -p`: medians of '
        f"{len(result.grove)} alternated runs each, after one warm-up each",
        f"target: grove/bare <= {RATIO_TARGET:.2f}; best = the least of the runs. "
        "CPU = user+sys of the process and every "
        "descendant it reaped (wait4); max RSS = the largest single process (wait4); tree RSS = "
        "peak of the summed RSS of the process tree, sampled every 20 ms from /proc",
        ["measure", "grove run", "bare claude -p", "grove/bare", "best grove", "best bare",
         "best/best", "each run (grove | bare)", f"<= {RATIO_TARGET:.2f} (medians)"],
    )  # fmt: skip
    rows = (
        ("wall (s)", "wall_s", "{:.2f}"),
        ("CPU user+sys (s)", "cpu_s", "{:.2f}"),
        ("max RSS, one process (MB)", "maxrss_mb", "{:.0f}"),
        ("peak RSS, whole tree (MB)", "tree_peak_mb", "{:.0f}"),
    )
    for label, attr, fmt in rows:
        g, b = median_of(result.grove, attr), median_of(result.bare, attr)
        g_best, b_best = min_of(result.grove, attr), min_of(result.bare, attr)
        each = " ".join(fmt.format(getattr(r, attr)) for r in result.grove)
        each += " | " + " ".join(fmt.format(getattr(r, attr)) for r in result.bare)
        table.add_row(
            label,
            fmt.format(g),
            fmt.format(b),
            fmt_ratio(g / b),
            fmt.format(g_best),
            fmt.format(b_best),
            fmt_ratio(g_best / b_best),
            each,
            verdict(g / b <= RATIO_TARGET),
        )
    console.print(table)

    wall, cpu = min_of(result.grove, "wall_s"), min_of(result.grove, "cpu_s")
    gap_wall = wall - min_of(result.bare, "wall_s")
    gap_cpu = cpu - min_of(result.bare, "cpu_s")
    phases = new_table(
        "3a. where one `grove run` goes: each phase measured on its own, best of several runs, "
        "shares of the best grove run",
        f"best grove run over best bare claude -p: +{gap_wall:.2f} s wall, +{gap_cpu:.2f} s CPU. "
        "Wall is sensitive to other load on the machine (differences of independently measured "
        "minima can even come out negative); CPU much less so.",
        ["phase", "wall s", "share", "CPU s", "share", "how measured"],
        notes=1,
    )
    for phase in result.phases:
        phases.add_row(
            phase.label,
            f"{phase.wall_s:.3f}",
            f"{phase.wall_s / wall:.0%}",
            f"{phase.cpu_s:.3f}",
            f"{phase.cpu_s / cpu:.0%}",
            phase.how,
        )
    console.print(phases)

    imports = new_table(
        "3b. first-import cost of the heavy packages",
        "ms, cumulative (nested rows overlap), from python -X importtime -c "
        "'import agentgrove.cli, agentgrove.runtime.claude', which inflates them somewhat",
        ["module", "ms"],
    )
    for name, ms in result.imports:
        imports.add_row(name, f"{ms:.0f}")
    console.print(imports)


# -- main ---------------------------------------------------------------------------------------


def _environment_line() -> str:
    claude_version = subprocess.run(
        [str(claude_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, {git_version}, claude {claude_version}, {_load()}"
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min)"


def section_latency(quick: bool) -> None:
    print_latency(bench_latency(quick))


def section_throughput(quick: bool) -> None:
    print_throughput(bench_throughput(quick))
    print_claim_scaling(bench_claim_scaling(quick))


def section_cli(quick: bool) -> None:
    print_cli(bench_cli(quick))


SECTIONS: dict[str, Callable[[bool], None]] = {
    "latency": section_latency,
    "throughput": section_throughput,
    "cli": section_cli,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer agents and runs")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    # The grove under test lives in temporary directories, whatever this shell points at.
    for var in ("GROVE_HOME", "GROVE_DB_URL"):
        os.environ.pop(var, None)

    console.print(
        f"[bold]agentgrove overhead[/] ({'quick' if args.quick else 'full'}): {_environment_line()}"
    )
    started = time.perf_counter()
    for name in wanted:
        t0 = time.perf_counter()
        SECTIONS[name](args.quick)
        console.print(f"[dim]({name}: {time.perf_counter() - t0:.1f} s; {_load()})[/]\n")
    console.print(f"[dim]total {time.perf_counter() - started:.1f} s[/]")


if __name__ == "__main__":
    main()
