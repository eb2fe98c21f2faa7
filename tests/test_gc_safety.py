"""``grove gc`` deletes only what is grove's and merged; grove never works inside a bare
repository or on a branch it did not create (issue 9, items 7 and 8)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.runtime._scripted import echo
from agentgrove.workspaces import Workspaces, run_git
from tests.conftest import run_cli

_ME = ["-c", "user.name=me", "-c", "user.email=me@example.com"]


def _writes_a_file(spec: RunSpec) -> RunResult:
    (spec.cwd / f"{spec.agent_id}.txt").write_text("work\n")
    return echo(spec)


def _branches(repo: Path) -> set[str]:
    out = run_git(["branch", "--list", "--format=%(refname:short)"], repo)
    return set(out.split())


def test_gc_never_deletes_a_branch_no_agent_owns(repo: Path) -> None:
    """The user's own ``grove/my-feature`` (with work on it) survives ``gc`` and ``gc --force``;
    before, gc took every ``grove/*`` branch without an agent row for stale and deleted it."""
    run_git(["checkout", "-q", "-b", "grove/my-feature"], repo)
    (repo / "mine.txt").write_text("my work\n")
    run_git(["add", "mine.txt"], repo)
    run_git([*_ME, "commit", "-q", "-m", "mine"], repo)
    run_git(["checkout", "-q", "main"], repo)
    mine = run_git(["rev-parse", "grove/my-feature"], repo)
    with Grove.init(repo, runtime=ScriptedRuntime()):
        pass
    for args in (["gc"], ["gc", "--force"]):
        result = run_cli(*args, cwd=repo)
        assert result.returncode == 0, result.stderr
        assert "kept 1 branch(es) no agent of this grove owns" in result.stdout, result.stdout
        assert run_git(["rev-parse", "grove/my-feature"], repo) == mine


def test_gc_deletes_finished_agents_branches_only_when_merged_or_forced(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(_writes_a_file)) as grove:
        merged = grove.run("tester", "merged")
        unmerged = grove.run("tester", "unmerged")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        unchanged = grove.run("tester", "nothing")  # its branch never left its base
    assert run_cli("merge", merged.id, cwd=repo).returncode == 0
    names = {a.id: f"grove/{a.id}" for a in (merged, unmerged, unchanged)}

    dry = run_cli("gc", "--dry-run", cwd=repo)
    assert dry.returncode == 0, dry.stderr
    assert "would remove 3 worktree(s) of finished agents" in dry.stdout, dry.stdout
    assert "would delete 2 merged branch(es)" in dry.stdout
    assert set(names.values()) <= _branches(repo)
    worktrees = repo / ".grove" / "worktrees"
    assert {p.name for p in worktrees.iterdir() if p.is_dir()} == set(names)

    plain = run_cli("gc", cwd=repo)
    assert plain.returncode == 0, plain.stderr
    kept = "kept 1 unmerged branch(es) of finished agents (`grove gc --force` deletes them)"
    assert f"{kept}: {names[unmerged.id]}" in plain.stdout, plain.stdout
    left = _branches(repo)
    assert names[unmerged.id] in left
    assert names[merged.id] not in left and names[unchanged.id] not in left

    forced = run_cli("gc", "--force", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    assert names[unmerged.id] not in _branches(repo)


def test_gc_leaves_a_running_agents_branch_alone(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        pending = grove.spawn("tester", "later")
        ws = grove.service.workspaces.create(pending.id, None)
    result = run_cli("gc", "--force", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert ws.branch in _branches(repo) and Path(ws.worktree_path).is_dir()


def _bare(tmp_path: Path, repo: Path) -> Path:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    return bare


@pytest.mark.parametrize(
    "args", [["init"], ["run", "tester", "hello"], ["spawn", "tester", "hello"]]
)
def test_a_bare_repository_is_refused(args: list[str], repo: Path, tmp_path: Path) -> None:
    """Before, grove took a bare repository for a plain directory and ran the agent in the
    git directory itself (its files overwrote ``HEAD``)."""
    bare = _bare(tmp_path, repo)
    head = (bare / "HEAD").read_bytes()
    before = sorted(p.name for p in bare.iterdir())
    result = run_cli(*args, cwd=bare)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bare" in lines[0], result.stderr
    assert (bare / "HEAD").read_bytes() == head
    assert sorted(p.name for p in bare.iterdir()) == before


def test_the_python_api_refuses_a_bare_repository(repo: Path, tmp_path: Path) -> None:
    bare = _bare(tmp_path, repo)
    for opening in (Grove.init, Grove.open):
        with pytest.raises(BadInput, match="bare"):
            opening(bare)
    with pytest.raises(BadInput, match="bare"):
        Grove.init(bare / "refs")
    assert not (bare / ".grove").exists()


def test_a_branch_grove_did_not_create_is_refused_not_adopted(repo: Path, tmp_path: Path) -> None:
    base = run_git(["rev-parse", "HEAD"], repo)
    (repo / "theirs.txt").write_text("someone's work\n")
    run_git(["add", "theirs.txt"], repo)
    run_git([*_ME, "commit", "-q", "-m", "theirs"], repo)
    theirs = run_git(["rev-parse", "HEAD"], repo)
    run_git(["branch", "grove/a1", theirs], repo)
    workspaces = Workspaces(repo, tmp_path / "worktrees", repo)
    with pytest.raises(BadInput, match="grove/a1 already exists"):
        workspaces.create("a1", base)
    assert run_git(["rev-parse", "grove/a1"], repo) == theirs
    assert not (tmp_path / "worktrees" / "a1").exists()
    # A retry of an agent reuses the worktree and branch grove made for it.
    first = workspaces.create("a2", base)
    (Path(first.worktree_path) / "work.txt").write_text("work\n")
    committed = workspaces.commit(first, "grove: a2", {})
    again = workspaces.create("a2", base)
    assert again.worktree_path == first.worktree_path
    assert again.head_commit == committed.head_commit


def test_gc_in_a_clone_sharing_the_database_touches_nothing_of_the_other_repository(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two repositories (a clone) share one database. Before: ``gc --force`` in the clone
    deleted the clone's checkout of the agent's branch holding the user's own commit, and
    removed the first repository's worktree."""
    monkeypatch.setenv("GROVE_DB_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    with Grove.init(repo, runtime=ScriptedRuntime(_writes_a_file)) as grove:
        agent = grove.run("tester", "work")
    assert agent.workspace is not None
    worktree = Path(agent.workspace.worktree_path)
    branch = f"grove/{agent.id}"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    run_git(["checkout", "-q", "-b", branch, f"origin/{branch}"], clone)
    (clone / "mine.txt").write_text("user work\n")
    run_git(["add", "mine.txt"], clone)
    run_git([*_ME, "commit", "-q", "-m", "user work in the clone"], clone)
    run_git(["checkout", "-q", "main"], clone)
    mine = run_git(["rev-parse", branch], clone)
    assert run_cli("init", cwd=clone).returncode == 0
    result = run_cli("gc", "--force", cwd=clone)
    assert result.returncode == 0, result.stderr
    assert run_git(["rev-parse", branch], clone) == mine
    assert "removed 0 worktree(s) of finished agents" in result.stdout, result.stdout
    assert worktree.is_dir(), "the other repository's worktree is not this gc's"
