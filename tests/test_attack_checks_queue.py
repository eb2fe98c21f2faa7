"""Attacks on checks, the merge queue and run branches (THREATS.md): an agent controls its
branch's content and its check's output. Each test shows the attack failing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentgrove.checkout_guard import in_the_way
from agentgrove.checks import CheckRun, check_env, run_check
from agentgrove.errors import BadInput
from agentgrove.gitexec import GitError
from agentgrove.grove import Grove
from agentgrove.merge_queue import Outcome, report_lines
from agentgrove.merge_scratch import plan_queue, run_queue
from agentgrove.models import ErrorKind
from agentgrove.runtime import RunResult, RunSpec, ScriptedRuntime
from tests.conftest import git


def _writer() -> ScriptedRuntime:
    """Agents write the files their task names (a JSON object of path: content; an empty
    content deletes the file)."""

    def behave(spec: RunSpec) -> RunResult:
        for name, content in json.loads(spec.prompt).items():
            path = spec.cwd / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content:
                path.write_text(content)
            else:
                path.unlink()
        return RunResult(success=True, output="wrote")

    return ScriptedRuntime(behave)


def test_the_queue_never_overwrites_an_ignored_file_in_the_users_checkout(repo: Path) -> None:
    """git's fast-forward overwrites ignored files silently: an agent that un-ignores ``.env``
    and commits its own would replace the user's (secrets, local settings) unseen."""
    (repo / ".gitignore").write_text(".env\nbuild\n")
    git(repo, "add", ".gitignore")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "ignore")
    (repo / ".env").write_text("SECRET=the user's\n")
    (repo / "build").write_text("the user's ignored file\n")
    with Grove.init(repo, runtime=_writer()) as grove:
        a = grove.run(
            "implementer",
            json.dumps({".gitignore": "", ".env": "the agent's\n", "build/x": "the agent's\n"}),
        )
        old = git(repo, "rev-parse", "HEAD")
        report = run_queue(grove, plan_queue(grove, [a.id]))
    assert (repo / ".env").read_text() == "SECRET=the user's\n"
    assert (repo / "build").read_text() == "the user's ignored file\n"
    assert git(repo, "rev-parse", "HEAD") == old
    assert not report.updated and report.kept is not None
    assert report.refusal is not None and ".env" in report.refusal and "build" in report.refusal
    assert git(repo, "show", f"{report.kept}:.env") == "the agent's"
    assert any(".env" in line for line in report_lines(report))


@pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)
def test_check_output_with_nul_and_bad_bytes_is_stored_and_fixed_in_the_next_round(
    repo: Path, database: str
) -> None:
    """A check prints a NUL (PostgreSQL refuses it in text), bytes that are not UTF-8 and an
    escape sequence; the round is still recorded, the fix round still runs, the agent ends."""
    check = "printf 'bad\\000nul \\377\\033[2J\\n'; exit 1"
    runtime = ScriptedRuntime(lambda spec: RunResult(success=True, output="done"))
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("implementer", "work", check=check)
    assert len(runtime.runs) >= 2, agent.error  # the check's output reached a fix round
    assert agent.error_kind is ErrorKind.CHECK_FAILED, agent.error
    tail = agent.check.output_tail or ""
    assert "\0" not in tail and tail.startswith("bad") and "nul \ufffd" in tail
    assert "\0" not in runtime.runs[1].prompt


def test_grove_merge_never_overwrites_an_ignored_file_in_the_users_checkout(repo: Path) -> None:
    """The same attack through ``grove merge ID`` (and ``grove workflow merge``): the merge is
    refused naming the file, the checkout is untouched, not mid-merge."""
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "add", ".gitignore")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "ignore")
    (repo / ".env").write_text("SECRET=the user's\n")
    with Grove.init(repo, runtime=_writer()) as grove:
        a = grove.run("implementer", json.dumps({".gitignore": "", ".env": "the agent's\n"}))
        old = git(repo, "rev-parse", "HEAD")
        assert a.workspace is not None
        with pytest.raises(GitError, match=r"\.env.*move them away"):
            grove.service.workspaces.merge_into_checkout(a.workspace)
    assert (repo / ".env").read_text() == "SECRET=the user's\n"
    assert git(repo, "rev-parse", "HEAD") == old
    assert not (repo / ".git" / "MERGE_HEAD").exists()


def test_in_the_way_names_untracked_entries_an_added_path_needs_and_nothing_tracked(
    tmp_path: Path,
) -> None:
    (tmp_path / "ignored").write_text("x")
    (tmp_path / "was-a-file").mkdir()  # a tracked file the merge turns into a folder: fine
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to("/nowhere")
    changes = [
        ("A", "ignored"),
        ("A", "dir/new.txt"),
        ("A", "link/x"),
        ("D", "was-a-file"),
        ("A", "was-a-file/x"),
        ("M", "README.md"),
        ("A", "absent.txt"),
    ]
    assert in_the_way(changes, tmp_path) == ["ignored", "link"]


def test_what_one_entrys_check_leaves_in_ignored_files_never_reaches_the_next_check(
    repo: Path,
) -> None:
    """Entry A ignores ``junk`` and its check writes one: the next entry's check must run on
    that entry's content only, not on A's leftovers (here the leftover would turn it red; in
    the attack it turns a red entry green, e.g. an ignored conftest.py)."""
    with Grove.init(repo, runtime=_writer()) as grove:
        a, b = (
            grove.run("implementer", json.dumps({".gitignore": "junk\n", "a.txt": "A\n"})),
            grove.run("implementer", json.dumps({"b.txt": "B\n"})),
        )
        report = run_queue(
            grove, plan_queue(grove, [a.id, b.id], check="test ! -e junk && : > junk")
        )
    assert [r.outcome for r in report.results] == [Outcome.MERGED, Outcome.MERGED], report_lines(
        report
    )


@pytest.mark.parametrize("into", ["main~0", "main^{commit}", "-f", "HEAD", "@"])
def test_into_must_name_a_branch_not_a_revision(repo: Path, into: str) -> None:
    """``--into main~0`` resolved (``refs/heads/main~0^{commit}`` is main's tip) and the queue
    ran, then no branch could be moved and the report blamed the user's branch for moving."""
    with Grove.init(repo, runtime=_writer()) as grove:
        a = grove.run("implementer", json.dumps({"a.txt": "A\n"}))
        with pytest.raises(BadInput, match="--into"):
            plan_queue(grove, [a.id], into=into)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_a_confined_check_gets_no_proxy_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy URL often carries a password; a confined check has no network to use it on,
    and what it prints is stored and shown (``grove show``, the dashboard)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://u:proxy-password@proxy.example:3128")
    monkeypatch.setenv("all_proxy", "socks5://u:proxy-password@proxy.example:1080")
    run = run_check("env", tmp_path, timeout_s=60, home=None, git_dir=None, sandbox="auto")
    assert run.passed, run.error
    assert "proxy-password" not in run.output_tail
    assert "PATH=" in run.output_tail
    unconfined = check_env({"HTTPS_PROXY": "http://p"}, confined=False)
    assert unconfined["HTTPS_PROXY"] == "http://p"  # sandbox = "off": it may need the network


def test_a_branch_checked_out_while_the_queue_ran_is_not_moved_under_that_checkout(
    repo: Path,
) -> None:
    """``--into release`` with release not checked out; while the queue runs the user switches
    to it. Moving it then would leave their checkout's files behind its HEAD (the queue's work
    shown as staged reversals): it is left alone and the result kept."""

    def switches(command: str, cwd: Path, **_: object) -> CheckRun:
        git(repo, "switch", "-q", "release")
        return CheckRun(passed=True, exit_code=0, duration_ms=1, output_tail="", error=None)

    git(repo, "branch", "release")
    with Grove.init(repo, runtime=_writer()) as grove:
        a = grove.run("implementer", json.dumps({"a.txt": "A\n"}))
        old = git(repo, "rev-parse", "release")
        report = run_queue(
            grove, plan_queue(grove, [a.id], into="release", check="true"), checker=switches
        )
    assert git(repo, "rev-parse", "release") == old
    assert git(repo, "status", "--porcelain") == ""
    assert not report.updated and report.kept is not None
    assert git(repo, "show", f"{report.kept}:a.txt") == "A"


def test_a_conflicted_path_cannot_add_lines_to_the_integrators_task(repo: Path) -> None:
    """Two agents write a file whose name holds a newline and a fake list item: the integrator
    is told of one conflicted file, its name shown escaped, and of no other."""
    name = "a\n- README.md"
    seen: list[str] = []

    def behave(spec: RunSpec) -> RunResult:
        if spec.role.name == "integrator":
            seen.append(spec.prompt)
            return RunResult(success=False, error="stop here")
        for path, content in json.loads(spec.prompt).items():
            (spec.cwd / path).write_text(content)
        return RunResult(success=True, output="wrote")

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        a = grove.run("implementer", json.dumps({name: "A\n"}))
        b = grove.run("implementer", json.dumps({name: "B\n"}))
        run_queue(grove, plan_queue(grove, [a.id, b.id], resolve=True))
    [task] = seen
    assert [line for line in task.splitlines() if line.startswith("- ")] == ["- a\\n- README.md"]
