"""Two machines sharing one PostgreSQL and one git remote (issue 11). Not a test: prints a table.

    .venv/bin/python bench/machines.py [--n 40] [--quick]

A "machine" is its own clone of one bare remote, its own ``GROVE_HOME`` and its own
``grove worker`` process; every machine uses one private PostgreSQL schema (created here,
dropped afterwards) and ``[git] remote = "origin"``. Nothing reaches the network.

1. **Spawn -> start.** Machine A makes a commit, pushes it to the remote as
   ``grove/bench-base-<i>`` (the shape of a parent's pushed work-in-progress commit) and spawns
   an agent based on it. Two workers run side by side, each claiming only its own role
   (``--roles``): A's own worker (one machine: the floor) and B's worker, which lacks the base
   and must fetch it. Samples alternate between the two, one agent at a time, each after the
   previous one finished. Times are the database's own: the spawn's insert (``created_at``) to
   the claim (``started_at``), to the runtime's first transcript message (the worktree is
   ready: base fetched, ``worktree add``, branch checked on the remote), and to the finish
   (``finished_at``: committed and pushed). Wake-ups are LISTEN/NOTIFY (``poll_s = 0.5`` is
   the fallback, so a lost notification would show as about half a second).
2. **Push + fetch per agent.** The same commits go through grove's path
   (:func:`agentgrove.remotes.push_branch` from A, :func:`~agentgrove.remotes.fetch_commit` on
   B) and through bare ``git push`` / ``git fetch`` of the one branch (the floor), to two bare
   remotes of identical content, so both transfer the same objects; which goes first alternates.
   ``remote_tip`` is the extra round trip every worktree creation makes (is there an earlier
   attempt's branch on the remote?), timed on a branch the remote lacks.

Needs PostgreSQL at 127.0.0.1:5432 (database ``test``, trust auth). Every agent is checked
(completed, ran on the machine its role names, its head on the remote); every fetch is checked
(the commit is present afterwards).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlalchemy
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.remotes import fetch_commit, has_commit, push_branch, remote_tip
from agentgrove.store._schema import agents as agents_table
from agentgrove.store._schema import transcripts as transcripts_table
from agentgrove.store._schema import workspaces as workspaces_table
from agentgrove.workspaces import init_repo

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GROVE = [sys.executable, "-m", "agentgrove"]
ME = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
LOCAL, REMOTE = "bench-local", "bench-remote"  # A's worker claims the one, B's the other
AGENT_DEADLINE_S = 60.0
P = ParamSpec("P")
T = TypeVar("T")

ROLE = """
[roles.{name}]
description = "bench: a no-op agent"
model = "claude-haiku-4-5"
system_prompt = "unused: the scripted runtime answers"
tools = ["Read", "Write", "Edit"]
"""
CONFIG = """
[runtime]
kind = "scripted"
scripted_delay_s = 0

[worker]
poll_s = 0.5
grace_s = 0

[git]
remote = "origin"
push_retry_s = 5
"""


def git(cwd: Path, *args: str) -> str:
    """Plain ``git`` (the user's, not grove's hardened one): set-up and the floor."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def commit_file(clone: Path, name: str) -> str:
    """A new commit on the clone's checked-out branch adding ``name``; its id."""
    (clone / name).write_text(f"{name}\n" * 20)
    git(clone, "add", name)
    git(clone, *ME, "commit", "-q", "-m", f"bench: {name}")
    return git(clone, "rev-parse", "HEAD")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Row:
    case: str
    values: list[float]  # seconds
    floor: Row | None = None


# -- 1. spawn on A -> start on B -------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    name: str
    clone: Path
    env: dict[str, str]


def make_machines(root: Path, db_url: str) -> tuple[Path, Machine, Machine]:
    """A bare remote and two initialised clones of it, "a" and "b", sharing ``db_url``."""
    seed = root / "seed"
    init_repo(seed, {"README.md": "# bench\n"})
    bare = root / "remote.git"
    git(root, "clone", "-q", "--bare", str(seed), str(bare))
    base = {k: v for k, v in os.environ.items() if k not in ("GROVE_HOME", "GROVE_DB_URL")}
    found = []
    for name in ("a", "b"):
        clone = root / name
        git(root, "clone", "-q", str(bare), str(clone))
        (clone / "grove.toml").write_text(
            CONFIG + ROLE.format(name=LOCAL) + ROLE.format(name=REMOTE)
        )
        env = {**base, "GROVE_HOME": str(root / f"home-{name}"), "GROVE_DB_URL": db_url}
        done = subprocess.run(
            [*GROVE, "init"], cwd=clone, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"grove init on machine {name} failed: {done.stderr.strip()}")
        found.append(Machine(name, clone, env))
    return bare, found[0], found[1]


@contextmanager
def worker(machine: Machine, role: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``grove worker --roles role`` on ``machine``, stopped with SIGTERM afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*GROVE, "worker", "--roles", role],
            cwd=machine.clone,
            env=machine.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_one(grove: Grove, a: Machine, role: str, label: str, logs: list[Path]) -> str:
    """A commits and pushes a base, spawns an agent of ``role`` on it, and waits for it to
    complete; the agent's id."""
    base = commit_file(a.clone, f"{label}.txt")
    git(a.clone, "push", "-q", "origin", f"{base}:refs/heads/grove/bench-base-{label}")
    agent = grove.spawn(role, f"bench {label}", base=base)
    deadline = time.monotonic() + AGENT_DEADLINE_S
    while (record := grove.get(agent.id)).status not in (AgentStatus.COMPLETED, AgentStatus.FAILED):
        if time.monotonic() > deadline:
            tails = "\n".join(p.read_text(errors="replace")[-1500:] for p in logs)
            raise SystemExit(
                f"agent {agent.id} ({role}) not done after {AGENT_DEADLINE_S:g} s\n{tails}"
            )
        time.sleep(0.002)  # polling the outcome of a benchmark sample, not waiting in a test
    if record.status is not AgentStatus.COMPLETED:
        raise SystemExit(f"agent {agent.id} ({role}) failed: {record.error}")
    return agent.id


def spawn_to_start(root: Path, db_url: str, n: int) -> list[Row]:
    bare, a, b = make_machines(root, db_url)
    os.environ.update(GROVE_HOME=a.env["GROVE_HOME"], GROVE_DB_URL=db_url)
    logs = [root / "worker-a.log", root / "worker-b.log"]
    ids: dict[str, list[str]] = {LOCAL: [], REMOTE: []}
    with (
        Grove.init(a.clone) as grove,
        worker(a, LOCAL, logs[0]),
        worker(b, REMOTE, logs[1]),
    ):
        # One warm-up agent each (not measured): both workers are up and in their wait.
        for role in (LOCAL, REMOTE):
            run_one(grove, a, role, f"warmup-{role}", logs)
        for i in range(n):
            order = (LOCAL, REMOTE) if i % 2 == 0 else (REMOTE, LOCAL)
            for role in order:
                ids[role].append(run_one(grove, a, role, f"{role}-{i}", logs))
                time.sleep(0.05)  # both workers back in their wait before the next spawn
        engine = grove.store.engine
        with engine.connect() as conn:
            agents = {
                r.id: r
                for r in conn.execute(
                    sqlalchemy.select(
                        agents_table.c.id,
                        agents_table.c.created_at,
                        agents_table.c.started_at,
                        agents_table.c.finished_at,
                    )
                )
            }
            first_message = dict(
                conn.execute(
                    sqlalchemy.select(
                        transcripts_table.c.agent_id, sqlalchemy.func.min(transcripts_table.c.at)
                    ).group_by(transcripts_table.c.agent_id)
                ).all()
            )
            spaces = {
                r.agent_id: r
                for r in conn.execute(
                    sqlalchemy.select(
                        workspaces_table.c.agent_id,
                        workspaces_table.c.worktree_path,
                        workspaces_table.c.pushed_commit,
                        workspaces_table.c.head_commit,
                    )
                )
            }
    listed = git(bare, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    heads = dict(line.split(" ", 1) for line in listed)
    rows: list[Row] = []
    for what in ("claim", "runtime start", "finish (pushed)"):
        floor: Row | None = None
        for role, label in ((LOCAL, "one machine (A -> A)"), (REMOTE, "A -> B, B fetches")):
            values = []
            for agent_id in ids[role]:
                rec, ws = agents[agent_id], spaces[agent_id]
                home = (a if role == LOCAL else b).env["GROVE_HOME"]
                if not ws.worktree_path.startswith(home):
                    raise SystemExit(f"agent {agent_id} ran outside {home}: {ws.worktree_path}")
                on_remote = heads.get(f"refs/heads/grove/{agent_id}")
                if (
                    ws.head_commit is None
                    or ws.head_commit not in (on_remote, ws.pushed_commit)
                    or on_remote != ws.pushed_commit
                ):
                    raise SystemExit(f"agent {agent_id}: its head is not on the remote")
                end = {
                    "claim": rec.started_at,
                    "runtime start": first_message[agent_id],
                    "finish (pushed)": rec.finished_at,
                }[what]
                values.append((end - rec.created_at).total_seconds())
            row = Row(f"spawn -> {what}: {label}", values, floor)
            floor = floor or row
            rows.append(row)
    return rows


# -- 2. push + fetch per agent against bare git ------------------------------------------------


def timed(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[float, T]:
    """``fn(*args)``'s wall time in seconds, and what it returned."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def transfer_round(a: Path, b_grove: Path, b_floor: Path, i: int) -> dict[str, float]:
    """One agent's commit made on A, pushed and fetched both ways; seconds per step. Even
    rounds run the floor first, odd rounds grove first."""
    commit = commit_file(a, f"work-{i}.txt")
    branch = f"grove/agent-{i}"
    git(a, "branch", branch, commit)
    took: dict[str, float] = {}

    def grove_push() -> None:
        took["gp"], pushed = timed(push_branch, a, "origin", branch, retry_s=0.0)
        assert pushed == commit

    def floor_push() -> None:
        took["fp"], _ = timed(git, a, "push", "-q", "floor", f"{commit}:refs/heads/{branch}")

    def grove_fetch() -> None:
        took["gf"], found = timed(fetch_commit, b_grove, "origin", commit)
        if not found:
            raise SystemExit(f"fetch_commit did not bring {commit}")

    def floor_fetch() -> None:
        spec = f"refs/heads/{branch}:refs/remotes/origin/{branch}"
        took["ff"], _ = timed(git, b_floor, "fetch", "-q", "--no-tags", "origin", spec)
        if not has_commit(b_floor, commit):
            raise SystemExit(f"git fetch did not bring {commit}")

    for pair in ((floor_push, grove_push), (floor_fetch, grove_fetch)):
        for step in pair if i % 2 == 0 else reversed(pair):
            step()
    took["tip"], tip = timed(remote_tip, b_grove, "origin", f"grove/absent-{i}")
    assert tip is None
    return took


def push_and_fetch(root: Path, n: int) -> list[Row]:
    seed = root / "seed"
    init_repo(seed, {"README.md": "# bench\n"})
    for remote in ("grove.git", "floor.git"):
        git(root, "clone", "-q", "--bare", str(seed), str(root / remote))
    a = root / "a"  # pushes: origin = grove.git, floor = floor.git
    git(root, "clone", "-q", str(root / "grove.git"), str(a))
    git(a, "remote", "add", "floor", str(root / "floor.git"))
    b_grove, b_floor = root / "b-grove", root / "b-floor"  # fetch, each from its own remote
    git(root, "clone", "-q", str(root / "grove.git"), str(b_grove))
    git(root, "clone", "-q", str(root / "floor.git"), str(b_floor))
    transfer_round(a, b_grove, b_floor, 0)  # warms the caches, not counted
    rounds = [transfer_round(a, b_grove, b_floor, i) for i in range(1, n + 1)]

    def of(*keys: str) -> list[float]:
        return [sum(r[k] for k in keys) for r in rounds]

    push_floor = Row("git push (floor)", of("fp"))
    fetch_floor = Row("git fetch of the branch (floor)", of("ff"))
    both_floor = Row("push + fetch: bare git (floor)", of("fp", "ff"))
    return [
        push_floor,
        Row("remotes.push_branch", of("gp"), push_floor),
        fetch_floor,
        Row("remotes.fetch_commit (grove/* refspec)", of("gf"), fetch_floor),
        Row("remotes.remote_tip, branch absent (every create)", of("tip"), fetch_floor),
        both_floor,
        Row("push + fetch: grove", of("gp", "gf"), both_floor),
    ]


# -- the table ---------------------------------------------------------------------------------


def print_table(title: str, rows: list[Row], console: Console) -> None:
    table = Table(
        title=escape(title), caption="ratio: median / the floor's median (p99 / the floor's p99)"
    )
    for column in ("case", "n", "median ms", "p99 ms", "ratio vs floor"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in rows:
        median, p99 = statistics.median(row.values), percentile(row.values, 0.99)
        if row.floor is None:
            ratio = "floor"
        else:
            f_median = statistics.median(row.floor.values)
            f_p99 = percentile(row.floor.values, 0.99)
            ratio = f"{median / f_median:.2f}x ({p99 / f_p99:.2f}x)"
        table.add_row(
            row.case, str(len(row.values)), f"{median * 1000:.1f}", f"{p99 * 1000:.1f}", ratio
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="samples per case (default 40)")
    parser.add_argument("--quick", action="store_true", help="8 samples per case: under a minute")
    args = parser.parse_args()
    n = args.n if args.n is not None else (8 if args.quick else 40)
    if n < 2:
        print(f"bench/machines.py: --n {n} is too few: give at least 2", file=sys.stderr)
        raise SystemExit(2)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sqlalchemy.exc.OperationalError as exc:
        words = str(exc.orig).splitlines()[0]
        print(f"bench/machines.py: PostgreSQL at {PG_URL} is unreachable: {words}", file=sys.stderr)
        raise SystemExit(2) from None
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="grove-machines-") as tmp:
            (Path(tmp) / "spawn").mkdir()
            (Path(tmp) / "git").mkdir()
            latency = spawn_to_start(
                Path(tmp) / "spawn", f"{PG_URL}?options=-csearch_path%3D{schema}", n
            )
            transfer = push_and_fetch(Path(tmp) / "git", n)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()
    console = Console(width=110)  # the table unwrapped, in a terminal or a file
    print_table(
        "1. spawn on A -> start, PostgreSQL LISTEN/NOTIFY, [git] remote set", latency, console
    )
    print_table("2. push + fetch of one agent's commit, local bare remote", transfer, console)
    print(
        f"{socket.gethostname()}: {os.cpu_count()} cores, load average (1 min) "
        f"{load0:.2f} before, {os.getloadavg()[0]:.2f} after; {time.monotonic() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
