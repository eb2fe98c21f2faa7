"""A run's result branch ``grove/run/<id>``, ``grove workflow merge``, and what ``grove merge``
says it merged. Logic on the scripted runtime in real git repositories; two tests drive the
real ``grove`` CLI over a grove the scripted runtime filled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentgrove.errors import BadInput
from agentgrove.models import WorkspaceRecord
from agentgrove.workspaces import (
    CheckoutMerge,
    MergeConflict,
    Workspaces,
    checkout_merge_message,
)

_ME = ["-c", "user.name=me", "-c", "user.email=me@example.invalid"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *_ME, *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def workspaces(repo: Path, tmp_path: Path) -> Workspaces:
    return Workspaces(repo, tmp_path / "worktrees", repo)


def _work(
    workspaces: Workspaces, agent_id: str, base: str | None, files: dict[str, str]
) -> WorkspaceRecord:
    ws = workspaces.create(agent_id, base)
    for name, text in files.items():
        (Path(ws.worktree_path) / name).write_text(text)
    return workspaces.commit(ws, f"grove: {agent_id}", {})


# -- grove merge: what a merge brought in, and a branch already merged -----------------------


def test_a_merge_lists_every_file_it_brought_in_and_a_second_one_says_already_merged(
    repo: Path, workspaces: Workspaces
) -> None:
    """A child started from its parent's commit records only its own file, but merging its
    branch brings the parent's two files too: the message used to name one of the three."""
    parent = _work(workspaces, "p1", None, {"a.txt": "a\n", "b.txt": "b\n"})
    child = _work(workspaces, "c1", parent.head_commit, {"c.txt": "c\n"})
    assert child.files_changed == ("c.txt",)

    merged = workspaces.merge_into_checkout(child)
    assert merged == CheckoutMerge(
        head=_git(repo, "rev-parse", "HEAD"),
        already_merged=False,
        files=("a.txt", "b.txt", "c.txt"),
    )
    assert (repo / "a.txt").exists() and (repo / "c.txt").exists()
    assert checkout_merge_message("grove/c1", merged) == (
        f"merged grove/c1 @ {merged.head[:10]}: 3 files: a.txt, b.txt, c.txt"
    )

    head = _git(repo, "rev-parse", "HEAD")
    again = workspaces.merge_into_checkout(child)
    assert again == CheckoutMerge(head=head, already_merged=True, files=())
    assert _git(repo, "rev-parse", "HEAD") == head  # no empty merge commit
    # The parent's branch is in HEAD's history too now.
    assert workspaces.merge_into_checkout(parent).already_merged
    assert "already merged" in checkout_merge_message("grove/p1", again)


def test_a_conflicting_merge_leaves_the_checkout_as_it_was(
    repo: Path, workspaces: Workspaces
) -> None:
    done = _work(workspaces, "a1", None, {"README.md": "the agent's\n"})
    (repo / "README.md").write_text("the user's\n")
    _git(repo, "commit", "-qam", "user edit")
    head = _git(repo, "rev-parse", "HEAD")
    with pytest.raises(MergeConflict, match=r"README\.md"):
        workspaces.merge_into_checkout(done)
    assert _git(repo, "rev-parse", "HEAD") == head
    assert _git(repo, "status", "--porcelain") == ""


def test_a_merge_in_progress_is_refused_and_left_alone(repo: Path, workspaces: Workspaces) -> None:
    done = _work(workspaces, "a1", None, {"x.txt": "x\n"})
    _git(repo, "checkout", "-qb", "side")
    (repo / "README.md").write_text("side\n")
    _git(repo, "commit", "-qam", "side")
    _git(repo, "checkout", "-q", "main")
    (repo / "README.md").write_text("main\n")
    _git(repo, "commit", "-qam", "main")
    subprocess.run(["git", *_ME, "merge", "side"], cwd=repo, capture_output=True, check=False)
    with pytest.raises(BadInput, match="merge in progress"):
        workspaces.merge_into_checkout(done)
    assert (repo / ".git" / "MERGE_HEAD").exists()
