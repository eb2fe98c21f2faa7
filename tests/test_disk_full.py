"""A full disk is one clear error, and an agent caught by it ends with what it really spent.

The report: a full disk during ``grove run``/``spawn`` gave tracebacks and left the agent
``executing`` until a sweep charged it its whole reservation. Reproduced on a real full file
system: a small tmpfs (needs root to mount; skipped otherwise) holding the grove home."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentgrove.grove import Grove
from agentgrove.logs import configure
from agentgrove.models import AgentStatus
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker
from tests.conftest import run_cli

FULL = "no space left on device writing"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the file that did it."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def test_spawn_on_a_full_disk_is_one_line_and_writes_nothing(
    repo: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"GROVE_HOME": str(small_disk / "grove")}
    assert run_cli("init", cwd=repo, env=env).returncode == 0
    filler = _fill(small_disk)
    spawned = run_cli("spawn", "tester", "do it", cwd=repo, env=env)
    assert spawned.returncode == 2
    lines = spawned.stderr.strip().splitlines()
    assert len(lines) == 1 and FULL in lines[0] and "free space and retry" in lines[0]
    assert str(small_disk / "grove" / "grove.db") in lines[0]
    filler.unlink()
    listed = run_cli("ls", "--json", cwd=repo, env=env)
    assert listed.returncode == 0 and "do it" not in listed.stdout  # nothing half-written


def test_an_agent_that_fills_the_disk_ends_with_what_it_spent(
    repo: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's own work fills the disk that holds the database and the worktrees: its
    # transcript, commit and ending cannot be written. The worker must not die (it did, with
    # "database or disk is full" out of its loop), must say so in one line, and once space is
    # freed write the ending with the real spend (not the whole reservation a sweep charges).
    monkeypatch.setenv("GROVE_HOME", str(small_disk / "grove"))
    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.5\n")
    big: list[Path] = []

    def fill_the_disk(spec: RunSpec) -> RunResult:
        big.append(_fill_file(spec.cwd / "big"))
        return RunResult(success=True, output="filled", cost_usd=0.01)

    said = io.StringIO()
    with Grove.init(repo, runtime=ScriptedRuntime(fill_the_disk)) as grove:
        grove.configure_worker(poll_s=0.05, heartbeat_s=0.2, lease_s=600)
        agent = grove.spawn("tester", "fill the disk", budget_usd=5.0)

        async def main() -> None:
            worker = Worker(grove.service, grove.config.worker, only={agent.id})
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)  # a worker that died raises out of the group
                with anyio.fail_after(60):
                    while FULL not in said.getvalue():
                        await anyio.sleep(0.02)
                big[0].unlink()  # the operator frees space

        # What `grove worker` does: the core's warnings as lines on stderr (else pytest's
        # logging capture would take them).
        configure("text")
        with contextlib.redirect_stderr(said):
            anyio.run(main)
        ended = grove.get(agent.id)
    assert "Traceback" not in said.getvalue()
    assert [line for line in said.getvalue().splitlines() if FULL in line]
    assert ended.status is AgentStatus.COMPLETED
    assert ended.cost_usd == pytest.approx(0.01) and ended.reserved_usd == 0


def _fill_file(path: Path) -> Path:
    with contextlib.suppress(OSError), open(path, "wb") as f:
        while True:
            f.write(b"x" * 65536)
            f.flush()
    return path


def test_a_worktree_on_a_full_disk_fails_the_agent_at_once_at_no_cost(
    repo: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = repo.parent / "home-on-big-disk"
    monkeypatch.setenv("GROVE_HOME", str(home))
    (repo / "grove.toml").write_text("[roles.tester]\nmax_budget_usd = 0.5\n")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        (home / "worktrees").mkdir(exist_ok=True)
        (home / "worktrees").rmdir()
        (home / "worktrees").symlink_to(small_disk)  # worktrees on their own, full, disk
        _fill(small_disk)
        agent = grove.spawn("tester", "needs a worktree", budget_usd=5.0)
        grove.configure_worker(poll_s=0.05, lease_s=600)
        anyio.run(Worker(grove.service, grove.config.worker, only={agent.id}).run)
        ended = grove.get(agent.id)
    assert ended.status is AgentStatus.FAILED
    assert ended.error is not None and "No space left on device" in ended.error
    assert ended.cost_usd == 0 and ended.reserved_usd == 0


if sys.platform != "linux":  # tmpfs
    pytestmark = pytest.mark.skip("needs Linux")
