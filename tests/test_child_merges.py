"""Children's work flows back to the parent (wait_agents, merge_agent, the end of the run):
scripted runtime, real git, the SQLite store; pure decisions at the end. The real CLI and SDK
are in tests/test_child_merges_e2e.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentgrove.child_merges import BLOCKED, holds_markers
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, ErrorKind
from agentgrove.runtime import DelegationRefused, RunResult, RunSpec, ScriptedRuntime
from agentgrove.worker import Worker


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def files_on(repo: Path, branch: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", "-z", branch).split("\0")) - {""}


def show(repo: Path, branch: str, path: str) -> str:
    return git(repo, "show", f"{branch}:{path}")


def parents(repo: Path, commit: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]


def ok(output: str = "done") -> RunResult:
    return RunResult(success=True, output=output, tokens_in=1, tokens_out=1, cost_usd=0.0001)


def child_writes(spec: RunSpec) -> RunResult | None:
    """A child's behaviour: its task is ``write NAME=CONTENT[;NAME=CONTENT...]``."""
    if not spec.prompt.startswith("write "):
        return None
    for item in spec.prompt.removeprefix("write ").split(";"):
        name, content = item.split("=", 1)
        target = spec.cwd / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.replace("\\n", "\n"))
    return ok(f"wrote {spec.prompt}")


def behaviour(parent: Any) -> ScriptedRuntime:
    """Children write files as their task says; the parent (the planner) runs ``parent``."""

    async def behave(spec: RunSpec) -> RunResult:
        written = child_writes(spec)
        if written is not None:
            return written
        result: RunResult = await parent(spec)
        return result

    return ScriptedRuntime(behave)


def merges(entries: list[dict[str, Any]]) -> list[str]:
    return [e["merge"]["result"] for e in entries]


def test_wait_merges_completed_children_in_spawn_order_and_a_dependent_sees_them(
    repo: Path,
) -> None:
    seen: dict[str, Any] = {}

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        (spec.cwd / "PLAN.md").write_text("the plan\n")
        a = await spec.delegate.spawn_agent("implementer", "write a.py=A")
        b = await spec.delegate.spawn_agent("implementer", "write pkg/b.py=B")
        # Named out of order: merged (and listed) in spawn order.
        seen["first"] = await spec.delegate.wait_agents([b, a], timeout_s=60)
        seen["on_disk"] = sorted(p.name for p in spec.cwd.rglob("*.py"))
        seen["again"] = await spec.delegate.wait_agents([a], timeout_s=60)
        seen["ids"] = [a, b]
        return ok()

    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        parent = grove.run("planner", "plan and fan out")
        record = grove.get(parent.id)
    assert record.status is AgentStatus.COMPLETED, record.error
    a, b = seen["ids"]
    assert [e["id"] for e in seen["first"]] == [a, b]
    assert merges(seen["first"]) == ["merged", "merged"]
    assert seen["first"][0]["merge"]["files"] == ["a.py"]
    assert seen["first"][1]["merge"]["files"] == ["pkg/b.py"]
    assert seen["on_disk"] == ["a.py", "b.py"]
    assert merges(seen["again"]) == ["already merged"]
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    assert {"PLAN.md", "a.py", "pkg/b.py"} <= files_on(repo, branch)
    assert {"PLAN.md", "a.py", "pkg/b.py"} <= set(record.workspace.files_changed)
    assert record.workspace.head_commit == git(repo, "rev-parse", branch).strip()


def test_workflow_dependent_starts_with_the_children_files(repo: Path) -> None:
    seen: dict[str, bool] = {}

    async def behave(spec: RunSpec) -> RunResult:
        written = child_writes(spec)
        if written is not None:
            return written
        assert spec.delegate is not None
        if spec.role.name == "planner":
            ids = [
                await spec.delegate.spawn_agent("implementer", f"write s{i}.py={i}") for i in (1, 2)
            ]
            await spec.delegate.wait_agents(ids, timeout_s=60)
            return ok("planned")
        seen[spec.role.name] = (spec.cwd / "s1.py").exists() and (spec.cwd / "s2.py").exists()
        return ok()

    spec = {
        "name": "fan",
        "nodes": [
            {"key": "plan", "role": "planner", "task": "plan"},
            {"key": "build", "role": "tester", "task": "test", "depends_on": ["plan"]},
        ],
    }
    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        run = grove.run_workflow(spec)
    assert run.status.value == "completed"
    assert seen == {"tester": True}


def conflicting_parent(seen: dict[str, Any], resolve: bool) -> Any:
    """Three children: the first and second write different conf.txt, the third another file.
    The parent waits for all: the second conflicts, the third waits for the resolution."""

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        (spec.cwd / "mine.txt").write_text("the parent's own work\n")
        ids = [
            await spec.delegate.spawn_agent("implementer", "write conf.txt=one\\n"),
            await spec.delegate.spawn_agent("implementer", "write conf.txt=two\\n"),
            await spec.delegate.spawn_agent("implementer", "write other.txt=three\\n"),
        ]
        seen["ids"] = ids
        seen["wait"] = await spec.delegate.wait_agents(ids, timeout_s=60)
        seen["marked"] = (spec.cwd / "conf.txt").read_text()
        try:
            await spec.delegate.spawn_agent("implementer", "write x=y")
        except DelegationRefused as exc:
            seen["spawn_refused"] = str(exc)
        seen["early"] = await spec.delegate.merge_agent(ids[2])
        (spec.cwd / "later.txt").write_text("work after the conflict\n")
        if resolve:
            (spec.cwd / "conf.txt").write_text("one and two\n")
            seen["after"] = await spec.delegate.merge_agent(ids[2])
        return ok()

    return plan


def test_conflict_left_in_progress_then_resolved_by_the_parent(repo: Path) -> None:
    seen: dict[str, Any] = {}
    with Grove.init(repo, runtime=behaviour(conflicting_parent(seen, resolve=True))) as grove:
        parent = grove.run("planner", "plan")
        record = grove.get(parent.id)
    assert record.status is AgentStatus.COMPLETED, record.error
    _, second, third = seen["wait"]
    assert merges(seen["wait"]) == ["merged", "conflicted", "not merged"]
    assert second["merge"]["paths"] == ["conf.txt"]
    assert third["merge"]["detail"] == BLOCKED
    assert "<<<<<<< " in seen["marked"] and ">>>>>>> " in seen["marked"]
    assert "conf.txt" in seen["spawn_refused"]
    assert seen["early"]["merge"]["detail"] == BLOCKED
    assert seen["after"]["merge"]["result"] == "merged"
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    assert show(repo, branch, "conf.txt") == "one and two\n"
    assert {"mine.txt", "other.txt", "later.txt"} <= files_on(repo, branch)
    # The conflicted merge was concluded by a commit with both parents: the second child's
    # head is one of them.
    second_head = grove_head(repo, seen["ids"][1])
    merge_commits = git(repo, "rev-list", "--merges", branch).split()
    assert any(second_head in parents(repo, c) for c in merge_commits)


def grove_head(repo: Path, agent_id: str) -> str:
    return git(repo, "rev-parse", f"grove/{agent_id}").strip()


def test_parent_that_leaves_markers_fails_merge_conflict_and_keeps_its_work(repo: Path) -> None:
    seen: dict[str, Any] = {}
    with Grove.init(repo, runtime=behaviour(conflicting_parent(seen, resolve=False))) as grove:
        parent = grove.run("planner", "plan")
        record = grove.get(parent.id)
    assert record.status is AgentStatus.FAILED
    assert record.error_kind is ErrorKind.MERGE_CONFLICT
    assert "conf.txt" in (record.error or "")
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    # Nothing with markers was committed; the work before the merge is on the branch, the
    # work after it in the worktree.
    assert "conf.txt" not in files_on(repo, branch) or "<<<<" not in show(repo, branch, "conf.txt")
    assert "mine.txt" in files_on(repo, branch)
    worktree = Path(record.workspace.worktree_path)
    assert (worktree / "later.txt").read_text() == "work after the conflict\n"
    assert "<<<<<<< " in (worktree / "conf.txt").read_text()


def test_parent_that_never_waits_gets_completed_children_merged_running_ones_not(
    repo: Path,
) -> None:
    ids: dict[str, str] = {}

    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.prompt.startswith("slow"):
            # Finishes only once its parent has finished: still running at the parent's end.
            parent_id = ids["parent"]
            store = spec.delegate.service.store  # type: ignore[attr-defined]
            while not store.get_agent(parent_id).status.finished:
                await anyio.sleep(0.02)
            (spec.cwd / "slow.txt").write_text("late\n")
            return ok()
        written = child_writes(spec)
        if written is not None:
            return written
        ids["parent"] = spec.agent_id
        ids["fast"] = await spec.delegate.spawn_agent("implementer", "write fast.txt=fast")
        ids["slow"] = await spec.delegate.spawn_agent("implementer", "slow child")
        while (await spec.delegate.agent_result(ids["fast"]))["status"] != "completed":
            await anyio.sleep(0.02)
        return ok()

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        parent = grove.spawn("planner", "fan out, never wait")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=3).run)
        record = grove.get(parent.id)
        slow = grove.get(ids["slow"])
        events = [
            e for e in grove.store.events(agent_id=parent.id) if e.kind == "agent.children_merged"
        ]
    assert record.status is AgentStatus.COMPLETED, record.error
    assert slow.status is AgentStatus.COMPLETED
    assert record.workspace is not None and record.workspace.branch is not None
    on_branch = files_on(repo, record.workspace.branch)
    assert "fast.txt" in on_branch and "slow.txt" not in on_branch
    assert events and events[-1].data["children"][0]["result"] == "merged"


def test_parent_that_never_waits_and_whose_children_conflict_fails_merge_conflict(
    repo: Path,
) -> None:
    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        (spec.cwd / "mine.txt").write_text("mine\n")
        ids = [
            await spec.delegate.spawn_agent("implementer", "write c.txt=one"),
            await spec.delegate.spawn_agent("implementer", "write c.txt=two"),
        ]
        for i in ids:
            while (await spec.delegate.agent_result(i))["status"] != "completed":
                await anyio.sleep(0.02)
        return ok()

    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        parent = grove.spawn("planner", "fan out, never wait")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=3).run)
        record = grove.get(parent.id)
    assert record.error_kind is ErrorKind.MERGE_CONFLICT, record.error
    assert "c.txt" in (record.error or "")
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    # The first child merged, the conflicting one undone; the parent's own work is kept.
    assert show(repo, branch, "c.txt") == "one"
    assert "mine.txt" in files_on(repo, branch)
    worktree = record.workspace.worktree_path
    assert not (Path(worktree) / "c.txt").read_text().startswith("<<<<")


def test_only_direct_children_can_be_waited_for_or_merged(repo: Path) -> None:
    refusals: list[str] = []
    ids: dict[str, str] = {}

    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.prompt == "nest":
            ids["grandchild"] = await spec.delegate.spawn_agent("file-writer", "write g.txt=g")
            await spec.delegate.wait_agents([ids["grandchild"]], timeout_s=60)
            return ok()
        written = child_writes(spec)
        if written is not None:
            return written
        if spec.prompt == "other tree":
            return ok()
        child = await spec.delegate.spawn_agent("implementer", "nest")
        await spec.delegate.wait_agents([child], timeout_s=60)
        for call in (
            lambda: spec.delegate.merge_agent(ids["stranger"]),  # type: ignore[union-attr]
            lambda: spec.delegate.merge_agent(ids["grandchild"]),  # type: ignore[union-attr]
            lambda: spec.delegate.wait_agents([child, ids["stranger"]], 5),  # type: ignore[union-attr]
            lambda: spec.delegate.merge_agent("no-such-agent"),  # type: ignore[union-attr]
        ):
            try:
                await call()
                refusals.append("accepted")
            except DelegationRefused as exc:
                refusals.append(str(exc))
        return ok()

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        stranger = grove.spawn("implementer", "write stolen.txt=s")
        ids["stranger"] = stranger.id
        parent = grove.spawn("planner", "plan")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=2).run)
        record = grove.get(parent.id)
        assert grove.get(stranger.id).status is AgentStatus.COMPLETED
    assert record.status is AgentStatus.COMPLETED, record.error
    assert len(refusals) == 4 and "accepted" not in refusals
    assert f"{stranger.id} is not your child" in refusals[0]
    assert "is not your child" in refusals[1] and "is not your child" in refusals[2]
    assert record.workspace is not None and record.workspace.branch is not None
    on_branch = files_on(repo, record.workspace.branch)
    assert "stolen.txt" not in on_branch
    assert "g.txt" in on_branch  # the grandchild's work came up through its own parent


def test_hostile_child_branch_is_merged_without_running_anything(
    repo: Path, tmp_path: Path
) -> None:
    """One child plants a .gitattributes selecting filter, merge and diff drivers and a file
    named like an option; another brings a plain file. The parent points its worktree's .git
    file at a git directory of its own (a clone sharing the objects, at the parent's head)
    whose config defines those drivers. Merging both runs none of them: grove never lets git
    discover the repository from the worktree."""
    pwned = tmp_path / "pwned"
    run_me = tmp_path / "run-me"
    run_me.write_text(f"#!/bin/sh\necho ran >> {pwned}\ncat\n")
    run_me.chmod(0o755)
    drivers = (
        f'[filter "evil"]\n\tclean = {run_me}\n\tsmudge = {run_me}\n'
        f'[merge "evil"]\n\tdriver = {run_me}\n[diff "evil"]\n\ttextconv = {run_me}\n'
    )
    evil = tmp_path / "evil"
    seen: dict[str, Any] = {}

    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.prompt == "plant":
            (spec.cwd / ".gitattributes").write_text("* filter=evil merge=evil diff=evil\n")
            (spec.cwd / "--output=x").write_text("option-like name\n")
            return ok()
        if spec.prompt == "bring":
            (spec.cwd / "data.txt").write_text("plain data\n")
            return ok()
        ids = [
            await spec.delegate.spawn_agent("implementer", "plant"),
            await spec.delegate.spawn_agent("implementer", "bring"),
        ]
        head = git(repo, "rev-parse", f"grove/{spec.agent_id}").strip()
        git(tmp_path, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(evil))
        git(evil, "update-ref", "--no-deref", "HEAD", head)
        git(evil, "read-tree", head)
        with (evil / ".git" / "config").open("a") as config:
            config.write(drivers)
        (spec.cwd / ".git").write_text(f"gitdir: {evil / '.git'}\n")
        seen["wait"] = await spec.delegate.wait_agents(ids, timeout_s=60)
        return ok()

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        parent = grove.run("planner", "take the hostile children's work")
        record = grove.get(parent.id)
    assert not pwned.exists(), pwned.read_text()
    assert merges(seen["wait"]) == ["merged", "merged"]
    assert record.status is AgentStatus.COMPLETED, record.error
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    assert {"--output=x", ".gitattributes", "data.txt"} <= files_on(repo, branch)
    assert not (repo / "x").exists() and not (Path.cwd() / "x").exists()


def test_markers_at_a_hostile_marker_size_are_still_refused(repo: Path) -> None:
    """The child's .gitattributes sets conflict-marker-size=12: the markers git writes are 12
    long, and the parent who leaves them still fails."""

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        ids = [
            await spec.delegate.spawn_agent(
                "implementer", "write .gitattributes=* conflict-marker-size=12\\n;f.txt=one\\n"
            ),
            await spec.delegate.spawn_agent("implementer", "write f.txt=two\\n"),
        ]
        await spec.delegate.wait_agents(ids, timeout_s=60)
        assert "<" * 12 + " " in (spec.cwd / "f.txt").read_text()
        return ok()

    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert record.error_kind is ErrorKind.MERGE_CONFLICT, record.error
    assert "f.txt" in (record.error or "")


def test_marker_like_text_a_child_brings_without_a_conflict_is_merged(repo: Path) -> None:
    text = "<<<<<<< HEAD\nnot a conflict\n=======\nstill not\n>>>>>>> theirs\n"

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        child = await spec.delegate.spawn_agent(
            "implementer", "write doc.md=" + text.replace("\n", "\\n")
        )
        [entry] = await spec.delegate.wait_agents([child], timeout_s=60)
        return ok(json.dumps(entry))

    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert record.status is AgentStatus.COMPLETED, record.error
    assert json.loads(record.output or "{}")["merge"]["files"] == ["doc.md"]
    assert record.workspace is not None and record.workspace.branch is not None
    assert show(repo, record.workspace.branch, "doc.md") == text


THEIRS = "1234abcd" * 5


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"a\n", b"<<<<<<< HEAD\n", b"b\n"], True),
        ([f">>>>>>> {THEIRS}\r\n".encode()], True),
        ([b"<<<<<<<<<<<< HEAD:old/name.py\n"], True),  # any marker size, a renamed path
        ([f">>> {THEIRS}:f.txt".encode()], True),
        ([b"=======\n", b"||||||| base\n"], False),  # a heading underline is not a marker
        ([b">>>>>>> 0000000000000000000000000000000000000000\n"], False),  # another merge's
        ([b"<<<<<<<x HEAD\n", b" <<<<<<< HEAD\n", b"<<<<<<< HEADS\n"], False),
    ],
)
def test_marker_lines(lines: list[bytes], expected: bool) -> None:
    assert holds_markers(lines, THEIRS) is expected


def test_outside_conflicted_files_only_the_closing_label_is_a_marker() -> None:
    assert not holds_markers([b"<<<<<<< HEAD\n"], THEIRS, conflicted=False)
    assert holds_markers([f">>>>>>> {THEIRS}\n".encode()], THEIRS, conflicted=False)


def test_children_not_completed_are_reported_not_merged(repo: Path) -> None:
    """A child that failed and one still running when the wait times out: each entry says
    not completed with its status (and error); nothing of theirs reaches the parent."""
    seen: dict[str, Any] = {}
    release = anyio.Event()

    async def behave(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.prompt == "fail":
            (spec.cwd / "failed.txt").write_text("x\n")
            return RunResult(success=False, error="it broke", error_kind=ErrorKind.PERMANENT)
        if spec.prompt == "hang":
            await release.wait()
            return ok()
        failing = await spec.delegate.spawn_agent("implementer", "fail")
        hanging = await spec.delegate.spawn_agent("implementer", "hang")
        await spec.delegate.wait_agents([failing], timeout_s=60)
        seen["wait"] = await spec.delegate.wait_agents([failing, hanging], timeout_s=0.2)
        release.set()
        return ok()

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        parent = grove.spawn("planner", "plan")
        anyio.run(Worker(grove.service, grove.config.worker, drain=True, concurrency=3).run)
        record = grove.get(parent.id)
    failed, running = seen["wait"]
    assert merges(seen["wait"]) == ["not completed", "not completed"]
    assert failed["merge"]["detail"] == "status failed: it broke"
    assert running["merge"]["detail"] == "status executing"
    assert record.workspace is not None and record.workspace.branch is not None
    assert "failed.txt" not in files_on(repo, record.workspace.branch)


def test_a_transient_failure_keeps_the_conflict_for_the_retry_to_resolve(repo: Path) -> None:
    """The first attempt meets a conflict and then fails transiently (model_error): it is not
    turned into merge_conflict; the retry finds the merge still in progress and resolves it."""
    (repo / "grove.toml").write_text("[worker]\nretry_base_s = 0\n")
    seen: dict[str, Any] = {}

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        if spec.attempt == 1:
            ids = [
                await spec.delegate.spawn_agent("implementer", "write r.txt=one\\n"),
                await spec.delegate.spawn_agent("implementer", "write r.txt=two\\n"),
            ]
            seen["wait"] = await spec.delegate.wait_agents(ids, timeout_s=60)
            return RunResult(success=False, error="overloaded", error_kind=ErrorKind.MODEL_ERROR)
        seen["retry_saw"] = (spec.cwd / "r.txt").read_text()
        (spec.cwd / "r.txt").write_text("both\n")
        return ok()

    with Grove.init(repo, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert merges(seen["wait"]) == ["merged", "conflicted"]
    assert record.status is AgentStatus.COMPLETED, record.error
    assert record.attempt == 2
    assert "<<<<<<< " in seen["retry_saw"]
    assert record.workspace is not None and record.workspace.branch is not None
    branch = record.workspace.branch
    assert show(repo, branch, "r.txt") == "both\n"
    assert len(parents(repo, git(repo, "rev-parse", branch).strip())) == 2


def test_outside_git_children_share_the_directory_and_nothing_is_merged(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    seen: dict[str, Any] = {}

    async def plan(spec: RunSpec) -> RunResult:
        assert spec.delegate is not None
        child = await spec.delegate.spawn_agent("implementer", "write shared.txt=x")
        seen["wait"] = await spec.delegate.wait_agents([child], timeout_s=60)
        seen["there"] = (spec.cwd / "shared.txt").exists()
        return ok()

    with Grove.init(plain, runtime=behaviour(plan)) as grove:
        record = grove.get(grove.run("planner", "plan").id)
    assert record.status is AgentStatus.COMPLETED, record.error
    assert merges(seen["wait"]) == ["not merged"]
    assert "share one directory" in seen["wait"][0]["merge"]["detail"]
    assert seen["there"]
