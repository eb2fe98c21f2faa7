"""Agents through ``grove worker`` next to bare ``claude -p`` runs at the same parallelism, and
one ``grove run`` next to one bare ``claude -p`` (issue 13, item 2). Not a test: prints a table.

    .venv/bin/python bench/worker.py [--agents 16] [--repeats 3] [--parallel 2,4] [--before SRC]

Each agent is one turn: the scripted model answers its one request with text. Worker side:
N agents are spawned (``grove spawn``, not timed) into a git repository with ``grove init``
done, then ``grove worker --concurrency P --drain`` runs them: the time is that process's
wall time, start-up and teardown included. Bare side: N ``claude -p`` processes with the same
system prompt, model and permission mode, P at a time, from one thread pool: the time is from
the first start to the last exit. Both against one :class:`agentgrove.testing.ModelServer`
with the same script. ``grove run`` vs one bare run: each as one process, alternated.

``--before SRC`` runs a second grove (``PYTHONPATH=SRC``, e.g. a copy of an older commit's
``src``) right after each run of this one, so that before and after see the same load.

The goal (issue 13): worker/bare <= 1.05 at P=2 and 4, ``grove run``/bare <= 1.5. The rows
"vs the sandboxed floor" put grove next to the bare runs given the sandbox settings.

CPU is user + system of the processes each side started (``RUSAGE_CHILDREN``: the CLIs, git,
the worker and everything they waited for). Where the CLI's Bash sandbox works here (bwrap and
socat), grove runs every agent with it and the CLI pays for it at each start; the rows "+
sandbox" are bare runs given the same ``sandbox`` settings: the floor with that cost in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentgrove.roles import BUILTIN_ROLES
from agentgrove.runtime import RunSpec
from agentgrove.runtime.claude import sandbox_available
from agentgrove.testing import ModelServer, Script, say
from agentgrove.workspaces import init_repo

ROLE = "tester"
TASK = "Say done"


def _claude() -> Path:
    import claude_agent_sdk

    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def _grove() -> list[str]:
    script = Path(sys.executable).parent / "grove"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentgrove"]


def _env(home: Path, server: ModelServer) -> dict[str, str]:
    # Bytecode as users have it: with PYTHONDONTWRITEBYTECODE (set in some sandboxes) every grove
    # process compiled grove's modules from source (~0.1 s of CPU each); the warm-up writes them.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GROVE_", "ANTHROPIC_", "CLAUDE_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    return {**env, "HOME": str(home), **server.env()}


def _script() -> Script:
    return Script().on(turns=[say("done")])


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    """Run ``cmd`` to its end; its stdout, or exit with what failed."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {what} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _repo(base: Path, name: str, env: dict[str, str], *, grove: bool) -> Path:
    repo = base / f"{name}-{time.monotonic_ns()}"
    init_repo(repo, {"README.md": "bench\n"})
    if grove:
        _run([*_grove(), "init"], repo, env, "grove init")
    return repo


def _cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_SANDBOX = json.dumps({"sandbox": {"enabled": True, "allowUnsandboxedCommands": False}})


def _bare_cmd(cwd: Path, n: int, *, sandbox: bool = False) -> list[str]:
    role = BUILTIN_ROLES[ROLE]
    spec = RunSpec(
        agent_id=f"bare{n:04d}",
        role=role,
        prompt=TASK,
        model=role.model,
        cwd=cwd,
        max_turns=10,
        max_budget_usd=0.25,
        timeout_s=300,
    )
    return [
        str(_claude()),
        "-p",
        TASK,
        "--model",
        role.model,
        "--system-prompt",
        spec.system_prompt,
        "--permission-mode",
        "acceptEdits",
        "--output-format",
        "json",
        *(["--settings", _SANDBOX] if sandbox else []),
    ]


Timed = tuple[float, float]
"""(wall seconds, CPU seconds)"""


def _timed(work: Callable[[], object]) -> Timed:
    t0, cpu0 = time.perf_counter(), _cpu()
    work()
    return time.perf_counter() - t0, _cpu() - cpu0


def bare_batch(
    base: Path, env: dict[str, str], agents: int, parallel: int, *, sandbox: bool = False
) -> Timed:
    repo = _repo(base, "bare", env, grove=False)

    def one(n: int) -> str:
        return _run(_bare_cmd(repo, n, sandbox=sandbox), repo, env, "claude -p")

    def batch() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(agents)))

    return _timed(batch)


def worker_batch(base: Path, env: dict[str, str], agents: int, parallel: int) -> Timed:
    repo = _repo(base, "grove", env, grove=True)
    for _ in range(agents):
        _run([*_grove(), "spawn", ROLE, TASK], repo, env, "grove spawn")
    cmd = [*_grove(), "worker", "--concurrency", str(parallel), "--drain"]
    timed = _timed(lambda: _run(cmd, repo, env, "worker"))
    listed = _run([*_grove(), "ls", "--json"], repo, env, "grove ls")
    if listed.count('"completed"') < agents:
        raise SystemExit(f"bench: not every agent completed:\n{listed[-3000:]}")
    return timed


def one_run(
    base: Path, env: dict[str, str], *, sandbox: bool, before: dict[str, str] | None = None
) -> dict[str, Timed]:
    """One ``grove run``, one bare ``claude -p`` (and one with the sandbox, and one ``grove
    run`` of the ``before`` environment's grove), in one repository."""
    repo = _repo(base, "run", env, grove=True)
    run = [*_grove(), "run", ROLE, TASK]
    times = {"grove": _timed(lambda: _run(run, repo, env, "grove run"))}
    if before is not None:
        times["before"] = _timed(lambda: _run(run, repo, before, "grove run (before)"))
    times["bare"] = _timed(lambda: _run(_bare_cmd(repo, 0), repo, env, "claude -p"))
    if sandbox:
        bare = _bare_cmd(repo, 0, sandbox=True)
        times["sandbox"] = _timed(lambda: _run(bare, repo, env, "claude -p"))
    return times


def _row(label: str, values: list[Timed], floor: list[Timed]) -> None:
    wall, cpu = (statistics.median(v[i] for v in values) for i in (0, 1))
    floor_wall, floor_cpu = (statistics.median(v[i] for v in floor) for i in (0, 1))
    top = max(v[0] for v in values)
    print(
        f"{label:<46} {wall:>8.2f} {top:>7.2f} {wall / floor_wall:>7.2f}x "
        f"{cpu:>7.2f} {cpu / floor_cpu:>7.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallel", default="2,4")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also run the grove of this source folder (PYTHONPATH), alternated with this one",
    )
    args = parser.parse_args()
    levels = [int(p) for p in args.parallel.split(",") if p]  # --parallel '': grove run only
    sandbox = sandbox_available()
    loads = [os.getloadavg()[0]]
    with (
        tempfile.TemporaryDirectory(prefix="grove-bench-worker-") as tmp,
        ModelServer(_script()) as server,
    ):
        base = Path(tmp)
        home = base / "home"
        home.mkdir()
        env = _env(home, server)
        before = {**env, "PYTHONPATH": args.before} if args.before else None
        # Warm-up: page cache for the CLI, bytecode caches.
        one_run(base, env, sandbox=sandbox, before=before)
        walls: dict[tuple[str, int], list[Timed]] = {}
        for _ in range(args.repeats):
            for p in levels:  # alternated, so that load changes hit all sides alike
                walls.setdefault(("bare", p), []).append(bare_batch(base, env, args.agents, p))
                walls.setdefault(("grove", p), []).append(worker_batch(base, env, args.agents, p))
                if before is not None:
                    walls.setdefault(("before", p), []).append(
                        worker_batch(base, before, args.agents, p)
                    )
                if sandbox:
                    walls.setdefault(("sandbox", p), []).append(
                        bare_batch(base, env, args.agents, p, sandbox=True)
                    )
                loads.append(os.getloadavg()[0])
        runs = [one_run(base, env, sandbox=sandbox, before=before) for _ in range(args.repeats)]
        if server.errors:
            raise SystemExit(f"bench: the model server saw errors: {server.errors}")
    loads.append(os.getloadavg()[0])
    print(
        f"{args.agents} one-turn agents, median of {args.repeats}; 1-minute load average "
        f"{min(loads):.2f}-{max(loads):.2f} ({os.cpu_count()} CPUs)"
    )
    print(f"{'what':<46} {'median s':>8} {'max s':>7} {'vs bare':>8} {'CPU s':>7} {'vs bare':>8}")
    for p in levels:
        bare = walls[("bare", p)]
        _row(f"bare claude -p x{args.agents}, {p} at a time", bare, bare)
        if sandbox:
            _row(f"  + sandbox settings, {p} at a time", walls[("sandbox", p)], bare)
        _row(f"grove worker --concurrency {p} --drain", walls[("grove", p)], bare)
        if sandbox:
            _row("  the same, vs the sandboxed floor", walls[("grove", p)], walls[("sandbox", p)])
        if before is not None:
            _row("  before (--before), vs bare", walls[("before", p)], bare)
            if sandbox:
                _row(
                    "  before, vs the sandboxed floor", walls[("before", p)], walls[("sandbox", p)]
                )
    bare_one = [r["bare"] for r in runs]
    _row("bare claude -p (one agent)", bare_one, bare_one)
    if sandbox:
        sandboxed = [r["sandbox"] for r in runs]
        _row("  + sandbox settings (one agent)", sandboxed, bare_one)
    _row("grove run (one agent)", [r["grove"] for r in runs], bare_one)
    if sandbox:
        _row("  the same, vs the sandboxed floor", [r["grove"] for r in runs], sandboxed)
    if before is not None:
        _row("  before (--before), vs bare", [r["before"] for r in runs], bare_one)
        if sandbox:
            _row("  before, vs the sandboxed floor", [r["before"] for r in runs], sandboxed)


if __name__ == "__main__":
    main()
