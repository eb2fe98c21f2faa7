"""Children's work reaches the parent, end to end: the real `grove` CLI, the real SDK and Claude
CLI against the scripted model server, real git, the real database. The logic's corners are in
tests/test_child_merges.py (scripted runtime)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentgrove.testing import (
    Fault,
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    read_file,
    say,
    tool_use,
    write_file,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def files_on(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).split())


def spawn(role: str, task: str) -> Turn:
    return Turn([tool_use("mcp__grove__spawn_agent", {"role": role, "task": task})])


def remember_id(ids: list[str], then: Turn) -> Any:
    """A turn that keeps the id a spawn_agent call just returned, then plays ``then``."""

    def turn(request: ModelRequest) -> Turn:
        ids.append(json.loads(request.tool_results[0])["id"])
        return then

    return turn


def wait_for(ids: list[str], seen: dict[str, Any]) -> Any:
    """Keep the last spawn's id, then wait for every child spawned so far."""

    def turn(request: ModelRequest) -> Turn:
        ids.append(json.loads(request.tool_results[0])["id"])
        seen["ids"] = list(ids)
        return Turn([tool_use("mcp__grove__wait_agents", {"ids": list(ids), "timeout_s": 120})])

    return turn


def keep_wait(seen: dict[str, Any], then: Turn) -> Any:
    """A turn that keeps what wait_agents answered, then plays ``then``."""

    def turn(request: ModelRequest) -> Turn:
        seen["wait"] = json.loads(request.tool_results[0])
        return then

    return turn


def show(repo: Path, agent_id: str) -> dict[str, Any]:
    out = run_cli("show", agent_id, "--json", cwd=repo)
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    return shown


def test_feature_workflow_implement_node_starts_with_the_fanned_out_files(repo: Path) -> None:
    """The planner fans out two implementers and waits: their files are merged into the
    planner's result commit, so the implement node after it starts with them present."""
    ids: list[str] = []
    seen: dict[str, Any] = {}

    def planner_reports(request: ModelRequest) -> Turn:
        seen["wait"] = json.loads(request.tool_results[0])
        return say("Both steps were completed by the agents I started; none remain.")

    def implement(request: ModelRequest) -> Turn:
        seen["implement_read"] = request.tool_results[0]
        return write_file("main.py", "from alpha import A\nfrom beta import B\nprint(A + B)\n")

    script = (
        Script()
        .on(role="spec-writer", turns=[write_file("SPEC.md", "# SPEC\nA + B\n"), say("A plus B")])
        .on(
            role="planner",
            turns=[
                write_file("PLAN.md", "1. Step Alpha: alpha.py\n2. Step Beta: beta.py\n"),
                spawn("implementer", "Step Alpha of PLAN.md: write alpha.py"),
                remember_id(ids, spawn("implementer", "Step Beta of PLAN.md: write beta.py")),
                wait_for(ids, seen),
                planner_reports,
            ],
        )
        .on(
            role="implementer",
            prompt_contains="following PLAN.md",
            turns=[read_file("alpha.py"), implement, say("main.py ties the steps together")],
        )
        .on(
            role="implementer",
            prompt_contains="Step Alpha",
            turns=[write_file("alpha.py", "A = 1\n"), say("wrote alpha.py")],
        )
        .on(
            role="implementer",
            prompt_contains="Step Beta",
            turns=[write_file("beta.py", "B = 2\n"), say("wrote beta.py")],
        )
        .on(role="tester", turns=[say("PASS: main.py prints 3")])
        .on(role="reviewer", turns=[say("No problems found.")])
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "workflow",
            "run",
            "feature",
            "--input",
            "feature=add A and B",
            "--wait",
            "--json",
            cwd=repo,
            env=server.env(),
        )
        server.assert_done()
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    nodes = {n["key"]: n for n in run["nodes"]}
    # The planner's wait merged both children, in spawn order, naming their files.
    assert [(e["id"], e["merge"]["result"]) for e in seen["wait"]] == [
        (ids[0], "merged"),
        (ids[1], "merged"),
    ]
    assert [e["merge"]["files"] for e in seen["wait"]] == [["alpha.py"], ["beta.py"]]
    # The plan node's result commit holds the children's work; the implement node started
    # from it and read a fanned-out file with the Read tool.
    plan_commit = nodes["plan"]["result_commit"]
    assert {"PLAN.md", "alpha.py", "beta.py"} <= files_on(repo, plan_commit)
    assert nodes["implement"]["base_commit"] == plan_commit
    assert "A = 1" in seen["implement_read"]
    assert {"alpha.py", "beta.py", "main.py", "SPEC.md"} <= files_on(
        repo, nodes["review"]["branch"]
    )


def conflicting_children(script: Script, tag: str) -> Script:
    """Two file-writers (tasks naming ``tag``) that write different ``<tag>.txt``."""
    for side in ("one", "two"):
        script.on(
            role="file-writer",
            prompt_contains=f"{tag} saying {side}",
            turns=[write_file(f"{tag}.txt", f"{side}\n"), say(f"wrote {tag}.txt")],
        )
    return script


def test_conflicting_children_resolved_by_the_parent_and_a_stranger_refused(repo: Path) -> None:
    """Two children conflict: the second stays in progress with markers in the parent's
    worktree; the parent reads them, writes the resolution, and grove's final commit concludes
    the merge (two parents, no markers). merge_agent on an agent that is not its child is a
    tool error, and nothing of it reaches the parent's branch."""
    ids: list[str] = []
    seen: dict[str, Any] = {}
    assert run_cli("init", cwd=repo).returncode == 0
    stranger = run_cli("spawn", "file-writer", "write stolen.txt", cwd=repo).stdout.strip()

    def after_wait(request: ModelRequest) -> Turn:
        seen["wait"] = json.loads(request.tool_results[0])
        return Turn([tool_use("mcp__grove__merge_agent", {"id": stranger})])

    def read_conflict(request: ModelRequest) -> Turn:
        seen["stranger"] = request.tool_results[0]
        return read_file("conf.txt")

    def resolve(request: ModelRequest) -> Turn:
        seen["markers"] = request.tool_results[0]
        return write_file("conf.txt", "one and two\n")

    script = conflicting_children(
        Script().on(
            role="planner",
            turns=[
                spawn("file-writer", "Write conf saying one"),
                remember_id(ids, spawn("file-writer", "Write conf saying two")),
                wait_for(ids, seen),
                after_wait,
                read_conflict,
                resolve,
                say("merged both and resolved conf.txt"),
            ],
        ),
        "conf",
    )
    with ModelServer(script) as server:
        result = run_cli(
            "run", "planner", "fan out and merge", "--json", cwd=repo, env=server.env()
        )
        server.assert_done()
    assert result.returncode == 0, result.stderr
    parent = json.loads(result.stdout)
    assert parent["status"] == "completed"
    assert [e["merge"]["result"] for e in seen["wait"]] == ["merged", "conflicted"]
    assert seen["wait"][1]["merge"]["paths"] == ["conf.txt"]
    assert "<<<<<<< " in seen["markers"] and ">>>>>>> " in seen["markers"]
    assert "not your child" in seen["stranger"]
    branch = parent["workspace"]["branch"]
    head = git(repo, "rev-parse", branch).strip()
    second_child = git(repo, "rev-parse", f"grove/{ids[1]}").strip()
    assert git(repo, "rev-list", "--parents", "-n", "1", head).split()[2:] == [second_child]
    assert git(repo, "show", f"{branch}:conf.txt") == "one and two\n"
    grep = subprocess.run(
        ["git", "grep", "-n", "-E", "^(<<<<<<<|=======|>>>>>>>)", branch],
        check=False,
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert grep.returncode == 1, grep.stdout
    assert "stolen.txt" not in files_on(repo, branch)
    assert show(repo, stranger)["status"] == "pending"


def test_markers_left_fail_merge_conflict_and_an_unwaiting_parent_gets_children_merged(
    repo: Path,
) -> None:
    """A parent waits for two conflicting children and ends without touching the markers: it
    fails merge_conflict naming the file, its own work kept. Another parent never waits: it
    polls agent_result until its children completed and ends; grove merges them before its
    final commit."""
    waited: list[str] = []
    unwaited: list[str] = []
    completed: set[str] = set()
    seen: dict[str, Any] = {}

    def poll(request: ModelRequest) -> Turn | Fault:
        answer = json.loads(request.tool_results[0])
        if "status" not in answer:  # the second spawn's {id}
            unwaited.append(answer["id"])
        elif answer["status"] == "completed":
            completed.add(answer["id"])
        pending = [i for i in unwaited if i not in completed]
        if not pending:
            return say("my children are done; I did not wait for them")
        # The model takes a moment before it asks again (the children are running).
        return Fault.slow(0.5, Turn([tool_use("mcp__grove__agent_result", {"id": pending[0]})]))

    script = conflicting_children(
        Script()
        .on(
            role="planner",
            prompt_contains="leave the conflict",
            turns=[
                write_file("mine.txt", "the parent's own work\n"),
                spawn("file-writer", "Write clash saying one"),
                remember_id(waited, spawn("file-writer", "Write clash saying two")),
                wait_for(waited, seen),
                keep_wait(seen, say("done, conflict left as it is")),
            ],
        )
        .on(
            role="planner",
            prompt_contains="never wait",
            # Polls until its children completed: how many turns that takes varies.
            optional=True,
            turns=[
                spawn("file-writer", "Write left.txt saying left"),
                remember_id(unwaited, spawn("file-writer", "Write right.txt saying right")),
                *[poll] * 50,
            ],
        )
        .on(
            role="file-writer",
            prompt_contains="left.txt",
            turns=[write_file("left.txt", "left\n"), say("wrote left.txt")],
        )
        .on(
            role="file-writer",
            prompt_contains="right.txt",
            turns=[write_file("right.txt", "right\n"), say("wrote right.txt")],
        ),
        "clash",
    )
    assert run_cli("init", cwd=repo).returncode == 0
    (repo / "grove.toml").write_text("[roles.planner]\nmax_turns = 60\n")
    with ModelServer(script) as server:
        stuck = run_cli(
            "run", "planner", "leave the conflict", "--json", cwd=repo, env=server.env()
        )
        lazy = run_cli("spawn", "planner", "never wait", cwd=repo).stdout.strip()
        worker = run_cli("worker", "--drain", "--concurrency", "3", cwd=repo, env=server.env())
        server.assert_done()
    assert stuck.returncode == 1, stuck.stderr
    assert worker.returncode == 0, worker.stderr

    failed = json.loads(stuck.stdout)
    assert failed["status"] == "failed" and failed["error_kind"] == "merge_conflict"
    assert "clash.txt" in failed["error"]
    assert [e["merge"]["result"] for e in seen["wait"]] == ["merged", "conflicted"]
    branch = failed["workspace"]["branch"]
    assert "mine.txt" in files_on(repo, branch)
    assert git(repo, "show", f"{branch}:clash.txt") == "one\n"  # the first child, no markers
    assert "<<<<<<< " in (Path(failed["workspace"]["path"]) / "clash.txt").read_text()

    done = show(repo, lazy)
    assert done["status"] == "completed", done["error"]
    assert completed == set(unwaited) and len(unwaited) == 2
    assert {"left.txt", "right.txt"} <= files_on(repo, done["workspace"]["branch"])
    assert {"left.txt", "right.txt"} <= set(done["workspace"]["files_changed"])
