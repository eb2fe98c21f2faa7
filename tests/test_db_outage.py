"""Workers survive database outages: a PostgreSQL server restarted (immediate mode, several
times) under running agents, and a SQLite file whose write lock another process holds past the
busy timeout. Each agent completes exactly once; no worker dies."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from agentgrove.errors import StoreUnavailable
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.store import Store
from agentgrove.store._dialect import BUSY_TIMEOUT_ENV
from tests.conftest import GROVE, wait_until, write_scripted_config

AGENTS = 20


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster of the test's own (its own directory and port), run as the
    ``postgres`` user; never the shared server."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir, self.root, self.port = bin_dir, root, port
        self.data = root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/grove"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._as_postgres(
            "pg_ctl", action, "-D", str(self.data), "-l", log, "-o", options, "-w", *args
        )

    def start(self) -> None:
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
        self._ctl("start")
        self._as_postgres(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "grove"
        )

    def restart_immediately(self) -> None:
        """``pg_ctl restart -m immediate``: every connection is cut, nothing shut down cleanly."""
        self._ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        self._ctl("stop", "-m", "immediate")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries, runuser and root")
    root = Path(tempfile.mkdtemp(prefix="grove-pg-"))
    shutil.chown(root, "postgres")
    pg = Cluster(bin_dir, root, _free_port())
    try:
        pg.start()
        yield pg
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _configure(repo: Path, delay_s: float, lease_s: float) -> None:
    write_scripted_config(repo, delay_s=delay_s, lease_s=lease_s, poll_s=0.2)


def _until(condition: Callable[[], bool]) -> None:
    wait_until(condition, timeout_s=120.0)


def _worker(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GROVE, "worker", "--drain", "--concurrency", "4", *args],
        cwd=repo,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _executing(store: Store) -> int:
    try:
        return store.count_by_status().get(AgentStatus.EXECUTING, 0)
    except StoreUnavailable:
        return 0


def _completed(store: Store) -> int:
    try:
        return store.count_by_status().get(AgentStatus.COMPLETED, 0)
    except StoreUnavailable:
        return 0


def _assert_each_completed_once(grove: Grove, ids: list[str]) -> None:
    agents = {a.id: a for a in grove.store.list_agents()}
    events = Counter((e.agent_id, e.kind) for e in grove.store.events(limit=100_000))
    assert Counter(a.status for a in agents.values()) == Counter({AgentStatus.COMPLETED: len(ids)})
    assert all(events[(i, "agent.completed")] == 1 for i in ids), events
    # One result each: the transcript holds a single attempt's end.
    for agent_id in ids:
        ends = [m for m in grove.store.transcript(agent_id) if m["kind"] == "ScriptedResult"]
        attempts = {m["attempt"] for m in ends}
        assert agents[agent_id].attempt in attempts


@pytest.mark.e2e
def test_postgres_restarted_under_running_agents(
    repo: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROVE_DB_URL", cluster.url)
    _configure(repo, delay_s=2, lease_s=15)
    with Grove.init(repo) as grove:
        ids = [grove.spawn("tester", f"task {i}").id for i in range(AGENTS)]
        workers = [_worker(repo, {}) for _ in range(2)]
        done = 0
        for _ in range(3):
            # Agents in flight, and some progress since the last restart.
            _until(lambda d=done: _executing(grove.store) > 0 and _completed(grove.store) > d)
            done = _completed(grove.store)
            cluster.restart_immediately()
        results = [w.communicate(timeout=240) for w in workers]
        for w, (_, err) in zip(workers, results, strict=True):
            assert w.returncode == 0, err
        _assert_each_completed_once(grove, ids)
    assert any("database is unavailable" in err for _, err in results)


@pytest.mark.e2e
def test_grove_up_survives_postgres_restarts(
    repo: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GROVE_DB_URL", cluster.url)
    _configure(repo, delay_s=2, lease_s=15)
    log = tmp_path / "up.log"
    with Grove.init(repo) as grove, log.open("w") as err:
        ids = [grove.spawn("tester", f"task {i}").id for i in range(8)]
        up = subprocess.Popen(
            [*GROVE, "up", "--no-shell", "--no-dashboard", "--concurrency", "4"],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        try:
            for _ in range(2):
                _until(lambda: _executing(grove.store) > 0)
                cluster.restart_immediately()
            _until(lambda: _completed(grove.store) == len(ids) or up.poll() is not None)
            assert up.poll() is None, log.read_text()
            up.send_signal(signal.SIGTERM)
            assert up.wait(60) == 0, log.read_text()
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(10)
        _assert_each_completed_once(grove, ids)
    assert "database is unavailable" in log.read_text()


@pytest.mark.e2e
def test_sqlite_locked_past_the_busy_timeout(repo: Path) -> None:
    _configure(repo, delay_s=1.0, lease_s=15)
    env = {BUSY_TIMEOUT_ENV: "300"}
    with Grove.init(repo) as grove:
        url = grove.store.url
        assert url.startswith("sqlite:///")
        path = url.removeprefix("sqlite:///")
        ids = [grove.spawn("tester", f"task {i}").id for i in range(8)]
        worker = _worker(repo, env)
        for _ in range(2):
            _until(lambda: _executing(grove.store) > 0)
            # Another process holds the write lock for 3 s, ten times the busy timeout.
            subprocess.run([sys.executable, "-c", _HOLD_LOCK, path, "3"], check=True, timeout=60)
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
        _assert_each_completed_once(grove, ids)
    assert "database is locked" in err


@pytest.mark.e2e
def test_a_lease_that_cannot_be_renewed_in_time_is_given_up_without_writing(repo: Path) -> None:
    # Locked for 5 s, a 2 s lease: by the worker's own clock the lease has run out, so it
    # stops the run and writes nothing for it; once the lock is gone the agent runs again.
    _configure(repo, delay_s=8, lease_s=2)
    env = {BUSY_TIMEOUT_ENV: "300"}
    with Grove.init(repo) as grove:
        path = grove.store.url.removeprefix("sqlite:///")
        agent = grove.spawn("tester", "outlive a lock")
        worker = _worker(repo, env)
        _until(lambda: len(grove.store.transcript(agent.id)) > 0)  # attempt 1 is running
        subprocess.run([sys.executable, "-c", _HOLD_LOCK, path, "5"], check=True, timeout=60)
        _, err = worker.communicate(timeout=240)
        final = grove.store.get_agent(agent.id)
        kinds = Counter(e.kind for e in grove.store.events(agent_id=agent.id))
        first = [m for m in grove.store.transcript(agent.id) if m["attempt"] == 1]
    assert worker.returncode == 0, err
    assert "lease could not be renewed before it expired" in err
    assert final.status is AgentStatus.COMPLETED and final.attempt == 2
    # The given-up attempt wrote nothing more: no release, no result, no end of transcript.
    assert kinds["agent.released"] == 0 and kinds["agent.lease_expired"] == 1
    assert kinds["agent.completed"] == 1
    assert [m["kind"] for m in first] == ["ScriptedStart"]


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
time.sleep(float(sys.argv[2]))  # the outage itself, not a wait for a condition
conn.execute("ROLLBACK")
"""


def test_locked_sqlite_is_store_unavailable_and_a_bad_statement_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "50")
    path = tmp_path / "grove.db"
    store = Store(f"sqlite:///{path}")
    try:
        with store._write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with (
                pytest.raises(StoreUnavailable, match="database is locked"),
                store._write() as conn,
            ):
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with pytest.raises(sqlalchemy.exc.OperationalError), store._write() as conn:
            conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
    finally:
        store.close()


def test_a_bad_busy_timeout_is_one_line(repo: Path) -> None:
    Grove.init(repo).close()
    done = subprocess.run(
        [*GROVE, "ls"],
        check=False,
        cwd=repo,
        env={**os.environ, BUSY_TIMEOUT_ENV: "soon"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith("give a whole number of milliseconds")
    assert "Traceback" not in done.stderr
