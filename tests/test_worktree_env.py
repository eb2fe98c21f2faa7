"""``[workspace]``: ignored files copied into worktrees, setup, host-wide port blocks, and the
variables every agent command gets — through the real ``grove`` CLI on the scripted runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentgrove.worktree_env import NoFreePorts, agent_env, copy_files, hold_ports
from tests.conftest import git, run_cli, wait_until

WORKSPACE_TOML = """
[runtime]
kind = "scripted"

[workspace]
{body}
"""


def _configure(repo: Path, body: str) -> None:
    init = run_cli("init", cwd=repo)
    assert init.returncode == 0, init.stderr
    (repo / "grove.toml").write_text(WORKSPACE_TOML.format(body=textwrap.dedent(body)))
    (repo / ".gitignore").write_text(".grove/\n.env\nids.txt\n")
    git(repo, "add", ".gitignore", "grove.toml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "config")


def _run(repo: Path, *extra: str) -> dict[str, Any]:
    """``grove run`` an implementer; its ``grove show --json`` record."""
    proc = run_cli("run", "implementer", "work", "--json", *extra, cwd=repo, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    agent_id = json.loads(proc.stdout)["id"]
    shown = run_cli("show", agent_id, "--json", cwd=repo)
    assert shown.returncode == 0, shown.stderr
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


def _worktree(record: dict[str, Any]) -> Path:
    return Path(record["workspace"]["path"])


def test_an_ignored_env_file_is_copied_into_the_agents_worktree(repo: Path) -> None:
    _configure(repo, 'copy = [".env", "missing.txt"]')
    (repo / ".env").write_text("API_URL=http://localhost\n")
    (repo / ".env").chmod(0o640)
    record = _run(repo)
    assert record["status"] == "completed", record
    copied = _worktree(record) / ".env"
    assert copied.read_text() == "API_URL=http://localhost\n"
    assert copied.stat().st_mode & 0o777 == 0o640
    events = run_cli("logs", record["id"], cwd=repo).stdout
    assert "missing.txt does not exist" in events


def test_a_failing_setup_fails_the_agent_setup_failed_and_keeps_the_worktree(
    repo: Path,
) -> None:
    _configure(repo, "setup = \"echo 'npm ci: lockfile out of date'; exit 3\"")
    record = _run(repo)
    assert record["status"] == "failed"
    assert record["error_kind"] == "setup_failed"
    assert "exit code 3" in record["error"]
    assert "npm ci: lockfile out of date" in record["error"]
    assert _worktree(record).is_dir()


def test_setup_runs_once_in_the_worktree_with_the_port_base_the_check_sees_too(
    repo: Path,
) -> None:
    _configure(repo, "setup = 'echo \"$GROVE_PORT_BASE $GROVE_PORT_COUNT\" >> ids.txt'")
    # The check runs after the agent: it sees what setup made and gets the same block.
    check = 'test "$(cat ids.txt)" = "$GROVE_PORT_BASE $GROVE_PORT_COUNT"'
    record = _run(repo, "--check", check)
    assert record["status"] == "completed", record
    port_base, count = (_worktree(record) / "ids.txt").read_text().split()
    assert 20000 <= int(port_base) <= 65535 and count == "10"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", ".git/config"])
def test_a_copy_path_leaving_the_repository_is_refused_with_exit_2(repo: Path, bad: str) -> None:
    _configure(repo, f"copy = [{bad!r}]")
    proc = run_cli("spawn", "implementer", "work", cwd=repo)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "copy" in proc.stderr and "Traceback" not in proc.stderr
    assert run_cli("ls", "--json", cwd=repo).stdout.strip() in ("", "[]")


def test_copy_never_reads_through_a_symlink_out_of_the_repository(tmp_path: Path) -> None:
    root, tree = tmp_path / "root", tmp_path / "tree"
    root.mkdir()
    tree.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("outside\n")
    (root / ".env").symlink_to(secret)
    (tree / "conf").symlink_to(tmp_path)  # a committed symlink folder out of the worktree
    (root / "conf").mkdir()
    (root / "conf" / "local.ini").write_text("x\n")
    warnings = copy_files(root, tree, [".env", "conf/local.ini"])
    assert not (tree / ".env").exists()
    assert not (tmp_path / "local.ini").exists()
    assert len(warnings) == 2 and "outside" in warnings[0] and "leaves the worktree" in warnings[1]


def test_copy_keeps_a_file_the_worktree_already_has(tmp_path: Path) -> None:
    root, tree = tmp_path / "root", tmp_path / "tree"
    root.mkdir()
    tree.mkdir()
    (root / ".env").write_text("fresh\n")
    (tree / ".env").write_text("edited by the agent\n")
    assert copy_files(root, tree, [".env"]) == []
    assert (tree / ".env").read_text() == "edited by the agent\n"


def test_two_holders_get_different_port_blocks_and_a_released_block_is_reused(
    tmp_path: Path,
) -> None:
    with (
        hold_ports(5, 30000, folder=tmp_path) as first,
        hold_ports(5, 30000, folder=tmp_path) as second,
    ):
        assert first.base != second.base
        assert {first.base, second.base} <= {30000, 30005, 30010}
        assert agent_env("a1", first) == {
            "GROVE_AGENT_ID": "a1",
            "GROVE_PORT_BASE": str(first.base),
            "GROVE_PORT_COUNT": "5",
        }
    with hold_ports(5, 30000, folder=tmp_path) as again:
        assert again.base == first.base
    with pytest.raises(NoFreePorts), hold_ports(10, 65530, folder=tmp_path):
        pass


HOLDER = """
import sys
from pathlib import Path
from agentgrove.worktree_env import hold_ports
with hold_ports(4, 31000, folder=Path(sys.argv[1])) as block:
    print(block.base, flush=True)
    sys.stdin.read()
"""


def test_a_block_held_by_another_process_is_not_handed_out(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = int(holder.stdout.readline())
        with hold_ports(4, 31000, folder=tmp_path) as mine:
            assert mine.base != held
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    wait_until(lambda: holder.poll() is not None)
    with hold_ports(4, 31000, folder=tmp_path) as freed:
        assert freed.base == held


def test_timeout_s_counts_from_the_claim_setup_included(repo: Path) -> None:
    # A 3 s role whose worktree setup takes 2 s: its run gets what is left (about 1 s), so a
    # run that needs 2.5 s times out. Counted from the CLI's start it had 3 s and completed.
    _configure(
        repo,
        """
        setup = "sleep 2"

        [roles.implementer]
        timeout_s = 3
        """,
    )
    text = (
        (repo / "grove.toml")
        .read_text()
        .replace('kind = "scripted"', 'kind = "scripted"\nscripted_delay_s = 2.5')
    )
    (repo / "grove.toml").write_text(text)
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qam", "timeout")
    record = _run(repo)
    assert record["status"] == "failed", record
    assert record["error_kind"] == "timeout", record
    assert record["error"] == "timed out after 3 s (from its claim)", record


def test_the_port_folder_ignores_a_hostile_or_missing_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # XDG_RUNTIME_DIR open to everyone, its agentgrove-ports too: another user's locks would
    # take our blocks. Every process of the user, with the variable or without, meets in the
    # same private folder.
    from agentgrove.worktree_env import ports_dir

    hostile = tmp_path / "runtime"
    (hostile / "agentgrove-ports").mkdir(parents=True)
    os.chmod(hostile, 0o777)
    os.chmod(hostile / "agentgrove-ports", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(hostile))
    with_it = ports_dir()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert with_it == ports_dir() == Path("/tmp") / f"agentgrove-ports-{os.getuid()}"
    assert with_it.lstat().st_uid == os.getuid() and with_it.lstat().st_mode & 0o077 == 0
