"""Git run by grove over an agent's content runs nothing the agent planted (THREATS.md, 3).

Each vector plants, directly on disk, what an agent's Bash could write into its worktree: a
nested repository with ``core.fsmonitor``, a rewritten ``.git`` file pointing git at a git
directory of the agent's, hooks, filters, textconv and external diff drivers. Every planted
program writes a marker file outside the worktree; grove's commit, diff and merge must leave no
marker. Against grove before its git was hardened, every vector left its marker.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentgrove.runtime.claude import sandbox_available
from agentgrove.testing import ModelRequest, ModelServer, Script, bash, say
from agentgrove.workspaces import Workspaces, run_git
from tests.conftest import run_cli


def _plain_git(*args: str, cwd: Path) -> str:
    """The test's own git (the attacker's tool), not grove's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _script(path: Path, marker: Path) -> str:
    """An executable that leaves ``marker`` (with its arguments) when anything runs it; its
    path. It echoes stdin back, so it also works as a filter or textconv."""
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\ncat 2>/dev/null\nexit 0\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def _agent_gitdir(worktree: Path, config: str) -> Path:
    """A git directory of the agent's own, inside its worktree, with ``config`` appended."""
    evil = worktree / ".evil"
    _plain_git("init", "--quiet", str(evil), cwd=worktree)
    _append(evil / ".git" / "config", config)
    return evil / ".git"


def _repoint_dotgit(worktree: Path, config: str) -> Path:
    """Rewrite the worktree's ``.git`` file (it lies in the agent's worktree) to the agent's
    own git directory."""
    gitdir = _agent_gitdir(worktree, config)
    (worktree / ".git").write_text(f"gitdir: {gitdir}\n")
    return gitdir


def nested_repo_fsmonitor(worktree: Path, script: str) -> None:
    nested = worktree / "vendor" / "lib"
    nested.mkdir(parents=True)
    _plain_git("init", "--quiet", cwd=nested)
    (nested / "x").write_text("x\n")
    _plain_git("add", "x", cwd=nested)
    _plain_git("commit", "--quiet", "-m", "x", cwd=nested)
    _append(nested / ".git" / "config", f"[core]\n\tfsmonitor = {script}\n")
    (nested / "x").write_text("dirty\n")


def nested_dotgit_file_fsmonitor(worktree: Path, script: str) -> None:
    """A subdirectory whose ``.git`` *file* points at a git directory elsewhere."""
    gitdir = _agent_gitdir(worktree, "")
    evil = gitdir.parent
    (evil / "x").write_text("x\n")
    _plain_git("add", "x", cwd=evil)
    _plain_git("commit", "--quiet", "-m", "x", cwd=evil)
    _append(gitdir / "config", f"[core]\n\tfsmonitor = {script}\n")
    sub = worktree / "sub"
    sub.mkdir()
    (sub / ".git").write_text(f"gitdir: {gitdir}\n")
    (sub / "x").write_text("changed\n")


def dotgit_fsmonitor(worktree: Path, script: str) -> None:
    _repoint_dotgit(worktree, f"[core]\n\tfsmonitor = {script}\n")


def dotgit_hooks_path(worktree: Path, script: str) -> None:
    hooks = worktree / ".hooks"
    hooks.mkdir()
    for name in ("pre-commit", "commit-msg", "post-commit", "post-index-change"):
        _script(hooks / name, Path(script).with_suffix(".marker"))
    _repoint_dotgit(worktree, f"[core]\n\thooksPath = {hooks}\n")


def dotgit_hooks_dir(worktree: Path, script: str) -> None:
    gitdir = _repoint_dotgit(worktree, "")
    for name in ("pre-commit", "commit-msg", "post-commit", "post-index-change"):
        _script(gitdir / "hooks" / name, Path(script).with_suffix(".marker"))


def dotgit_clean_filter(worktree: Path, script: str) -> None:
    _repoint_dotgit(worktree, f'[filter "x"]\n\tclean = {script}\n\tsmudge = {script}\n')
    (worktree / ".gitattributes").write_text("* filter=x\n")
    (worktree / "data.txt").write_text("data\n")


def dotgit_process_filter(worktree: Path, script: str) -> None:
    _repoint_dotgit(worktree, f'[filter "x"]\n\tprocess = {script}\n\trequired = true\n')
    (worktree / ".gitattributes").write_text("* filter=x\n")
    (worktree / "data.txt").write_text("data\n")


def dotgit_textconv(worktree: Path, script: str) -> None:
    _repoint_dotgit(worktree, f'[diff "x"]\n\ttextconv = {script}\n\tcommand = {script}\n')
    (worktree / ".gitattributes").write_text("* diff=x\n")
    (worktree / "README.md").write_text("changed\n")


def dotgit_include(worktree: Path, script: str) -> None:
    """The config the ``.git`` file leads to includes another file of the agent's."""
    extra = worktree / ".extra-config"
    extra.write_text(f"[core]\n\tfsmonitor = {script}\n")
    _repoint_dotgit(worktree, f"[include]\n\tpath = {extra}\n")


VECTORS: dict[str, Callable[[Path, str], None]] = {
    f.__name__: f
    for f in (
        nested_repo_fsmonitor,
        nested_dotgit_file_fsmonitor,
        dotgit_fsmonitor,
        dotgit_hooks_path,
        dotgit_hooks_dir,
        dotgit_clean_filter,
        dotgit_process_filter,
        dotgit_textconv,
        dotgit_include,
    )
}


def _recording(turns: list[Any]) -> tuple[list[Any], list[str]]:
    """``turns`` as script steps that collect each tool result, then a closing ``say``."""
    seen: list[str] = []

    def after(turn: Any) -> Any:
        def step(request: ModelRequest) -> Any:
            seen.extend(request.tool_results)
            return turn

        return step

    return [turns[0], *map(after, [*turns[1:], say("done")])], seen


def _markers(outside: Path) -> list[str]:
    return sorted(p.name for p in outside.iterdir() if p.suffix == ".marker")


@pytest.fixture
def workspaces(repo: Path, tmp_path: Path) -> Workspaces:
    return Workspaces(repo, tmp_path / "worktrees", repo)


@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_grove_git_runs_nothing_planted_in_the_worktree(
    vector: str, repo: Path, workspaces: Workspaces, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws = workspaces.create("a1", None)
    worktree = Path(ws.worktree_path)
    script = _script(outside / "payload", outside / "ran.marker")
    VECTORS[vector](worktree, script)
    (worktree / "work.txt").write_text("the agent's work\n")

    try:
        done = workspaces.commit(ws, "grove: a1", {"Grove-Agent": "a1"})
        workspaces.diff(done)
        head = workspaces.merge_into_checkout(done).head
        workspaces.remove(done)
    finally:  # a planted program that ran is the failure, whatever grove did next
        ran = _markers(outside)
        assert ran == [], [(outside / name).read_text() for name in ran]
    # The agent's work landed on grove's branch, in the main repository, and was merged.
    assert "work.txt" in done.files_changed
    assert done.head_commit == run_git(["rev-parse", "grove/a1"], repo)
    assert head == run_git(["rev-parse", "HEAD"], repo)
    assert (repo / "work.txt").read_text() == "the agent's work\n"


def test_a_rewritten_dotgit_file_cannot_choose_the_recorded_head(
    repo: Path, workspaces: Workspaces, tmp_path: Path
) -> None:
    """With the worktree's ``.git`` pointing at the agent's repository, grove used to commit
    into that repository and record its head: a commit grove never made."""
    ws = workspaces.create("a1", None)
    worktree = Path(ws.worktree_path)
    gitdir = _repoint_dotgit(worktree, "")
    forged = gitdir.parent / "forged.txt"
    forged.write_text("forged\n")
    _plain_git("add", "forged.txt", cwd=gitdir.parent)
    _plain_git("commit", "--quiet", "-m", "forged", cwd=gitdir.parent)
    (worktree / "work.txt").write_text("work\n")
    done = workspaces.commit(ws, "grove: a1", {})
    assert done.head_commit == run_git(["rev-parse", "grove/a1"], repo)
    assert "work.txt" in done.files_changed


def test_nested_repositories_are_not_committed_and_the_result_says_so(
    repo: Path, workspaces: Workspaces
) -> None:
    ws = workspaces.create("a1", None)
    worktree = Path(ws.worktree_path)
    nested = worktree / "vendor"
    nested.mkdir()
    _plain_git("init", "--quiet", cwd=nested)
    (nested / "x").write_text("x\n")
    _plain_git("add", "x", cwd=nested)
    _plain_git("commit", "--quiet", "-m", "x", cwd=nested)
    (worktree / "work.txt").write_text("work\n")
    done = workspaces.commit(ws, "grove: a1", {})
    tree = run_git(["ls-tree", "-r", "--format=%(objectmode) %(path)", "grove/a1"], repo)
    assert "160000" not in tree, tree
    assert done.files_changed == ("work.txt",)
    assert "vendor" in (done.diffstat or "") and "nested git repositor" in (done.diffstat or "")


def test_hooks_of_the_main_repository_do_not_run_for_grove(
    repo: Path, workspaces: Workspaces, tmp_path: Path
) -> None:
    """Grove's own git (worktree add, commit, merges) runs no hook, not even one in the main
    ``.git`` (an unconfined agent could have planted it there)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    hooks = repo / ".git" / "hooks"
    for name in (
        "post-checkout",
        "post-commit",
        "post-merge",
        "pre-merge-commit",
        "reference-transaction",
    ):
        _script(hooks / name, outside / f"{name}.marker")
    ws = workspaces.create("a1", None)
    (Path(ws.worktree_path) / "work.txt").write_text("work\n")
    done = workspaces.commit(ws, "grove: a1", {})
    workspaces.merge_into_checkout(done)
    assert _markers(outside) == []


def test_the_workers_git_environment_does_not_steer_grove(
    repo: Path, workspaces: Workspaces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    script = _script(outside / "payload", outside / "env.marker")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.fsmonitor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", script)
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", script)
    ws = workspaces.create("a1", None)
    (Path(ws.worktree_path) / "work.txt").write_text("work\n")
    done = workspaces.commit(ws, "grove: a1", {})
    workspaces.diff(done)
    assert _markers(outside) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    "sandbox",
    [
        "off",
        pytest.param(
            "auto",
            marks=pytest.mark.skipif(not sandbox_available(), reason="needs bubblewrap and socat"),
        ),
    ],
)
def test_an_agent_planting_a_nested_fsmonitor_repo_gets_nothing_run(
    sandbox: str, repo: Path, tmp_path: Path
) -> None:
    """The attack as it happened: the real CLI agent's Bash creates a nested repository whose
    ``core.fsmonitor`` is its script; grove then commits. In the sandbox too: it confines the
    agent's Bash, not the git grove runs afterwards (and it keeps the worktree's ``.git`` file
    read-only, so that way in is for unsandboxed agents)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = outside / "fsmonitor.marker"
    plant = (
        "mkdir -p lib && cd lib && git init -q && echo x > x && git add x && "
        "git -c user.name=a -c user.email=a@a commit -qm x && "
        f"printf '#!/bin/sh\\necho ran >> {marker}\\n' > ../.payload && chmod +x ../.payload && "
        'git config core.fsmonitor "$PWD/../.payload" && echo dirty > x && cd .. && '
    )
    if sandbox != "off":  # the other way in (tests above): the sandbox keeps .git read-only
        plant += '{ echo "gitdir: $PWD/lib/.git" > .git || echo dotgit-read-only; } && '
    plant += "echo planted"
    (repo / "grove.toml").write_text(f'[runtime]\nsandbox = "{sandbox}"\n')
    steps, seen = _recording([bash(plant)])
    script = Script().on(role="implementer", turns=steps)
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "implementer", "plant it", "--json", cwd=repo, env=server.env())
        server.assert_done()
    assert "planted" in seen[0], seen
    # The sandbox keeps the worktree's .git file read-only; nested repositories it allows.
    assert ("dotgit-read-only" in seen[0]) == (sandbox != "off"), seen
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    worktree = Path(agent["workspace"]["path"])
    assert (worktree / "lib" / ".git" / "config").exists()
    assert not marker.exists(), marker.read_text()
    assert ".payload" in agent["workspace"]["files_changed"]


def test_an_agent_deleting_its_dotgit_file_still_gets_its_work_committed(
    repo: Path, workspaces: Workspaces
) -> None:
    """Grove does not need the worktree's ``.git`` file, and another agent's ``worktree
    prune`` does not forget the worktree once it is gone."""
    ws = workspaces.create("a1", None)
    worktree = Path(ws.worktree_path)
    (worktree / ".git").unlink()
    (worktree / "work.txt").write_text("work\n")
    workspaces.create("a2", None)  # prunes
    done = workspaces.commit(ws, "grove: a1", {})
    assert done.files_changed == ("work.txt",)
    workspaces.remove(done)
    assert not worktree.exists()
    assert "a1" not in run_git(["worktree", "list"], repo)
