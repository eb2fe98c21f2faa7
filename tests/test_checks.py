"""Checks: the runner (real bubblewrap, real processes) and the fix rounds on the scripted
runtime. The real CLI and SDK: tests/test_checks_e2e.py."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgrove.checks import (
    SANDBOX_MISSING,
    TAIL_BYTES,
    TAIL_LINES,
    CheckRun,
    fix_prompt,
    output_tail,
    run_check,
    sandbox_argv,
)
from agentgrove.errors import BadInput, ConfigError
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, CheckRecord, CheckStatus, ErrorKind
from agentgrove.runtime import DelegationRefused, RunResult, RunSpec, ScriptedRuntime
from agentgrove.workflows.spec import WorkflowError
from tests.conftest import git, run_cli

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _processes_with(marker: str) -> list[int]:
    """PIDs whose command line holds ``marker`` (the test's own process excepted)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


# -- the output tail (pure) ----------------------------------------------------------------


def test_output_tail_keeps_the_last_200_lines_and_at_most_20_kb() -> None:
    many = "".join(f"line {i}\n" for i in range(1000)).encode()
    tail = output_tail(many)
    assert tail.splitlines() == [f"line {i}" for i in range(1000 - TAIL_LINES, 1000)]
    wide = ("é" * 30_000 + "\nend\n").encode()  # 60 kB on one line, two bytes a character
    cut = output_tail(wide)
    assert len(cut.encode()) <= TAIL_BYTES and cut.endswith("é\nend\n")
    assert "\ufffd" not in cut  # never cut inside a character
    assert output_tail(b"bad \xff byte") == "bad \ufffd byte"


def test_fix_prompt_opens_with_the_exit_code_then_the_output() -> None:
    run = CheckRun(False, 3, 10, "FAILED test_x\n", None)
    prompt = fix_prompt("pytest -q", run, tries_left=1)
    assert prompt.startswith("The check failed with exit code 3: pytest -q")
    assert "FAILED test_x" in prompt and "1 more try after this one" in prompt
    killed = fix_prompt("pytest", CheckRun(False, None, 10, "", None, timed_out=True), tries_left=0)
    assert killed.startswith("The check was killed at its timeout") and "last try" in killed


def test_sandbox_argv_hides_the_grove_home_and_binds_the_worktree_last() -> None:
    home = Path("/srv/proj/.grove")
    worktree = home / "worktrees" / "a1"
    argv = sandbox_argv(
        "bwrap",
        "pytest",
        worktree,
        deny=[Path("/root"), home],
        allow=[Path("/root/.cargo/bin"), Path("/srv/proj/.git"), worktree],
        status_fd=5,
    )
    joined = " ".join(argv)
    assert "--unshare-pid" in argv and "--unshare-net" in argv and "--die-with-parent" in argv
    assert "--tmpfs /root" in joined and f"--tmpfs {home}" in joined
    assert "--ro-bind /root/.cargo/bin /root/.cargo/bin" in joined
    # Not under a hidden folder: the read-only root already shows it, unwritable.
    assert "/srv/proj/.git" not in joined
    assert joined.index(f"--tmpfs {home}") < joined.index(f"--bind {worktree} {worktree}")
    assert argv[-3:] == ["/bin/sh", "-c", "pytest"]


# -- the runner, for real ------------------------------------------------------------------


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder outside /tmp (which the sandbox replaces anyway), so that the sandbox's own
    hiding of the grove home and its read-only root are what is tested."""
    base = Path("/var/tmp")
    if not (base.is_dir() and os.access(base, os.W_OK)):
        pytest.skip("needs a writable /var/tmp")
    path = Path(tempfile.mkdtemp(prefix="grove-check-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_bwrap
@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_a_check_writes_only_its_worktree_and_cannot_read_the_grove_home(
    outside_tmp: Path, sandbox: str
) -> None:
    """``off`` is the attack succeeding (confinement removed, as the user may choose);
    ``auto`` is the promise."""
    home = outside_tmp / ".grove"
    worktree = home / "worktrees" / "a1"
    worktree.mkdir(parents=True)
    (home / "grove.db").write_text("SECRET-ROWS\n")
    escape = outside_tmp / "escaped.txt"
    command = (
        f"echo escaped > {escape}; cat {home / 'grove.db'}; cat ../../grove.db; "
        "echo mine > result.txt; exit 0"
    )
    run = run_check(command, worktree, timeout_s=60, home=home, git_dir=None, sandbox=sandbox)  # type: ignore[arg-type]
    assert run.error is None and run.passed
    assert (worktree / "result.txt").read_text() == "mine\n"
    if sandbox == "off":
        assert escape.exists() and "SECRET-ROWS" in run.output_tail
    else:
        assert not escape.exists()
        assert "SECRET-ROWS" not in run.output_tail
        assert "Read-only file system" in run.output_tail


@needs_bwrap
def test_a_check_sees_no_secret_of_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROVE_DB_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    run = run_check(
        "env",
        tmp_path,
        timeout_s=60,
        home=None,
        git_dir=None,
        sandbox="auto",
        env_allow=["PIP_*"],
    )
    assert run.passed
    assert "hunter2" not in run.output_tail and "aws-secret-value" not in run.output_tail
    assert "sk-test-not-a-real-key" not in run.output_tail  # the model's key is the CLI's only
    assert "PIP_INDEX_URL=https://mirror.example/simple" in run.output_tail


@needs_bwrap
@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_a_hanging_check_is_killed_at_its_timeout_with_everything_it_started(
    tmp_path: Path, sandbox: str
) -> None:
    tag = f"{uuid.uuid4().int % 10**6}.{os.getpid()}"
    command = f"sleep 4{tag} & setsid sleep 5{tag} > /dev/null 2>&1 & echo started; sleep 6{tag}"
    run = run_check(command, tmp_path, timeout_s=1, home=None, git_dir=None, sandbox=sandbox)  # type: ignore[arg-type]
    assert run.timed_out and not run.passed and run.exit_code is None and run.error is None
    assert run.output_tail == "started\n"
    assert _processes_with(tag) == []


@needs_bwrap
def test_a_check_that_passes_leaves_no_background_process(tmp_path: Path) -> None:
    tag = f"7{uuid.uuid4().int % 10**6}.{os.getpid()}"
    for sandbox in ("auto", "off"):
        run = run_check(
            f"setsid sleep {tag} > /dev/null 2>&1 & echo ok",
            tmp_path,
            timeout_s=60,
            home=None,
            git_dir=None,
            sandbox=sandbox,  # type: ignore[arg-type]
        )
        assert run.passed and run.output_tail == "ok\n"
        assert _processes_with(tag) == []


@needs_bwrap
def test_a_command_that_is_not_found_is_an_error_not_a_crash(tmp_path: Path) -> None:
    run = run_check(
        "no-such-test-runner -q", tmp_path, timeout_s=60, home=None, git_dir=None, sandbox="auto"
    )
    assert not run.passed and run.exit_code == 127
    assert run.error is not None and "not found" in run.error
    assert "no-such-test-runner" in run.error


def test_without_bwrap_a_confined_check_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    run = run_check("true", tmp_path, timeout_s=60, home=None, git_dir=None, sandbox="required")
    assert not run.passed and run.error == SANDBOX_MISSING
    off = run_check("exit 0", tmp_path, timeout_s=60, home=None, git_dir=None, sandbox="off")
    assert off.passed and off.error is None


# -- fix rounds (scripted runtime, real checks) ---------------------------------------------


def _role_config(repo: Path, check: str, *, fix_rounds: int = 2, extra: str = "") -> None:
    (repo / "grove.toml").write_text(
        f"[roles.implementer]\ncheck = {check!r}\nfix_rounds = {fix_rounds}\n{extra}"
    )


FIXED_CHECK = "test -f fixed.txt || { echo 'fixed.txt is missing'; exit 3; }"


def _fixes_after_seeing_the_check(spec: RunSpec) -> RunResult:
    """First run: writes work.txt only. A resumed run told exit code 3 and the output writes
    fixed.txt (and only then)."""
    if spec.resume_session_id is None:
        (spec.cwd / "work.txt").write_text("work\n")
    elif "exit code 3" in spec.prompt and "fixed.txt is missing" in spec.prompt:
        (spec.cwd / "fixed.txt").write_text("fixed\n")
    return RunResult(
        success=True,
        output=f"round for {spec.resume_session_id}",
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.001,
        duration_ms=7,
        session_id="session-1",
    )


@needs_bwrap
def test_a_failing_check_passes_after_one_fix_round_in_the_same_session(repo: Path) -> None:
    _role_config(repo, FIXED_CHECK)
    runtime = ScriptedRuntime(_fixes_after_seeing_the_check)
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("implementer", "do the work")
        events = [e for e in grove.store.events(agent_id=agent.id) if e.kind == "agent.check"]
    assert agent.status is AgentStatus.COMPLETED, agent.error
    assert [r.resume_session_id for r in runtime.runs] == [None, "session-1"]
    assert runtime.runs[1].prompt.startswith("The check failed with exit code 3")
    assert agent.check.status is CheckStatus.PASSED and agent.check.rounds == 2
    assert agent.check.command == FIXED_CHECK and agent.check.exit_code == 0
    assert [(e.data["round"], e.data["status"], e.data["exit_code"]) for e in events] == [
        (1, "failed", 3),
        (2, "passed", 0),
    ]
    assert (agent.tokens_in, agent.tokens_out) == (20, 10)
    assert agent.cost_usd == pytest.approx(0.002)
    assert agent.workspace is not None
    assert sorted(agent.workspace.files_changed) == ["fixed.txt", "work.txt"]


@needs_bwrap
def test_a_check_that_fails_every_round_fails_the_agent_with_its_work_kept(repo: Path) -> None:
    _role_config(repo, "echo 'still red'; exit 1", fix_rounds=2)
    runtime = ScriptedRuntime(_fixes_after_seeing_the_check)
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("implementer", "do the work")
    assert agent.status is AgentStatus.FAILED
    assert agent.error_kind is ErrorKind.CHECK_FAILED, agent.error
    assert agent.attempt == 1  # a red check is not retried
    assert len(runtime.runs) == 3 and agent.check.rounds == 3
    assert agent.check.status is CheckStatus.FAILED and agent.check.exit_code == 1
    assert agent.check.output_tail == "still red\n"
    assert agent.error is not None and "exit 1" in agent.error and "3 round" in agent.error
    assert agent.workspace is not None and agent.workspace.branch is not None
    assert git(repo, "show", f"{agent.workspace.branch}:work.txt") == "work"


@needs_bwrap
def test_ask_human_in_a_fix_round_is_refused_and_the_round_goes_on(repo: Path) -> None:
    _role_config(repo, FIXED_CHECK)
    refusals: list[str] = []

    async def asks_while_fixing(spec: RunSpec) -> RunResult:
        if spec.resume_session_id is not None:  # the fix round
            assert spec.delegate is not None
            try:
                await spec.delegate.ask_human("Should fixed.txt exist?", [])
            except DelegationRefused as exc:
                refusals.append(str(exc))
        return _fixes_after_seeing_the_check(spec)

    with Grove.init(repo, runtime=ScriptedRuntime(asks_while_fixing)) as grove:
        agent = grove.run("implementer", "do the work")
        questions = grove.questions(agent.id)
    [refusal] = refusals  # the agent is told, and nothing is asked of a person
    assert "fix round" in refusal and FIXED_CHECK in refusal
    assert questions == []
    assert agent.status is AgentStatus.COMPLETED, agent.error
    assert agent.check.status is CheckStatus.PASSED and agent.check.rounds == 2


@needs_bwrap
def test_a_run_that_failed_is_not_checked_and_no_check_means_none(repo: Path) -> None:
    _role_config(repo, "exit 1")
    failing = ScriptedRuntime(
        lambda spec: RunResult(success=False, error="boom", error_kind=ErrorKind.PERMANENT)
    )
    with Grove.init(repo, runtime=failing) as grove:
        agent = grove.run("implementer", "fail")
    assert agent.error_kind is ErrorKind.PERMANENT
    assert agent.check.status is CheckStatus.NONE and agent.check.rounds == 0
    with Grove.open(repo, runtime=ScriptedRuntime()) as grove:
        plain = grove.run("tester", "no check on this role")
    assert plain.status is AgentStatus.COMPLETED
    assert plain.check.command is None and plain.check.status is CheckStatus.NONE


@needs_bwrap
def test_a_check_that_cannot_start_fails_the_agent_without_fix_rounds(repo: Path) -> None:
    runtime = ScriptedRuntime()
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("implementer", "work", check="no-such-test-runner")
    assert agent.error_kind is ErrorKind.CHECK_FAILED
    assert agent.error is not None and "not found" in agent.error
    assert len(runtime.runs) == 1 and agent.check.rounds == 1


@needs_bwrap
def test_no_fix_round_starts_without_budget_left(repo: Path) -> None:
    _role_config(repo, "exit 1", fix_rounds=5, extra="max_budget_usd = 0.5\n")

    def greedy(spec: RunSpec) -> RunResult:
        return RunResult(success=True, output="spent it all", cost_usd=spec.max_budget_usd)

    runtime = ScriptedRuntime(greedy)
    with Grove.init(repo, runtime=runtime) as grove:
        agent = grove.run("implementer", "spend")
    assert agent.error_kind is ErrorKind.CHECK_FAILED
    assert agent.error is not None and "no budget left" in agent.error
    assert len(runtime.runs) == 1


@needs_bwrap
def test_check_flag_overrides_the_role_and_a_node_check_comes_from_inputs(repo: Path) -> None:
    _role_config(repo, "exit 1")
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.run("implementer", "work", check="true")
        assert agent.status is AgentStatus.COMPLETED and agent.check.command == "true"
        run = grove.run_workflow("design-implement-test", {"feature": "x", "check": "test 1 = 1"})
        nodes = {n.key: n.agent for n in run.nodes}
        bare = grove.run_workflow("design-implement-test", {"feature": "x"})
        bare_nodes = {n.key: n.agent for n in bare.nodes}
    assert nodes["implement"] is not None and nodes["test"] is not None
    assert nodes["implement"].check.command == "test 1 = 1"
    assert nodes["implement"].check.status is CheckStatus.PASSED
    assert nodes["test"].check.command == "test 1 = 1"
    assert nodes["design"] is not None and nodes["design"].check.command is None
    # No input: the node's check renders blank and the role's applies (here: red).
    implement = bare_nodes["implement"]
    assert implement is not None and implement.check.command == "exit 1"
    assert implement.error_kind is ErrorKind.CHECK_FAILED


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "wanted"),
    [
        ("fix_rounds = -1", "fix_rounds"),
        ('fix_rounds = "two"', "fix_rounds"),
        ("fix_rounds = 1.5", "fix_rounds"),
        ("fix_rounds = true", "fix_rounds"),
        ("check_timeout_s = 0", "check_timeout_s"),
        ('check = ""', "check"),
        ('check = "   "', "check"),
        ("check = 3", "check"),
    ],
)
def test_bad_check_settings_in_grove_toml_are_refused(repo: Path, toml: str, wanted: str) -> None:
    (repo / "grove.toml").write_text(f"[roles.tester]\n{toml}\n")
    with pytest.raises(ConfigError, match=rf"roles\.tester\.{wanted}"):
        Grove.init(repo, runtime=ScriptedRuntime())


def test_an_empty_check_flag_is_refused_and_nothing_is_written(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        for bad in ("", "  ", "a\x00b"):
            with pytest.raises(BadInput, match="--check"):
                grove.spawn("implementer", "work", check=bad)
        assert grove.store.list_agents() == []


@pytest.mark.parametrize(
    ("check", "wanted"),
    [
        ("3", r"check \(node .build.\): input should be a valid string"),
        ('""', "check"),
        ('"  "', "check: is blank"),
        ('"pytest {{ design.output }}"', "a check may use only inputs.NAME"),
        ('"pytest {{ inputs.nope }}"', "a check may use only inputs.NAME"),
    ],
)
def test_a_node_check_that_is_not_a_command_is_refused(repo: Path, check: str, wanted: str) -> None:
    workflow = f"""
name: w
inputs: [x]
nodes:
  - key: design
    role: implementer
    task: do it
  - key: build
    role: implementer
    depends_on: [design]
    task: build it
    check: {check}
"""
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        with pytest.raises(WorkflowError, match=wanted):
            grove.start_workflow(workflow, {"x": "1"})
        assert grove.store.list_runs() == [] and grove.store.list_agents() == []


def test_bad_check_input_on_the_command_line_exits_2_writing_nothing(repo: Path) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    for args in (
        ("spawn", "implementer", "work", "--check", ""),
        ("run", "implementer", "work", "--check", "   "),
    ):
        result = run_cli(*args, cwd=repo)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--check" in lines[0] and "Traceback" not in result.stderr
    (repo / "grove.toml").write_text("[roles.implementer]\nfix_rounds = -1\n")
    result = run_cli("spawn", "implementer", "work", cwd=repo)
    assert result.returncode == 2 and "fix_rounds" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (repo / "grove.toml").unlink()
    listed = run_cli("ls", "--json", cwd=repo)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    assert "grove/" not in git(repo, "branch", "--list")


def test_a_cancelled_check_is_killed_at_once(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    run = run_check(
        "sleep 600", tmp_path, timeout_s=600, home=None, git_dir=None, sandbox="off", cancel=stop
    )
    assert run.timed_out and not run.passed and run.exit_code is None


def test_the_check_write_is_fenced_by_the_lease(repo: Path) -> None:
    with Grove.init(repo, runtime=ScriptedRuntime()) as grove:
        agent = grove.spawn("implementer", "work", check="true")
        claimed = grove.store.claim("w1", 60, agent_id=agent.id)
        assert claimed is not None
        record = CheckRecord(command="true", status=CheckStatus.FAILED, rounds=1, exit_code=1)
        stale = grove.store.record_check(agent.id, "w0", claimed.attempt, record, {"round": 1})
        assert not stale
        assert grove.store.get_agent(agent.id).check.status is CheckStatus.NONE
        held = grove.store.record_check(agent.id, "w1", claimed.attempt, record, {"round": 1})
        assert held
        after = grove.store.get_agent(agent.id)
        kinds = [e.kind for e in grove.store.events(agent_id=agent.id)]
    assert (after.check.status, after.check.rounds, after.check.exit_code) == (
        CheckStatus.FAILED,
        1,
        1,
    )
    assert kinds.count("agent.check") == 1


@needs_bwrap
def test_a_retried_attempt_whose_run_fails_does_not_keep_the_earlier_verdict(repo: Path) -> None:
    _role_config(repo, "exit 1", fix_rounds=1)
    calls: list[int] = []

    def behave(spec: RunSpec) -> RunResult:
        calls.append(spec.attempt)
        if len(calls) == 1:
            return RunResult(success=True, output="done", session_id="s1")
        if len(calls) == 2:  # the fix round: the API is overloaded, the attempt is retried
            return RunResult(success=False, error="overloaded", error_kind=ErrorKind.MODEL_ERROR)
        return RunResult(success=False, error="bad key", error_kind=ErrorKind.PERMANENT)

    with Grove.init(repo, runtime=ScriptedRuntime(behave)) as grove:
        grove.configure_worker(retry_base_s=0.01)
        agent = grove.run("implementer", "work")
        events = [e.data for e in grove.store.events(agent_id=agent.id) if e.kind == "agent.check"]
    assert calls == [1, 1, 2]
    assert agent.error_kind is ErrorKind.PERMANENT
    assert agent.check.status is CheckStatus.NONE and agent.check.rounds == 0
    assert [(e["round"], e["status"]) for e in events] == [(1, "failed"), (0, "none")]


def test_a_sandbox_that_cannot_start_is_an_error_naming_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bubblewrap that fails before starting the command, as where user namespaces are off."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run = run_check("true", tmp_path, timeout_s=60, home=None, git_dir=None, sandbox="auto")
    assert not run.passed and run.exit_code is None
    assert run.error is not None and "No permissions to create new namespace" in run.error
    assert 'sandbox = "off"' in run.error
