"""Several machines share one database: a clone of another repository pointed at it is refused
before any claim, and an agent whose base no clone can find fails cleanly, with nothing half
made. Real git, the real ``grove`` CLI, SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentgrove.clone_check import judge_clone
from agentgrove.errors import BadRef
from agentgrove.workspaces import Workspaces, init_repo
from tests import test_remotes
from tests.conftest import git, run_cli, write_scripted_config
from tests.test_remotes import _commit, _env

machines = test_remotes.machines  # the two-machine fixture (a bare remote, clones a and b)

A_SHA, B_SHA, C_SHA = "a" * 40, "b" * 40, "c" * 40


def test_judge_clone() -> None:
    bases = [(A_SHA, "agent 1"), (B_SHA, "run 2")]
    assert judge_clone(bases, frozenset({A_SHA, B_SHA})).foreign is None
    partly = judge_clone(bases, frozenset({B_SHA}))
    assert partly.foreign is None and partly.missing == ((A_SHA, "agent 1"),)
    assert judge_clone(bases, frozenset({C_SHA})).foreign == (A_SHA, "agent 1")
    assert judge_clone([], frozenset()).foreign is None  # nothing to judge by
    assert judge_clone([("main", "agent 3")], frozenset()).foreign is None  # not a commit id


def _foreign_clone(tmp_path: Path) -> Path:
    """A clone of another repository (its own bare remote), its grove on the shared database."""
    seed = tmp_path / "other-seed"
    init_repo(seed, {"OTHER.md": "another project\n"})
    bare = tmp_path / "other.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(bare), str(other)], check=True)
    write_scripted_config(other, delay_s=0, lease_s=10)
    with (other / "grove.toml").open("a") as f:
        f.write('\n[git]\nremote = "origin"\npush_retry_s = 5\n')
    init = run_cli("init", cwd=other, env=_env(tmp_path, "other"))
    assert init.returncode == 0, init.stderr
    return other


def test_a_clone_of_another_repository_is_refused_before_any_claim(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, _ = machines
    spawned = run_cli("spawn", "tester", "look", cwd=a, env=_env(tmp_path, "a"))
    assert spawned.returncode == 0, spawned.stderr
    agent_id = spawned.stdout.strip()
    base = git(a, "rev-parse", "HEAD")
    other = _foreign_clone(tmp_path)
    result = run_cli("worker", "--drain", cwd=other, env=_env(tmp_path, "other"))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert base[:12] in line and f"agent {agent_id}" in line and str(other) in line, line
    assert "another repository" in line and "git clone" in line, line
    shown = run_cli("show", agent_id, "--json", cwd=a, env=_env(tmp_path, "a"))
    record = json.loads(shown.stdout)
    assert record["status"] == "pending" and record["attempt"] == 0, record  # never claimed
    assert not (tmp_path / "home-other" / "worktrees").exists() or not any(
        (tmp_path / "home-other" / "worktrees").iterdir()
    )
    # A clone of the same repository starts and runs it.
    _, _, b = machines
    worked = run_cli("worker", "--drain", cwd=b, env=_env(tmp_path, "b"))
    assert worked.returncode == 0, worked.stderr
    record = json.loads(run_cli("show", agent_id, "--json", cwd=a, env=_env(tmp_path, "a")).stdout)
    assert record["status"] == "completed", record


def test_a_base_no_clone_can_find_fails_its_agent_with_nothing_half_made(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """B can find the first agent's base (on the remote) but not the second's (a commit A
    never pushed): B starts, says so, runs the first, and fails the second naming the commit,
    leaving no worktree and no branch for it."""
    _, a, b = machines
    env_a, env_b = _env(tmp_path, "a"), _env(tmp_path, "b")
    good = run_cli("spawn", "tester", "look", cwd=a, env=env_a).stdout.strip()
    unpushed = _commit(a, "only-on-a.txt")
    spawned = run_cli("spawn", "tester", "look", "--base", unpushed, cwd=a, env=env_a)
    assert spawned.returncode == 0, spawned.stderr
    stray = spawned.stdout.strip()
    worked = run_cli("worker", "--drain", cwd=b, env=env_b)
    assert worked.returncode == 0, worked.stderr
    assert f"agent {stray}'s base {unpushed[:12]}" in worked.stderr, worked.stderr
    records = {
        i: json.loads(run_cli("show", i, "--json", cwd=a, env=env_a).stdout) for i in (good, stray)
    }
    assert records[good]["status"] == "completed", records[good]
    failed = records[stray]
    assert failed["status"] == "failed", failed
    assert unpushed[:12] in failed["error"] and "nor on remote 'origin'" in failed["error"], failed
    assert failed["workspace"] is None, failed
    assert not list((tmp_path / "home-b").rglob(stray))  # no worktree, nothing half made
    assert git(b, "branch", "--list", f"grove/{stray}") == ""


def test_a_merge_commit_no_clone_has_is_not_taken_for_a_conflict(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, b = machines
    base = git(b, "rev-parse", "HEAD")
    unpushed = _commit(a, "dep.txt")
    on_b = Workspaces(b, tmp_path / "wb", b, remote="origin", push_retry_s=5)
    with pytest.raises(BadRef, match=f"merge commit {unpushed[:12]} is neither in"):
        on_b.create("agent9", base, (unpushed,))
    assert not (tmp_path / "wb" / "agent9").exists()
    assert git(b, "branch", "--list", "grove/agent9") == ""
    assert "agent9" not in git(b, "worktree", "list")
