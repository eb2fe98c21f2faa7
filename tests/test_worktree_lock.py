"""The worktree lock (:meth:`agentgrove.workspaces.Workspaces._locked`) across processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentgrove.gitexec import GitError
from agentgrove.workspaces import Workspaces

# A process that takes the lock when told to (a line on stdin), keeps it for HOLD seconds
# (its work), and prints what happened.
_HOLDER = """
import sys, time
from pathlib import Path
from agentgrove.workspaces import Workspaces
ws = Workspaces(None, Path(sys.argv[1]), Path.cwd())
print("ready", flush=True)
sys.stdin.readline()
try:
    with ws._locked(timeout_s=float(sys.argv[2])):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
    print("ok", flush=True)
except Exception as exc:
    print(f"failed: {exc}", flush=True)
"""


def _holders(
    folder: Path, count: int, timeout_s: float, hold_s: float
) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(folder), str(timeout_s), str(hold_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return procs


def test_a_queue_of_brief_holders_outlasting_the_timeout_times_nobody_out(tmp_path: Path) -> None:
    # Eight processes each hold the lock 0.5 s, 4 s in all: the last waits far past the 2.5 s
    # timeout, yet every holder was brief. Under load this is a busy grove (the flake of
    # test_t1_eight_workers_race_over_many_agents: 'held .lock for 60 s').
    procs = _holders(tmp_path, 8, timeout_s=2.5, hold_s=0.5)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=120)[0].splitlines()[-1] for proc in procs]
    assert results == ["ok"] * 8


def test_a_holder_that_stops_times_a_waiter_out_naming_it(tmp_path: Path) -> None:
    (stopped,) = _holders(tmp_path, 1, timeout_s=5, hold_s=600)
    assert stopped.stdin is not None and stopped.stdout is not None
    stopped.stdin.write("go\n")
    stopped.stdin.flush()
    assert stopped.stdout.readline() == "held\n"
    stopped.send_signal(signal.SIGSTOP)
    try:
        ws = Workspaces(None, tmp_path, tmp_path)
        with (
            pytest.raises(GitError, match=f"process {stopped.pid} has held"),
            ws._locked(timeout_s=0.5),
        ):
            pass
    finally:
        stopped.send_signal(signal.SIGKILL)
        stopped.communicate(timeout=30)
    with ws._locked(timeout_s=5):  # its descriptor went with it: the lock is free again
        pass
