"""A run's result branch ``grove/run/<id>``, ``grove workflow merge``, and what ``grove merge``
says it merged. Logic on the scripted runtime in real git repositories; two tests drive the
real ``grove`` CLI over a grove the scripted runtime filled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from agentgrove.cleanup import collect
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, RunRecord, RunStatus, WorkspaceRecord
from agentgrove.run_branches import with_result
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.workspaces import (
    CheckoutMerge,
    MergeConflict,
    Workspaces,
    checkout_merge_message,
    merge_branch_into_checkout,
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


# -- the run branch ---------------------------------------------------------------------------

FORK = """
name: fork
nodes:
  - {key: a, role: implementer, task: "write a1.txt a2.txt"}
  - {key: b, role: implementer, task: "write b.txt", depends_on: [a]}
  - {key: c, role: implementer, task: "write c.txt", depends_on: [a]}
"""

CLASH = """
name: clash
nodes:
  - {key: left, role: implementer, task: "write shared.txt left.txt"}
  - {key: right, role: implementer, task: "write shared.txt right.txt"}
"""


def writes_named_files(spec: RunSpec) -> RunResult:
    """``write F1 F2 ...``: each file, holding its name and the agent's id (so two agents
    writing the same name conflict)."""
    words = spec.prompt.split()
    for name in words[1 : words.index("---") if "---" in words else None]:
        (spec.cwd / name).write_text(f"{name} by {spec.agent_id}\n")
    return RunResult(success=True, output=f"wrote {' '.join(words[1:])}")


def _node(run: RunRecord, key: str) -> AgentRecord:
    agent = next(n for n in run.nodes if n.key == key).agent
    assert agent is not None and agent.workspace is not None
    return agent


def _files(repo: Path, ref: str) -> set[str]:
    return set(_git(repo, "ls-tree", "-r", "--name-only", ref).splitlines())


def _run_branches(repo: Path) -> list[str]:
    return _git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/grove/run/").split()


def test_a_two_sink_run_gets_a_branch_merging_both_sinks(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        run = grove.run_workflow(FORK)
        assert run.status is RunStatus.COMPLETED
        branch = f"grove/run/{run.id}"
        # Made by the worker's hook right after the run completed, before anyone read it.
        assert _run_branches(repo) == [branch]
        assert _files(repo, branch) == {"README.md", "a1.txt", "a2.txt", "b.txt", "c.txt"}
        parents = _git(repo, "rev-list", "--parents", "-n", "1", branch).split()[1:]
        b, c = _node(run, "b").workspace, _node(run, "c").workspace
        assert b is not None and c is not None
        assert parents == [b.head_commit, c.head_commit]

        record, made = with_result(grove.service.workspaces.repo, grove.workflows.get(run.id))
        assert made.branch == branch and made.sinks == ("b", "c")
        assert record.to_json()["result_branch"] == branch
        assert record.to_json()["result_commit"] == _git(repo, "rev-parse", branch)

        # Brought home: every file the merge brought in is named.
        merged = merge_branch_into_checkout(repo, branch)
        assert merged.files == ("a1.txt", "a2.txt", "b.txt", "c.txt")
        assert merge_branch_into_checkout(repo, branch).already_merged


def test_one_sink_points_the_branch_at_its_result_and_three_sinks_merge_all(repo: Path) -> None:
    three = FORK + '  - {key: d, role: implementer, task: "write d.txt", depends_on: [a]}\n'
    chain = """
name: chain
nodes:
  - {key: a, role: implementer, task: "write a1.txt"}
  - {key: z, role: implementer, task: "write z.txt", depends_on: [a]}
"""
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        one = grove.run_workflow(chain)
        many = grove.run_workflow(three)
    z = _node(one, "z").workspace
    assert z is not None
    assert _git(repo, "rev-parse", f"grove/run/{one.id}") == z.head_commit
    merged = f"grove/run/{many.id}"
    assert {"b.txt", "c.txt", "d.txt", "a1.txt"} <= _files(repo, merged)
    parents = _git(repo, "rev-list", "--parents", "-n", "1", merged).split()[1:]
    sinks = [_node(many, k).workspace for k in ("b", "c", "d")]
    assert parents == [ws.head_commit for ws in sinks if ws is not None]


def test_conflicting_sinks_get_no_branch_and_the_paths_are_named(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        run = grove.run_workflow(CLASH)
        assert run.status is RunStatus.COMPLETED
        record, made = with_result(repo, grove.workflows.get(run.id))
    assert _run_branches(repo) == []
    assert made.branch is None and made.conflicts == ("shared.txt",)
    assert "left, right conflict in: shared.txt" in (made.problem or "")
    assert record.result_branch is None and record.to_json()["result_commit"] is None


def test_a_branch_lost_after_the_run_completed_is_made_again_where_it_is_read(
    repo: Path,
) -> None:
    """A crash between the run's completing transaction and the branch (here: the branch
    deleted afterwards) loses nothing: reading the run makes it again, the same merge."""
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        run = grove.run_workflow(FORK)
        branch = f"grove/run/{run.id}"
        before = _git(repo, "show", "-s", "--format=%T %P", branch)
        _git(repo, "branch", "-D", branch)
        _, made = with_result(repo, grove.workflows.get(run.id))
        assert made.branch == branch
        assert _git(repo, "show", "-s", "--format=%T %P", branch) == before
        # Made again while it exists: the same commit, nothing moved.
        tip = _git(repo, "rev-parse", branch)
        assert with_result(repo, grove.workflows.get(run.id))[1].commit == tip


def test_a_rerun_moves_the_branch_but_never_over_someone_elses_commit(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        run = grove.run_workflow(FORK)
        branch = f"grove/run/{run.id}"
        old = _git(repo, "rev-parse", branch)
        grove.workflows.rerun(run.id, "c")
        anyio.run(grove.execute_run_async, run.id)
        new = _git(repo, "rev-parse", branch)
        assert new != old  # the new c's result replaced grove's old merge
        c = _node(grove.workflows.get(run.id), "c").workspace
        assert c is not None and c.head_commit in _git(repo, "rev-list", "--parents", "-n1", new)

        # Someone's own commit on the branch is left alone, and reading says so.
        _git(repo, "checkout", "-q", branch)
        (repo / "mine.txt").write_text("mine\n")
        _git(repo, "add", "mine.txt")
        _git(repo, "commit", "-qm", "my work on the run branch")
        mine = _git(repo, "rev-parse", "HEAD")
        _git(repo, "checkout", "-q", "main")
        grove.workflows.rerun(run.id, "c")
        anyio.run(grove.execute_run_async, run.id)
        _, made = with_result(repo, grove.workflows.get(run.id))
    assert _git(repo, "rev-parse", branch) == mine
    assert made.branch is None and "does not hold this run's result" in (made.problem or "")


def test_bad_input_for_the_run_branch_is_one_clear_reason(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        pending = grove.start_workflow(FORK)
        _, made = with_result(repo, grove.workflows.get(pending.id))
    assert made.branch is None
    assert made.problem == f"run {pending.id} is running, not completed"
    assert _run_branches(repo) == []


def test_gc_keeps_run_branches_unless_forced_and_never_takes_one_for_an_agents(
    repo: Path,
) -> None:
    """``grove/*`` matches ``grove/run/<id>``: gc used to look the branch up as agent
    ``run/<id>`` and call it a branch no agent of this grove owns."""
    with Grove.init(repo, runtime=ScriptedRuntime(writes_named_files)) as grove:
        run = grove.run_workflow(FORK)
        running = grove.start_workflow(FORK)  # never executed: still running
        branch = f"grove/run/{run.id}"
        _git(repo, "branch", f"grove/run/{running.id}", "main")  # as a rerun leaves one
        _git(repo, "branch", "grove/run/0123456789ab", "main")  # no run of this grove
        workspaces = grove.service.workspaces

        kept = collect(grove.store, workspaces, finished_worktrees=True)
        assert kept.run_branches == sorted([branch, f"grove/run/{running.id}"])
        assert kept.foreign_branches == ["grove/run/0123456789ab"]
        assert not kept.deleted_run_branches
        assert "kept 2 result branch(es) of workflow runs" in "\n".join(kept.lines())
        assert set(_run_branches(repo)) == {
            branch,
            f"grove/run/{running.id}",
            "grove/run/0123456789ab",
        }

        dry = collect(grove.store, workspaces, finished_worktrees=True, force=True, dry_run=True)
        assert dry.deleted_run_branches == [branch] and len(_run_branches(repo)) == 3

        forced = collect(grove.store, workspaces, finished_worktrees=True, force=True)
        assert forced.deleted_run_branches == [branch]
        assert set(_run_branches(repo)) == {f"grove/run/{running.id}", "grove/run/0123456789ab"}
        # Not lost while git has the sinks' commits: reading the run makes it again.
        assert with_result(repo, grove.workflows.get(run.id))[1].branch == branch


def test_an_agent_never_adopts_a_run_branch(repo: Path, workspaces: Workspaces) -> None:
    """Agents' branches are ``grove/<12 hex>``; a run branch is no agent's."""
    _git(repo, "branch", "grove/run/0123456789ab", "main")
    ws = workspaces.create("0123456789ab", None)
    assert ws.branch == "grove/0123456789ab"
    assert _git(repo, "rev-parse", "grove/run/0123456789ab") == _git(repo, "rev-parse", "main")
