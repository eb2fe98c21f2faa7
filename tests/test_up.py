"""`grove up` as a real process on a scripted-runtime repository: headless with a dashboard,
spawns from another process, SIGTERM shutdown in reverse order; and with its shell in tmux."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from tests.conftest import GROVE, run_cli
from tests.test_shell import AGENT_ID, Tmux, prompt_is_back

SLOW_AGENTS = """\
[runtime]
kind = "scripted"
scripted_delay_s = {delay}

[worker]
grace_s = {grace}
poll_s = 0.1
"""


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Lines:
    """Collects a pipe's lines in a thread, so the test can wait for one."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def index(self, fragment: str) -> int:
        return next(i for i, line in enumerate(self.lines) if fragment in line)

    def join(self) -> None:
        self._thread.join(10)


@pytest.fixture
def up_process(repo: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], Lines]]]:
    started: list[tuple[subprocess.Popen[str], Lines]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], Lines]:
        proc = subprocess.Popen(
            [*GROVE, "up", "--no-shell", *args],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, Lines(proc.stderr)))
        return started[-1]

    yield start
    for proc, lines in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        lines.join()
        assert proc.stderr is not None
        proc.stderr.close()


def test_headless_up_initialises_serves_runs_and_stops_in_reverse_order(
    repo: Path, up_process: Callable[..., tuple[subprocess.Popen[str], Lines]]
) -> None:
    # Each agent runs 5 s: the second must still be in flight when SIGTERM comes.
    (repo / "grove.toml").write_text(SLOW_AGENTS.format(delay=5.0, grace=0.2))
    assert not (repo / ".grove").exists()
    port = _free_port()
    proc, err = up_process("--port", str(port))
    _until(lambda: "dashboard on" in err.text() or proc.poll() is not None, "dashboard up")
    assert proc.poll() is None, err.text()
    assert (repo / ".grove" / "grove.db").exists()  # initialised by `up` itself
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert page.status_code == 200 and "grove" in page.text.lower()

    # Another process spawns; up's worker runs it.
    spawned = run_cli("spawn", "file-writer", "first", cwd=repo)
    assert spawned.returncode == 0, spawned.stderr
    first = spawned.stdout.strip()
    with Grove.open(repo) as grove:
        _until(lambda: grove.get(first).status is AgentStatus.COMPLETED, "first agent completes")
        # A second one is in flight when SIGTERM comes: the short grace returns it to pending,
        # its attempt not counted.
        second = run_cli("spawn", "file-writer", "second", cwd=repo).stdout.strip()
        _until(lambda: grove.get(second).status is AgentStatus.EXECUTING, "second agent claimed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, err.text()
        err.join()
        in_flight = grove.get(second)
        assert in_flight.status is AgentStatus.PENDING, err.text()
        assert in_flight.attempt == 0 and in_flight.lease_owner is None
        assert grove.store.count_by_status().get(AgentStatus.EXECUTING, 0) == 0
    # Started in order, stopped in reverse order.
    steps = [
        "database ready",
        "grove up: worker ",
        "dashboard on",
        "SIGTERM: shutting down",
        "dashboard stopped",
        "worker: no new claims; 1 agent in flight gets",
        "worker stopped",
        "grove up: stopped",
    ]
    positions = [err.index(step) for step in steps]
    assert positions == sorted(positions), err.text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_up_refuses_a_taken_port_before_starting_anything(repo: Path) -> None:
    (repo / "grove.toml").write_text(SLOW_AGENTS.format(delay=0, grace=0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--no-shell", "--port", str(port), cwd=repo, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert not (repo / ".grove").exists()  # refused before the database was made


def test_up_without_a_terminal_asks_for_no_shell(repo: Path) -> None:
    result = run_cli("up", "--no-dashboard", cwd=repo, timeout=60)
    assert result.returncode == 2 and "--no-shell" in result.stderr


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = Tmux(f"grove-up-{os.getpid()}-{tmp_path.name}")
    try:
        yield session
    finally:
        session.kill()


def test_tmux_up_spawns_from_its_shell_and_ls_shows_the_agent_completed(
    repo: Path, tmux: Tmux
) -> None:
    (repo / "grove.toml").write_text(SLOW_AGENTS.format(delay=0.5, grace=5))
    port = _free_port()
    tmux.start([sys.executable, "-m", "agentgrove", "up", "--port", str(port)], repo)
    tmux.wait_for(lambda s: prompt_is_back(s) and "dashboard on" in s and " executing " in s)
    tmux.type("spawn file-writer 'write up.txt'")
    tmux.send("Enter")
    screen = tmux.wait_for(lambda s: AGENT_ID.search(s) is not None and prompt_is_back(s))
    agent_id = AGENT_ID.findall(screen)[0]
    tmux.type(f"wait {agent_id}")
    tmux.send("Enter")
    tmux.wait_for(f"{agent_id} completed")
    tmux.type("ls")
    tmux.send("Enter")
    # C-d only while the prompt reads the terminal: sent during the command, the
    # terminal is in cooked mode and the line discipline swallows it as an EOF
    tmux.wait_for(
        lambda s: (
            re.search(rf"{agent_id}\s+file-writer\s+completed", s) is not None and prompt_is_back(s)
        )
    )
    tmux.send("C-d")
    screen = tmux.wait_for("exited 0")
    for step in ("left the shell: shutting down", "dashboard stopped", "worker stopped"):
        assert step in screen
