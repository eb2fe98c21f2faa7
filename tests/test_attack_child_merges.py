"""Attacks on the child-merge path (issue 10 item 1): a hostile child or parent controls its
branch, its worktree and what it leaves in them. Each test reproduces one attack against the
merge code; scripted runtime, real git, the SQLite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentgrove.gitexec import GitError, registered_worktree
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, ErrorKind
from agentgrove.runtime import RunResult, RunSpec
from agentgrove.workspaces import Workspaces
from tests.test_child_merges import behaviour, files_on, git, ok, show


def has_markers(text: str) -> bool:
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines())


def run_refused_for_markers(repo: Path, plan: Any) -> AgentRecord:
    """Run the planner ``plan``: it must fail ``merge_conflict`` with no conflict marker on
    its branch."""
    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    committed = {p: show(repo, branch, p) for p in files_on(repo, branch)}
    assert not any(has_markers(t) for t in committed.values()), committed
    assert record.error_kind is ErrorKind.MERGE_CONFLICT, record.error
    return record


def run_completed(repo: Path, plan: Any) -> tuple[AgentRecord, str]:
    """Run the planner ``plan``: it must complete; its record and branch."""
    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert record.status is AgentStatus.COMPLETED, record.error
    assert record.workspace is not None and record.workspace.branch is not None
    return record, record.workspace.branch


def test_a_marker_size_that_arrives_with_the_conflict_does_not_hide_the_markers(
    repo: Path,
) -> None:
    """The conflicting child also brings `.gitattributes` with conflict-marker-size=3: git
    writes its markers at the size the parent's worktree had (7), and the attributes read at
    commit time (3) must not let the parent commit them."""

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", "write f.txt=one\\n"),
            await spec.delegate.spawn_agent(
                "implementer", "write .gitattributes=* conflict-marker-size=3\\n;f.txt=two\\n"
            ),
        ]
        await spec.delegate.wait_agents(ids, timeout_s=60)
        assert "<<<<<<< HEAD" in (spec.cwd / "f.txt").read_text()
        return ok()

    run_refused_for_markers(repo, plan)


def test_a_conflicted_file_renamed_away_keeps_its_markers_out_of_the_commit(repo: Path) -> None:
    """The parent moves the conflicted file, markers and all, to another name: git's list of
    conflicted paths names the old one, which no longer exists."""

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", "write conf.txt=one\\n"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=two\\n"),
        ]
        await spec.delegate.wait_agents(ids, timeout_s=60)
        (spec.cwd / "conf.txt").rename(spec.cwd / "moved.txt")
        return ok()

    record = run_refused_for_markers(repo, plan)
    assert "moved.txt" in (record.error or "")


def test_a_resolved_file_with_a_heading_underline_concludes_the_merge(repo: Path) -> None:
    """A Markdown heading of seven letters is underlined with seven '=': a resolution that
    keeps it is not a conflict marker, and the parent is not wedged in the merge."""
    readme = "Install\\n=======\\n"

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", f"write doc.md={readme}one\\n"),
            await spec.delegate.spawn_agent("implementer", f"write doc.md={readme}two\\n"),
        ]
        entries = await spec.delegate.wait_agents(ids, timeout_s=60)
        assert [e["merge"]["result"] for e in entries] == ["merged", "conflicted"]
        (spec.cwd / "doc.md").write_text("Install\n=======\none and two\n")
        return ok()

    _, branch = run_completed(repo, plan)
    assert show(repo, branch, "doc.md") == "Install\n=======\none and two\n"


def test_merge_child_never_merges_onto_a_branch_the_head_was_pointed_at(
    repo: Path, tmp_path: Path
) -> None:
    """An unconfined parent points its worktree's HEAD (git's record, in the main .git) at the
    user's branch: merging a child there would move the user's branch. Refused, nothing
    moves."""
    workspaces = Workspaces(repo, tmp_path / "worktrees", repo)
    user_branch = git(repo, "symbolic-ref", "--short", "HEAD").strip()
    user_tip = git(repo, "rev-parse", "HEAD").strip()
    parent = workspaces.create("parent01", None)
    child = workspaces.create("child001", None)
    (Path(child.worktree_path) / "c.txt").write_text("child\n")
    child = workspaces.commit(child, "child work", {})
    assert child.head_commit is not None
    admin = registered_worktree(repo, Path(parent.worktree_path))
    assert admin is not None
    git(repo, f"--git-dir={admin}", "symbolic-ref", "HEAD", f"refs/heads/{user_branch}")
    with pytest.raises(GitError, match="own branch"):
        workspaces.merge_child(parent, child.head_commit, "grove: merge child")
    assert git(repo, "rev-parse", user_branch).strip() == user_tip
    assert "c.txt" not in files_on(repo, user_branch)


def test_a_huge_conflicted_file_without_newlines_is_read_in_bounded_memory(
    repo: Path, tmp_path: Path
) -> None:
    """The parent replaces a conflicted file with a sparse file of 1 GiB and no newline: the
    marker check must not read it into memory as one line (run in a child process whose
    address space is capped well below 1 GiB)."""
    script = f"""
import resource, subprocess, sys
from pathlib import Path
from typing import Any
from agentgrove.workspaces import Workspaces
repo = Path({str(repo)!r})
ws = Workspaces(repo, Path({str(tmp_path / "wt")!r}), repo)
def git(*a):
    subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
a = ws.create("childaaa", None); (Path(a.worktree_path) / "f.txt").write_text("one\\n")
a = ws.commit(a, "a", {{}})
b = ws.create("childbbb", None); (Path(b.worktree_path) / "f.txt").write_text("two\\n")
b = ws.commit(b, "b", {{}})
p = ws.create("parentpp", None)
ws.merge_child(p, a.head_commit, "m1")
assert ws.merge_child(p, b.head_commit, "m2").conflicted == ("f.txt",)
huge = Path(p.worktree_path) / "f.txt"
with huge.open("wb") as f:
    f.truncate(1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
try:
    ws.commit(p, "conclude", {{}})
except MemoryError:
    sys.exit(3)
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_marker_text_a_child_brought_cleanly_does_not_wedge_a_later_resolution(
    repo: Path,
) -> None:
    """A first child brings doc.md holding `<<<<<<< HEAD` as text (no conflict); the next two
    conflict on conf.txt. The parent resolves conf.txt and edits doc.md too: the text it keeps
    there is not a marker of this merge, and the merge concludes."""
    text = "<<<<<<< HEAD\\nhow a conflict looks\\n"

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", f"write doc.md={text}"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=one\\n"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=two\\n"),
        ]
        entries = await spec.delegate.wait_agents(ids, timeout_s=60)
        assert [e["merge"]["result"] for e in entries] == ["merged", "merged", "conflicted"]
        (spec.cwd / "conf.txt").write_text("one and two\n")
        with (spec.cwd / "doc.md").open("a") as doc:
            doc.write("edited by the parent\n")
        return ok()

    _, branch = run_completed(repo, plan)
    assert show(repo, branch, "conf.txt") == "one and two\n"


def test_a_merge_never_writes_through_a_link_the_parent_left_in_its_worktree(
    repo: Path, tmp_path: Path
) -> None:
    """The parent leaves an ignored (so uncommitted) link `d` to a directory outside; the
    child brings `d/evil.txt`. Grove's merge, outside any sandbox, replaces the link and
    writes nothing outside the worktree (git's own guard; kept as a promise)."""
    outside = tmp_path / "outside"
    outside.mkdir()

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        child = await spec.delegate.spawn_agent("implementer", "write d/evil.txt=evil\\n")
        (spec.cwd / ".gitignore").write_text("d\n")
        (spec.cwd / "d").symlink_to(outside)
        [entry] = await spec.delegate.wait_agents([child], timeout_s=60)
        assert entry["merge"]["result"] == "merged", entry
        return ok()

    _, branch = run_completed(repo, plan)
    assert list(outside.iterdir()) == []
    assert show(repo, branch, "d/evil.txt") == "evil\n"


def test_a_child_branch_the_user_moved_merges_the_childs_recorded_work_only(
    repo: Path, tmp_path: Path
) -> None:
    """After the child completes, someone points its branch at other work (the user's
    secret commit): grove merges the head commit it recorded for the child, never whatever
    the branch names now."""
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "secret.txt").write_text("the user's\n")
    git(repo, "add", "secret.txt")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "secret")
    secret = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", base)
    seen: dict[str, Any] = {}

    async def plan_moved(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", "write conf.txt=one\\n"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=two\\n"),
            await spec.delegate.spawn_agent("implementer", "write c.txt=child\\n"),
        ]
        # The conflict keeps the third child completed and not merged yet.
        entries = await spec.delegate.wait_agents(ids, timeout_s=60)
        assert [e["merge"]["result"] for e in entries] == ["merged", "conflicted", "not merged"]
        git(repo, "update-ref", f"refs/heads/grove/{ids[2]}", secret)
        (spec.cwd / "conf.txt").write_text("one and two\n")
        seen["entry"] = await spec.delegate.merge_agent(ids[2])
        return ok()

    _, branch = run_completed(repo, plan_moved)
    assert seen["entry"]["merge"] == {"result": "merged", "files": ["c.txt"]}
    assert "secret.txt" not in files_on(repo, branch)
    assert show(repo, branch, "c.txt") == "child\n"


def test_conflicted_files_replaced_by_links_to_marked_files_outside_are_not_followed(
    repo: Path, tmp_path: Path
) -> None:
    """The parent copies the marked conflicted files outside its worktree, then replaces
    `conf.txt` with a link to one copy and the directory `sub` with a link to the other's
    directory. Grove's marker check (outside any sandbox) follows neither link: the links are
    the resolution, committed as links, and nothing outside is read as the worktree's or
    changed (kept as a promise). A repository the parent nested meanwhile is no file to read
    either (it was: the check crashed on it, wedging the merge)."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent("implementer", "write conf.txt=1\\n;sub/deep.txt=1\\n"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=2\\n;sub/deep.txt=2\\n"),
        ]
        entries = await spec.delegate.wait_agents(ids, timeout_s=60)
        assert entries[1]["merge"]["paths"] == ["conf.txt", "sub/deep.txt"]
        for name in ("conf.txt", "sub/deep.txt"):
            (outside / name).write_bytes((spec.cwd / name).read_bytes())
        (spec.cwd / "conf.txt").unlink()
        (spec.cwd / "conf.txt").symlink_to(outside / "conf.txt")
        (spec.cwd / "sub" / "deep.txt").unlink()
        (spec.cwd / "sub").rmdir()
        (spec.cwd / "sub").symlink_to(outside / "sub")
        # A repository nested in the worktree is listed as a directory: not a file to read.
        git(spec.cwd, "init", "-q", "nested")
        return ok()

    _, branch = run_completed(repo, plan)
    copies = {p.name: p.read_text() for p in (outside / "conf.txt", outside / "sub" / "deep.txt")}
    assert all(has_markers(text) for text in copies.values())
    listed = git(repo, "ls-tree", branch, "conf.txt", "sub").split()
    assert listed.count("120000") == 2, listed  # both committed as links
