"""A shared git remote (``[git] remote``): two clones ("machines") of one bare remote, each with
its own grove home, sharing one database; real git, the real ``grove`` CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from pathlib import Path

import pytest

from agentgrove.errors import BadInput
from agentgrove.remotes import PushFailed, fetch_commit, push_branch, push_failure_kind
from agentgrove.workspaces import Workspaces
from tests.conftest import git, run_cli, wait_until, write_scripted_config

_ME = ["-c", "user.name=me", "-c", "user.email=me@example.invalid"]


def _heads(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _commit(clone: Path, name: str) -> str:
    (clone / name).write_text(f"{name}\n")
    git(clone, "add", name)
    git(clone, *_ME, "commit", "-q", "-m", f"add {name}")
    return git(clone, "rev-parse", "HEAD")


@pytest.fixture
def machines(repo: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote holding ``repo``'s main, and two clones of it configured for grove."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
        write_scripted_config(clone, delay_s=0, lease_s=10)
        with (clone / "grove.toml").open("a") as f:
            f.write('\n[git]\nremote = "origin"\npush_retry_s = 5\n')
        init = run_cli("init", cwd=clone, env=_env(tmp_path, name))
        assert init.returncode == 0, init.stderr
        clones.append(clone)
    return bare, clones[0], clones[1]


def _env(tmp_path: Path, machine: str) -> dict[str, str]:
    return {
        "GROVE_HOME": str(tmp_path / f"home-{machine}"),
        "GROVE_DB_URL": os.environ.get("GROVE_DB_URL", f"sqlite:///{tmp_path / 'shared.db'}"),
    }


def test_an_agent_with_a_base_only_the_remote_has_runs_on_the_other_machine(
    database: str, machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Spawned on A with a base B lacks; B's worker fetches it, runs the agent, pushes its
    branch; the recorded head is on the remote (SQLite file and PostgreSQL)."""
    bare, a, b = machines
    before = _heads(bare)
    only_a = _commit(a, "from-a.txt")
    git(a, "push", "-q", "origin", "HEAD:refs/heads/feature")  # the user shares it
    with pytest.raises(subprocess.CalledProcessError):
        git(b, "cat-file", "-e", f"{only_a}^{{commit}}")
    spawned = run_cli("spawn", "tester", "look", "--base", only_a, cwd=a, env=_env(tmp_path, "a"))
    assert spawned.returncode == 0, spawned.stderr
    agent_id = spawned.stdout.strip()
    worked = run_cli("worker", "--drain", cwd=b, env=_env(tmp_path, "b"))
    assert worked.returncode == 0, worked.stderr
    shown = run_cli("show", agent_id, "--json", cwd=a, env=_env(tmp_path, "a"))
    record = json.loads(shown.stdout)
    assert record["status"] == "completed", record
    ws = record["workspace"]
    assert ws["path"].startswith(str(tmp_path / "home-b"))
    assert ws["pushed_commit"] == ws["head_commit"]
    heads = _heads(bare)
    assert heads[f"refs/heads/grove/{agent_id}"] == ws["head_commit"]
    assert git(bare, "merge-base", "--is-ancestor", only_a, ws["head_commit"]) == ""
    # Only grove's branch is new (and the user's own push of feature); main untouched.
    new = set(heads) - set(before) - {"refs/heads/feature", f"refs/heads/grove/{agent_id}"}
    assert new == set()
    assert heads["refs/heads/main"] == before["refs/heads/main"]
    # B fetched into grove's tracking refs, never into its own branches.
    assert git(b, "branch", "--list", "feature") == ""


def test_a_remote_naming_no_remote_is_refused_before_any_claim(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, _ = machines
    env = _env(tmp_path, "a")
    assert run_cli("spawn", "tester", "look", cwd=a, env=env).returncode == 0
    toml = (a / "grove.toml").read_text().replace('remote = "origin"', 'remote = "nosuch"')
    (a / "grove.toml").write_text(toml)
    result = run_cli("worker", "--drain", cwd=a, env=env)
    assert result.returncode == 2, result.stderr
    assert "names no remote of" in result.stderr and "git remote add nosuch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    listed = run_cli("ls", "--json", cwd=a, env=env)
    assert '"pending"' in listed.stdout, listed.stdout  # nothing was claimed


def test_an_unreachable_remote_is_refused(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, a, _ = machines
    gone = tmp_path / "gone.git"
    toml = (a / "grove.toml").read_text().replace('remote = "origin"', f'remote = "{gone}"')
    (a / "grove.toml").write_text(toml)
    result = run_cli("worker", "--drain", cwd=a, env=_env(tmp_path, "a"))
    assert result.returncode == 2, result.stderr
    assert "unreachable" in result.stderr and str(gone) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("! [rejected]        grove/x -> grove/x (non-fast-forward)", "rejected"),
        ("remote: Permission to o/r.git denied to bob.", "rejected"),
        ("! [remote rejected] grove/x -> grove/x (pre-receive hook declined)", "rejected"),
        ("fatal: '/x.git' does not appear to be a git repository", "transient"),
        ("fatal: Could not read from remote repository.", "transient"),
        ("ssh: connect to host h port 22: Connection timed out", "transient"),
        ("error: cannot lock ref 'refs/heads/grove/x': is at 1 but expected 2", "transient"),
        ("fatal: unable to access 'https://h/r.git/': Could not resolve host: h", "transient"),
    ],
)
def test_push_failure_kind(stderr: str, kind: str) -> None:
    assert push_failure_kind(stderr) == kind


def test_only_grove_branches_are_pushed(machines: tuple[Path, Path, Path]) -> None:
    bare, a, _ = machines
    before = _heads(bare)
    _commit(a, "mine.txt")
    for branch in ("main", "feature/grove/x", "-f"):
        with pytest.raises(BadInput):
            push_branch(a, "origin", branch, retry_s=0)
    assert _heads(bare) == before


def test_a_rejected_push_fails_at_once_with_gits_words(machines: tuple[Path, Path, Path]) -> None:
    _, a, b = machines
    git(a, "branch", "grove/x", _commit(a, "one.txt"))
    git(b, "branch", "grove/x", _commit(b, "two.txt"))
    push_branch(a, "origin", "grove/x", retry_s=0)
    with pytest.raises(PushFailed) as raised:
        push_branch(b, "origin", "grove/x", retry_s=60)
    assert raised.value.kind == "rejected" and "rejected" in str(raised.value)


def test_a_push_to_a_remote_away_for_a_while_is_retried_until_it_lands(
    machines: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare, a, b = machines
    tip = _commit(a, "work.txt")
    git(a, "branch", "grove/y", tip)
    away = tmp_path / "away.git"
    bare.rename(away)
    pushed: list[str] = []
    caplog.set_level(logging.WARNING, logger="agentgrove.remotes")
    thread = threading.Thread(
        target=lambda: pushed.append(push_branch(a, "origin", "grove/y", retry_s=60))
    )
    thread.start()
    wait_until(lambda: "retrying" in caplog.text, timeout_s=30)
    away.rename(bare)
    thread.join(timeout=60)
    assert pushed == [tip]
    assert _heads(bare)["refs/heads/grove/y"] == tip
    # And the other machine gets it.
    assert fetch_commit(b, "origin", tip)


def test_a_push_failing_past_the_deadline_raises_transient(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bare, a, _ = machines
    git(a, "branch", "grove/z", _commit(a, "z.txt"))
    bare.rename(tmp_path / "elsewhere.git")
    with pytest.raises(PushFailed) as raised:
        push_branch(a, "origin", "grove/z", retry_s=0.5, backoff_s=0.1)
    assert raised.value.kind == "transient"


def test_a_retry_on_a_machine_without_the_branch_continues_from_the_remote(
    machines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bare, a, b = machines
    base = git(a, "rev-parse", "HEAD")
    on_a = Workspaces(a, tmp_path / "wa", a, remote="origin", push_retry_s=5)
    ws = on_a.create("agent1", base)
    (Path(ws.worktree_path) / "progress.txt").write_text("half done\n")
    ws = on_a.push(on_a.commit(ws, "wip", {"Grove-Agent": "agent1"}))
    assert ws.pushed_commit == ws.head_commit == _heads(bare)["refs/heads/grove/agent1"]
    on_b = Workspaces(b, tmp_path / "wb", b, remote="origin", push_retry_s=5)
    again = on_b.create("agent1", base)
    assert again.head_commit == ws.head_commit
    assert (Path(again.worktree_path) / "progress.txt").read_text() == "half done\n"
    # A branch of that name grove did not make (not the remote's) is still refused.
    git(b, "branch", "grove/agent2", _commit(b, "someone.txt"))
    with pytest.raises(BadInput, match="grove did not create it"):
        on_b.create("agent2", base)
