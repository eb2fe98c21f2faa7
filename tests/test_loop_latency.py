"""The worker's event loop never waits for the database: while another process holds SQLite's
write lock for 5 s, running agents keep streaming (their messages queue, and reach the
database once the lock is gone) and keep their leases, though a lease is shorter than the
lock (a frozen loop would lose it)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import anyio

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.runtime import RunResult, RunSpec
from agentgrove.runtime._base import MessageSink
from agentgrove.worker import Worker
from tests.conftest import wait_until

AGENTS = 4
TICK_S = 0.02
LOCK_S = 5.0


class StreamingRuntime:
    """Streams a message every :data:`TICK_S` until told to finish; counts the messages sent
    while the lock (the files ``locked`` and ``released`` in ``flags``) is held, and the
    event loop's worst lateness then (measured, not asserted)."""

    def __init__(self, flags: Path) -> None:
        self.flags = flags
        self.started: set[str] = set()
        self.during_lock: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.worst_lag_s = 0.0
        self.finish = threading.Event()

    def locked(self) -> bool:
        return (self.flags / "locked").exists() and not (self.flags / "released").exists()

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        sink("Start", {"prompt": spec.prompt}, None)
        self.sent[spec.agent_id] += 1
        self.started.add(spec.agent_id)
        i = 0
        while not self.finish.is_set():
            before = time.monotonic()
            await anyio.sleep(TICK_S)
            lag = time.monotonic() - before - TICK_S
            i += 1
            sink("Tick", {"i": i}, None)
            self.sent[spec.agent_id] += 1
            if self.locked():
                self.during_lock[spec.agent_id] += 1
                self.worst_lag_s = max(self.worst_lag_s, lag)
        return RunResult(success=True, output=f"{i} ticks", session_id=f"s-{spec.agent_id}")


_HOLD_LOCK = """
import pathlib, sqlite3, sys, time
flags = pathlib.Path(sys.argv[2])
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
(flags / "locked").touch()
time.sleep(float(sys.argv[3]))  # the fault itself: how long the lock is held
(flags / "released").touch()
conn.execute("ROLLBACK")
"""


_until = wait_until


def test_a_held_write_lock_freezes_neither_streams_nor_leases(repo: Path, tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    runtime = StreamingRuntime(flags)
    with Grove.init(repo, runtime=runtime) as grove:
        # The lease is shorter than the lock: renewals held up for all of it would lose it.
        grove.configure_worker(lease_s=3, heartbeat_s=0.3, poll_s=0.1)
        ids = [grove.spawn("tester", f"stream {i}").id for i in range(AGENTS)]
        worker = Worker(grove.service, grove.config.worker, drain=True, concurrency=AGENTS)
        failures: list[BaseException] = []

        def run_worker() -> None:
            try:
                anyio.run(worker.run)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=run_worker, daemon=True)
        thread.start()
        try:
            _until(lambda: len(runtime.started) == AGENTS)
            path = grove.store.url.removeprefix("sqlite:///")
            subprocess.run(
                [sys.executable, "-c", _HOLD_LOCK, path, str(flags), str(LOCK_S)],
                check=True,
                timeout=60,
            )
        finally:
            runtime.finish.set()
            thread.join(timeout=120)
        assert not thread.is_alive() and not failures, failures
        agents = {a.id: a for a in grove.store.list_agents()}
        kinds = Counter(e.kind for e in grove.store.events(limit=10_000))
        transcripts = {i: grove.store.transcript(i) for i in ids}
    print(
        f"\nworst event-loop lateness while the lock was held: {runtime.worst_lag_s * 1000:.0f} ms;"
        f" messages streamed during the lock: {dict(runtime.during_lock)}"
    )
    assert all(a.status is AgentStatus.COMPLETED and a.attempt == 1 for a in agents.values())
    assert kinds["agent.lease_expired"] == 0 and kinds["agent.released"] == 0
    # Each agent kept streaming through the lock (a loop waiting on the database: at most one).
    assert all(runtime.during_lock[i] >= 3 for i in ids), runtime.during_lock
    # And everything it said reached the transcript, in order, before its ending.
    for agent_id in ids:
        seqs = [m["seq"] for m in transcripts[agent_id]]
        assert seqs == list(range(runtime.sent[agent_id]))
