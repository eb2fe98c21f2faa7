"""Where the time of one ``grove run`` (or of a ``grove worker --drain``) goes: timestamps
through each attempt, on one clock, from the parent's spawn to the process's exit. Not a test:
prints a timeline.

    .venv/bin/python bench/trace_attempt.py run              # one grove run
    .venv/bin/python bench/trace_attempt.py worker 6 2       # 6 agents, --concurrency 2

The grove process is this file run as ``--child``: it wraps (in that process only) the steps
of an attempt in timestamping shims and then runs the ``grove`` command as usual: the claim,
the worktree's creation, saving the workspace, the runtime's run, the CLI's spawn (before the
SDK is imported), the SDK's import (the preload thread), its client's start and
``initialize`` (answered once the CLI is up) and close, the commit and the ending; git calls
with their durations; the end of ``Worker.run``; the ``atexit`` handlers. The model server
adds when each request came. Against :class:`agentgrove.testing.ModelServer`, in a fresh
repository, after one warm-up run.
"""

from __future__ import annotations

import atexit
import functools
import gc
import inspect
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_marks: list[str] = []


def _mark(what: str) -> None:
    _marks.append(f"{time.time():.4f} {threading.current_thread().name}: {what}\n")


def _shim(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that marks its start and end (sync or async)."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            _mark(f"{label} start")
            try:
                return await original(*args, **kwargs)
            finally:
                _mark(f"{label} end")

        setattr(owner, name, wrapped_async)
        return

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _mark(f"{label} start")
        try:
            return original(*args, **kwargs)
        finally:
            _mark(f"{label} end")

    setattr(owner, name, wrapped)


def _child(trace_file: str, argv: list[str]) -> None:
    _mark("python started")

    def write() -> None:
        cpu = os.times()
        _mark(f"atexit: own CPU {cpu.user + cpu.system:.2f} s")
        with open(trace_file, "a") as out:
            out.writelines(_marks)

    atexit.register(write)
    import agentgrove.cli

    _mark("agentgrove.cli imported")
    from agentgrove import gitexec, grove, service, worker, workspaces
    from agentgrove.runtime import _cli_start, _preload

    _shim(worker.Worker, "run", "Worker.run")
    _shim(worker.Worker, "_claim", "claim")
    _shim(workspaces.Workspaces, "create", "worktree create")
    _shim(workspaces.Workspaces, "commit", "git commit")
    for name in ("save_workspace", "_commit", "_settle"):
        _shim(service.AgentService, name, name)
    _shim(grove._DeferredRuntime, "run", "runtime.run")
    _shim(_cli_start.CliStarter, "start", "CLI spawn")
    git_run = gitexec.run

    def timed_git(args: list[str], cwd: Path, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return git_run(args, cwd, **kwargs)
        finally:
            _mark(f"git {' '.join(args)[:60]} ({(time.time() - t0) * 1000:.1f} ms)")

    gitexec.run = timed_git
    preload: Callable[[], None] = _preload._import

    def traced_preload() -> None:
        try:
            traced()
        except BaseException as exc:
            _mark(f"trace failed: {exc!r}")
            raise

    def traced() -> None:
        _mark("SDK import start")
        gc.disable()  # as the preload itself does (agentgrove.runtime._preload)
        import claude_agent_sdk  # the bulk of the preload; shimmed before the runtime can use it

        gc.enable()

        from claude_agent_sdk._internal.query import Query

        _shim(claude_agent_sdk.ClaudeSDKClient, "__aenter__", "SDK client start")
        _shim(Query, "initialize", "initialize (answered: CLI up)")
        _shim(claude_agent_sdk.ClaudeSDKClient, "__aexit__", "SDK client close")
        preload()
        _mark("SDK import end")

    _preload._import = traced_preload
    sys.argv = ["grove", *argv]
    agentgrove.cli.main()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3:])
        return
    sys.path.insert(0, str(Path(__file__).parent))
    import worker as bench  # bench/worker.py: the same environment, repository and role

    from agentgrove.testing import ModelServer

    mode = sys.argv[1] if len(sys.argv) > 1 else "run"
    agents = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    parallel = sys.argv[3] if len(sys.argv) > 3 else "2"
    requests: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, ModelServer(bench._script()) as server:
        record = server.record_request

        def stamped(request: Any) -> int:
            requests.append(time.time())
            return record(request)

        server.record_request = stamped  # type: ignore[method-assign]
        base = Path(tmp)
        (base / "home").mkdir()
        env = bench._env(base / "home", server)
        for attempt in ("warm-up", "traced"):
            repo = bench._repo(base, "trace", env, grove=True)
            trace = base / f"trace-{attempt}"
            if mode == "run":
                args = ["run", bench.ROLE, bench.TASK]
            else:
                for _ in range(agents):
                    bench._run(
                        [*bench._grove(), "spawn", bench.ROLE, bench.TASK], repo, env, "spawn"
                    )
                args = ["worker", "--concurrency", parallel, "--drain"]
            requests.clear()
            cmd = [sys.executable, __file__, "--child", str(trace), *args]
            t0 = time.time()
            done = subprocess.run(
                cmd, cwd=repo, env=env, capture_output=True, text=True, check=False
            )
            t1 = time.time()
            if done.returncode != 0:
                raise SystemExit(f"trace: grove {args[0]} exited {done.returncode}:\n{done.stderr}")
        lines = [
            (float(line.split(" ", 1)[0]), line.split(" ", 1)[1].rstrip())
            for line in trace.read_text().splitlines()
        ]
        lines += [(t, "model server: request") for t in requests]
        lines += [(t0, "parent: spawned grove"), (t1, "parent: grove exited")]
    print(f"grove {' '.join(args)}; load average {os.getloadavg()[0]:.2f}")
    for at, what in sorted(lines):
        print(f"{(at - t0) * 1000:8.1f} ms  {what}")


if __name__ == "__main__":
    main()
