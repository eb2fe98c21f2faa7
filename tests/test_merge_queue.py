"""The merge queue (`grove merge ID... --into --check --resolve`): entries land one at a time on
a branch in a scratch worktree, each checked; conflicts and red checks are skipped and reported,
or handed to an integrator. ScriptedRuntime groves here, the real CLI for bad input and for the
integrator against the scripted model server."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agentgrove.checks import CheckRun
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.merge_queue import (
    Entry,
    Outcome,
    Step,
    integrator_task,
    marker_paths,
    next_step,
    report_lines,
)
from agentgrove.merge_scratch import merge_queue, plan_queue, run_queue
from agentgrove.models import AgentRecord
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, read_file, say, write_file
from tests.conftest import git, run_cli

USER = ["-c", "user.name=t", "-c", "user.email=t@x.invalid"]


def _writer(resolution: dict[str, str] | None = None) -> ScriptedRuntime:
    """Agents write the files their task names (the task is a JSON object of path: content).
    An integrator replaces each conflicted file it is told about with ``resolution[path]``
    (a path missing there is left as it is, markers and all)."""

    def behave(spec: RunSpec) -> RunResult:
        if spec.role.name == "integrator":
            done = []
            for line in spec.prompt.splitlines():
                path = line.removeprefix("- ")
                if line.startswith("- ") and path in (resolution or {}):
                    assert "<<<<<<<" in (spec.cwd / path).read_text()  # it sees the conflict
                    (spec.cwd / path).write_text((resolution or {})[path])
                    done.append(path)
            if "not pass the check" in spec.prompt and "bad.txt must go" in spec.prompt:
                (spec.cwd / "bad.txt").unlink()  # it read the check's output
                done.append("bad.txt")
            return RunResult(success=True, output=f"resolved {done}")
        for name, content in json.loads(spec.prompt).items():
            (spec.cwd / name).write_text(content)
        return RunResult(success=True, output="wrote")

    return ScriptedRuntime(behave)


def _agents(grove: Grove, *tasks: dict[str, str]) -> list[AgentRecord]:
    return [grove.run("implementer", json.dumps(t)) for t in tasks]


def _no_scratch_left(grove: Grove, repo: Path) -> None:
    merges = grove.config.home / "merges"
    assert not merges.exists() or not any(merges.iterdir())
    assert "merges" not in git(repo, "worktree", "list")


class _Watcher:
    """A checker that passes, recording the user's checkout each time the queue checks."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.seen: list[tuple[str, str, bool]] = []

    def __call__(self, command: str, cwd: Path, **_: object) -> CheckRun:
        merging = (self.repo / ".git" / "MERGE_HEAD").exists()
        status = git(self.repo, "status", "--porcelain")
        self.seen.append((git(self.repo, "rev-parse", "HEAD"), status, merging))
        return _PASSED


_PASSED = CheckRun(passed=True, exit_code=0, duration_ms=1, output_tail="", error=None)


def test_a_conflicting_entry_is_skipped_and_the_rest_land_then_the_checkout_fast_forwards(
    repo: Path,
) -> None:
    with Grove.init(repo, runtime=_writer()) as grove:
        a, b, c = _agents(grove, {"shared.txt": "A\n"}, {"shared.txt": "B\n"}, {"c.txt": "C\n"})
        # The user's own uncommitted work, which the queue brings nothing over.
        (repo / "README.md").write_text("# my edit, not committed\n")
        (repo / "notes.txt").write_text("mine\n")
        old = git(repo, "rev-parse", "HEAD")
        status = git(repo, "status", "--porcelain")
        watcher = _Watcher(repo)
        plan = plan_queue(grove, [a.id, b.id, c.id], check="true")
        report = run_queue(grove, plan, checker=watcher)
        lines = report_lines(report)
        _no_scratch_left(grove, repo)
    assert [r.outcome for r in report.results] == [
        Outcome.MERGED,
        Outcome.CONFLICTED,
        Outcome.MERGED,
    ]
    assert report.results[1].paths == ("shared.txt",)
    assert f"skipped grove/{b.id}: conflicts in shared.txt" in lines
    c_head = report.results[2].head or ""
    assert f"merged grove/{c.id} @ {c_head[:10]}: 1 file: c.txt" in lines
    assert report.exit_code == 1
    # While the queue ran, the user's checkout stayed where it was, never mid-merge.
    assert watcher.seen == [(old, status, False)] * 2
    # Then it was fast-forwarded to the result, keeping the user's changes.
    new = git(repo, "rev-parse", "HEAD")
    assert new == report.new_tip != old
    assert git(repo, "rev-list", "--first-parent", f"{old}..{new}").count("\n") == 1
    assert git(repo, "show", "HEAD:shared.txt") == "A"
    assert (repo / "c.txt").read_text() == "C\n"
    assert (repo / "README.md").read_text() == "# my edit, not committed\n"
    assert (repo / "notes.txt").read_text() == "mine\n"
    assert git(repo, "status", "--porcelain") == status


def test_into_another_branch_moves_only_that_branch(repo: Path) -> None:
    git(repo, "branch", "release")
    with Grove.init(repo, runtime=_writer()) as grove:
        [a] = _agents(grove, {"a.txt": "A\n"})
        # A queue that died (killed mid-run) left its scratch worktree: the next one clears it.
        dead = grove.config.home / "merges" / "0123456789ab"
        git(repo, "worktree", "add", "-q", "--detach", "--lock", str(dead), "HEAD")
        again = plan_queue(grove, [a.id, a.id], into="release")
        report = run_queue(grove, again)
    assert [r.outcome for r in report.results] == [Outcome.MERGED, Outcome.ALREADY_MERGED]
    assert report.exit_code == 0
    assert git(repo, "show", "release:a.txt") == "A"
    assert not (repo / "a.txt").exists()
    assert git(repo, "rev-parse", "HEAD") == git(repo, "rev-parse", "main")
    assert f"grove/{a.id} is already merged into release: nothing to merge" in report_lines(report)
    assert not dead.exists() and str(dead) not in git(repo, "worktree", "list")


class _MovesBranch(_Watcher):
    """A passing checker that, at the first check, moves ``branch`` one empty commit on behind
    the queue's back (another process finishing first)."""

    def __init__(self, repo: Path, branch: str) -> None:
        super().__init__(repo)
        self.branch = branch

    def __call__(self, command: str, cwd: Path, **kw: object) -> CheckRun:
        if not self.seen:
            ref = f"refs/heads/{self.branch}"
            tree = git(self.repo, "rev-parse", f"{ref}^{{tree}}")
            commit = git(self.repo, *USER, "commit-tree", tree, "-p", ref, "-m", "meanwhile")
            git(self.repo, "update-ref", ref, commit)
            if (self.repo / ".git" / "HEAD").read_text().strip() == f"ref: {ref}":
                git(self.repo, "reset", "-q", "--keep", commit)  # as a user's commit would
        return super().__call__(command, cwd, **kw)


@pytest.mark.parametrize("branch", ["main", "release"])
def test_a_branch_that_moved_meanwhile_is_left_alone_and_the_result_kept(
    repo: Path, branch: str
) -> None:
    """``main`` is checked out, ``release`` is not: both are compare-and-swapped."""
    git(repo, "branch", "release")
    with Grove.init(repo, runtime=_writer()) as grove:
        [a] = _agents(grove, {"a.txt": "A\n"})
        plan = plan_queue(grove, [a.id], into=branch, check="true")
        report = run_queue(grove, plan, checker=_MovesBranch(repo, branch))
    assert not report.updated and report.refusal is not None
    assert "moved while the queue ran" in report.refusal
    assert git(repo, "log", "-1", "--format=%s", branch) == "meanwhile"
    assert not (repo / "a.txt").exists()
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "show", f"{report.kept}:a.txt") == "A"


def test_a_runs_completed_nodes_are_queued_in_order_and_the_others_reported(
    repo: Path,
) -> None:
    diamond = """
name: diamond
nodes:
  - {key: a, role: planner, task: '{"a.txt": "a"}'}
  - {key: b, role: implementer, task: "fail", depends_on: [a]}
  - {key: c, role: implementer, task: '{"c.txt": "c"}', depends_on: [a]}
  - {key: d, role: tester, task: '{"d.txt": "d"}', depends_on: [b, c]}
"""

    def behave(spec: RunSpec) -> RunResult:
        if spec.prompt == "fail":
            return RunResult(success=False, error="broken")
        for name, content in json.loads(spec.prompt).items():
            (spec.cwd / name).write_text(content)
        return RunResult(success=True, output="wrote")

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        run = grove.run_workflow(diamond)
        plan = plan_queue(grove, [], run_id=run.id, into="main")
        report = run_queue(grove, plan)
        lines = report_lines(report)
    nodes = {n.key: n.agent for n in run.nodes}
    assert [e.agent_id for e in plan.entries] == [nodes["a"].id, nodes["c"].id]  # type: ignore[union-attr]
    assert [r.outcome for r in report.results] == [Outcome.MERGED, Outcome.MERGED]
    assert [r.files for r in report.results] == [("a.txt",), ("c.txt",)]
    assert any(line.startswith("skipped node b (grove/") for line in lines)
    assert any(line.startswith("skipped node d") for line in lines)
    assert report.exit_code == 1
    assert sorted(git(repo, "ls-tree", "--name-only", "HEAD").split()) == [
        "README.md",
        "a.txt",
        "c.txt",
    ]


def test_uncommitted_changes_in_the_way_refuse_the_fast_forward_and_lose_nothing(
    repo: Path,
) -> None:
    with Grove.init(repo, runtime=_writer()) as grove:
        [a] = _agents(grove, {"README.md": "the agent's\n"})
        (repo / "README.md").write_text("the user's, not committed\n")
        old = git(repo, "rev-parse", "HEAD")
        report = run_queue(grove, plan_queue(grove, [a.id]))
        _no_scratch_left(grove, repo)
    assert report.exit_code == 1 and not report.updated
    assert report.refusal is not None and "README.md" in report.refusal
    assert git(repo, "rev-parse", "HEAD") == old
    assert (repo / "README.md").read_text() == "the user's, not committed\n"
    assert report.kept is not None
    assert git(repo, "show", f"{report.kept}:README.md") == "the agent's"
    assert f"`git merge --ff-only {report.kept}` takes it" in "\n".join(report_lines(report))


def test_a_red_check_skips_the_entry_with_its_tail_and_the_queue_goes_on(repo: Path) -> None:
    check = 'if [ -e bad.txt ]; then echo "bad.txt must not exist"; exit 3; fi'
    with Grove.init(repo, runtime=_writer()) as grove:
        a, b, c = _agents(grove, {"a.txt": "A\n"}, {"bad.txt": "x\n"}, {"c.txt": "C\n"})
        report = run_queue(grove, plan_queue(grove, [a.id, b.id, c.id], check=check))
        lines = report_lines(report)
        _no_scratch_left(grove, repo)
    assert [r.outcome for r in report.results] == [
        Outcome.MERGED,
        Outcome.CHECK_FAILED,
        Outcome.MERGED,
    ]
    failed = report.results[1]
    assert failed.exit_code == 3 and "bad.txt must not exist" in (failed.check_tail or "")
    assert f"skipped grove/{b.id}: check failed (exit 3)" in lines
    assert "    bad.txt must not exist" in lines
    assert sorted(git(repo, "ls-tree", "--name-only", "HEAD").split()) == [
        "README.md",
        "a.txt",
        "c.txt",
    ]


def test_the_check_runs_an_entrys_code_confined(repo: Path) -> None:
    """The check is the user's command, but it runs the agent's files: an entry whose test
    script writes into the user's checkout and $HOME changes nothing outside the scratch
    worktree (the sandbox's /tmp is its own, and the tests' repositories live under /tmp)."""
    home = Path.home()
    evil = f"echo pwned > {repo / 'README.md'}; echo pwned > {home / 'planted'}\n"
    with Grove.init(repo, runtime=_writer()) as grove:
        [a] = _agents(grove, {"test.sh": evil})
        report = run_queue(grove, plan_queue(grove, [a.id], check="sh -e test.sh"))
    [result] = report.results
    assert result.outcome is Outcome.CHECK_FAILED, result
    assert "cannot create" in (result.check_tail or "")
    assert (repo / "README.md").read_text() == "# test repo\n"
    assert not (home / "planted").exists()
    assert git(repo, "status", "--porcelain") == ""


def test_resolve_lands_the_integrators_result_and_skips_one_that_leaves_markers(
    repo: Path,
) -> None:
    runtime = _writer(resolution={"s.txt": "A and B\n"})
    with Grove.init(repo, runtime=runtime) as grove:
        a, b, c = _agents(
            grove,
            {"s.txt": "A\n", "k.txt": "A\n"},
            {"s.txt": "B\n"},
            {"k.txt": "C\n"},
        )
        plan = plan_queue(grove, [a.id, b.id, c.id], check="test -e s.txt", resolve=True)
        report = anyio.run(lambda: merge_queue(grove, plan))
        integrators = [r for r in grove.store.list_agents() if r.role == "integrator"]
        _no_scratch_left(grove, repo)
    assert [r.outcome for r in report.results] == [
        Outcome.MERGED,
        Outcome.RESOLVED,
        Outcome.CONFLICTED,
    ]
    resolved, left = report.results[1], report.results[2]
    assert resolved.paths == ("s.txt",) and resolved.integrator == integrators[0].id
    assert left.note == "conflict markers left in k.txt"
    assert git(repo, "show", "HEAD:s.txt") == "A and B"
    assert git(repo, "show", "HEAD:k.txt") == "A"
    # The integrator started from the conflicted merge: both parents, markers committed.
    start = integrators[0].base_ref
    assert start is not None
    assert len(git(repo, "rev-list", "--parents", "-n", "1", start).split()) == 3
    assert "<<<<<<<" in git(repo, "show", f"{start}:s.txt")
    assert "s.txt" in integrators[0].task and "test -e s.txt" in integrators[0].task


def test_resolve_hands_a_red_check_to_the_integrator_and_checks_its_result(repo: Path) -> None:
    check = "for f in bad.txt worse.txt; do if [ -e $f ]; then echo $f must go; exit 1; fi; done"
    with Grove.init(repo, runtime=_writer()) as grove:
        a, b = _agents(grove, {"a.txt": "A\n", "bad.txt": "x\n"}, {"worse.txt": "y\n"})
        report = run_queue(grove, plan_queue(grove, [a.id, b.id], check=check, resolve=True))
        integrator, gave_up = [r for r in grove.store.list_agents() if r.role == "integrator"]
    result, red = report.results
    assert red.outcome is Outcome.CHECK_FAILED and red.integrator == gave_up.id
    assert red.note is not None and red.note.startswith("the integrator ended failed")
    assert "worse.txt must go" in (red.check_tail or "")
    assert result.outcome is Outcome.RESOLVED and result.integrator == integrator.id
    assert result.files == ("a.txt",)
    assert (
        f"resolved grove/{a.id} by integrator {integrator.id} (a red check)"
        in (report_lines(report)[0])
    )
    assert "bad.txt must go" in integrator.task
    assert git(repo, "ls-tree", "--name-only", "HEAD").split() == ["README.md", "a.txt"]


def test_pure_decisions() -> None:
    assert next_step(conflicted=False, check_passed=True, resolve=True) is Step.LAND
    assert next_step(conflicted=True, check_passed=True, resolve=False) is Step.SKIP
    assert next_step(conflicted=False, check_passed=False, resolve=True) is Step.RESOLVE
    assert marker_paths(
        {"a": "x\n<<<<<<< HEAD\ny\n", "b": "Title\n=======\n", "c": ">>>>>>> theirs\n"}
    ) == ["a", "c"]
    task = integrator_task(Entry("id1", "grove/id1", "c0"), "main", ["p"], "make", "E:\x00 1")
    assert "- p" in task and "make" in task and "E:\\x00 1" in task and "\x00" not in task


def test_bad_input_is_one_line_exit_2_and_changes_nothing(repo: Path) -> None:
    def fails(spec: RunSpec) -> RunResult:
        return RunResult(success=False, error="no")

    with Grove.init(repo, runtime=_writer()) as grove:
        [done] = _agents(grove, {"a.txt": "A\n"})
    with Grove.open(repo, runtime=ScriptedRuntime(fails)) as grove:
        failed = grove.run("implementer", "fail")
        with pytest.raises(BadInput):
            plan_queue(grove, [done.id], check="  ")
    before = (
        git(repo, "for-each-ref"),
        git(repo, "status", "--porcelain"),
        git(repo, "worktree", "list"),
    )
    cases = {
        ("merge", done.id, "nosuchid"): "unknown agent id 'nosuchid'",
        ("merge", done.id, failed.id): f"agent {failed.id} is failed, not completed",
        ("merge", done.id, "--into", "nope"): "--into 'nope': no such branch",
        ("merge", done.id, "--check", ""): "--check: a check is a shell command and cannot be",
    }
    for args, words in cases.items():
        result = run_cli(*args, cwd=repo)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""
    after = (
        git(repo, "for-each-ref"),
        git(repo, "status", "--porcelain"),
        git(repo, "worktree", "list"),
    )
    assert after == before


def _resolve_markers(request: ModelRequest) -> Turn:
    seen = request.tool_results[0]
    if "<<<<<<<" not in seen or ("A\n" not in seen and "A" not in seen):
        return say(f"no conflict markers in shared.txt: {seen[:200]}")
    return write_file("shared.txt", "A and B\n")


@pytest.mark.e2e
def test_resolve_through_the_cli_with_an_integrator_on_the_real_sdk(repo: Path) -> None:
    script = (
        Script()
        .on(
            role="file-writer",
            prompt_contains="version A",
            turns=[write_file("shared.txt", "A\n"), say("wrote A")],
        )
        .on(
            role="file-writer",
            prompt_contains="version B",
            turns=[write_file("shared.txt", "B\n"), say("wrote B")],
        )
        .on(
            role="integrator",
            turns=[read_file("shared.txt"), _resolve_markers, say("kept both sides")],
        )
    )
    assert run_cli("init", cwd=repo).returncode == 0
    old = git(repo, "rev-parse", "HEAD")
    with ModelServer(script) as server:
        ids = []
        for version in ("A", "B"):
            ran = run_cli(
                "run", "file-writer", f"write version {version}", "--json", cwd=repo,
                env=server.env(),
            )  # fmt: skip
            assert ran.returncode == 0, ran.stderr
            ids.append(json.loads(ran.stdout)["id"])
        check = "grep -qx 'A and B' shared.txt || grep -qx A shared.txt"
        merged = run_cli("merge", *ids, "--check", check, "--resolve", cwd=repo, env=server.env())
        server.assert_done()
    assert merged.returncode == 0, merged.stdout + merged.stderr
    [integrator] = [
        a for a in json.loads(run_cli("ls", "--json", cwd=repo).stdout) if a["role"] == "integrator"
    ]
    assert integrator["status"] == "completed"
    lines = merged.stdout.splitlines()
    first, second = (r.split(" @ ")[1][:10] for r in lines[:2])
    assert f"merged grove/{ids[0]} @ {first}: 1 file: shared.txt" in lines
    assert (
        f"resolved grove/{ids[1]} by integrator {integrator['id']} (conflicts in shared.txt) "
        f"@ {second}: 1 file: shared.txt" in lines
    )
    new = git(repo, "rev-parse", "HEAD")
    assert second == new[:10]  # the integrator's result is BRANCH's tip
    assert lines[-1] == (
        f"main: 2 of 2 landed; main {old[:10]} -> {new[:10]} (your checkout was fast-forwarded)"
    )
    assert (repo / "shared.txt").read_text() == "A and B\n"
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "merge-base", "--is-ancestor", old, "HEAD") == ""
    assert not any((repo / ".grove" / "merges").iterdir())
