"""The ``grove`` process ends without the interpreter's teardown, yet as ``sys.exit`` would:
threads that are not daemons finish, ``atexit`` handlers run, buffered output is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CHILD = """
import atexit, sys, threading
from agentgrove.cli._exit import leave

out = sys.argv[1]
def late() -> None:
    threading.Event().wait(0.2)  # still running when leave() is called
    with open(out, "a") as f:
        f.write("thread\\n")
threading.Thread(target=late).start()
atexit.register(lambda: open(out, "a").write("atexit\\n"))
sys.stdout.write("x" * 100_000)  # buffered: a pipe is not a terminal
leave(eval(sys.argv[2]))
"""


def _leave(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, out.read_text().splitlines()


def test_leave_waits_for_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    proc, lines = _leave(tmp_path, "3")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "x" * 100_000
    assert lines == ["thread", "atexit"]  # the interpreter's own order


def test_leave_with_a_message_says_it_and_exits_1(tmp_path: Path) -> None:
    proc, _ = _leave(tmp_path, "'grove: gone'")
    assert (proc.returncode, proc.stderr) == (1, "grove: gone\n")
    proc, _ = _leave(tmp_path, "None")
    assert proc.returncode == 0, proc.stderr


def test_a_command_s_output_and_exit_code_survive_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentgrove", "ls"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "grove init" in proc.stderr
