"""`grove shell`: completion and dispatch as plain functions, then the real shell in tmux.

The tmux tests run ``python -m agentgrove shell`` in a 200x50 terminal of a private tmux server
(one socket per test), type with ``send-keys`` and read the screen with ``capture-pane``,
polling with a deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest
import typer

from agentgrove.cli import app
from agentgrove.grove import Grove
from agentgrove.shell import (
    Dispatcher,
    FinishNotices,
    StatusLine,
    candidates,
    command_tree,
    read_status,
)
from agentgrove.shell._completion import Kind
from tests.conftest import need

SCRIPTED = '[runtime]\nkind = "scripted"\n'
AGENT_ID = re.compile(r"^[0-9a-f]{12}$", re.MULTILINE)

# -- completion ----------------------------------------------------------------------------

TREE = command_tree(app)
KNOWN: dict[Kind, list[str]] = {
    "role": ["file-writer", "implementer", "planner"],
    "agent": ["3f2a00000001", "3f9b00000002", "a10000000003"],
    "run": ["r1a", "r2b"],
    "workflow": ["feature"],
    "status": ["pending", "executing"],
}


def complete(line: str) -> list[str]:
    words = shlex.split(line)
    prefix = "" if line.endswith(" ") or not line else words.pop()
    return candidates(TREE, words, prefix, KNOWN.__getitem__)


def test_command_names_complete_and_the_shell_refuses_to_nest() -> None:
    assert complete("sp") == ["spawn"]
    assert complete("w") == ["wait", "workflow"]  # not worker: it wants the main thread
    assert complete("workflow s") == ["show"]
    starts = complete("")
    assert {"spawn", "ls", "show", "logs", "cancel", "budget", "help", "exit", "quit"} <= set(
        starts
    )
    assert not {"shell", "up", "worker", "dashboard"} & set(starts)


def test_roles_complete_where_a_role_goes() -> None:
    assert complete("spawn ") == KNOWN["role"]
    assert complete("run i") == ["implementer"]
    # An option's value is skipped when counting positions: the role is still next.
    assert complete("spawn --model haiku f") == ["file-writer"]
    # The task is free text: nothing to offer.
    assert complete("spawn planner ") == []


def test_agent_and_run_ids_complete_by_prefix() -> None:
    assert complete("show 3f") == ["3f2a00000001", "3f9b00000002"]
    assert complete("logs -f a1") == ["a10000000003"]
    assert complete("spawn planner 'a task' --parent 3f9") == ["3f9b00000002"]
    assert complete("wait 3f2a00000001 a") == ["a10000000003"]  # every argument is an id
    assert complete("workflow show r") == ["r1a", "r2b"]
    assert complete("workflow run f") == ["feature"]
    assert complete("ls --status p") == ["pending"]


def test_options_complete_after_a_dash_and_free_values_get_nothing() -> None:
    assert complete("spawn --b") == ["--base", "--budget-usd"]
    assert complete("cancel --") == ["--help", "--tree"]
    assert complete("spawn --model ") == []


def test_only_the_needed_kind_is_read() -> None:
    asked: list[Kind] = []

    def values(kind: Kind) -> Sequence[str]:
        asked.append(kind)
        return KNOWN[kind]

    candidates(TREE, ["show"], "", values)
    candidates(TREE, [], "s", values)
    assert asked == ["agent"]


# -- dispatch -------------------------------------------------------------------------------


def _dispatcher(app_: typer.Typer = app) -> tuple[Dispatcher, list[str]]:
    errors: list[str] = []
    return Dispatcher(app_, write_error=errors.append), errors


def test_a_failing_command_is_one_error_line_and_the_shell_goes_on(grove: Grove) -> None:
    dispatch, errors = _dispatcher()
    outcome = dispatch("spawn no-such-role 'do it'")
    assert outcome.exit_code == 2 and not outcome.quit
    assert errors == [outcome.error]
    assert outcome.error is not None and "unknown role 'no-such-role'" in outcome.error
    assert grove.store.list_agents() == []  # nothing written
    unknown = dispatch("frobnicate")
    assert unknown.exit_code == 2 and "No such command 'frobnicate'" in (unknown.error or "")
    missing = dispatch("show")
    assert missing.exit_code == 2 and "`show --help`" in (missing.error or "")
    quotes = dispatch("spawn planner 'unclosed")
    assert quotes.exit_code == 2 and "quotes" in (quotes.error or "")
    assert len(errors) == 4 and all("\n" not in e for e in errors)
    # ...and the next command works.
    ok = dispatch("spawn planner 'plan it'")
    assert ok.exit_code == 0 and ok.error is None
    assert [a.role for a in grove.store.list_agents()] == ["planner"]


def test_exit_words_help_and_refused_commands(
    grove: Grove, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatch, errors = _dispatcher()
    assert dispatch("exit").quit and dispatch("quit").quit
    assert dispatch("   ") == dispatch("")
    assert dispatch("help").exit_code == 0
    listed = capsys.readouterr().out
    assert "Ctrl-D leaves" in listed
    commands = {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}
    assert {"spawn", "ls", "show", "logs", "cancel", "budget", "workflow"} <= commands
    assert not commands & {"up", "shell", "worker", "dashboard"}  # refused in here
    assert dispatch("help show").exit_code == 0
    assert "Usage: grove show" in capsys.readouterr().out
    nested = dispatch("up --no-shell")
    assert nested.exit_code == 2 and "cannot run inside the shell" in (nested.error or "")
    assert dispatch("grove ls").exit_code == 0  # the habitual prefix is dropped
    assert errors == [nested.error]


def test_crashes_and_exits_of_a_command_become_outcomes() -> None:
    fake = typer.Typer()

    @fake.command()
    def boom() -> None:
        raise RuntimeError("disk on fire")

    @fake.command()
    def bye(code: int) -> None:
        sys.exit(code)

    dispatch, errors = _dispatcher(fake)
    crashed = dispatch("boom")
    assert crashed.exit_code == 1
    assert crashed.error == "grove: internal error: RuntimeError: disk on fire"
    assert dispatch("bye 3").exit_code == 3
    assert errors == [crashed.error]


def test_interrupt_stops_the_running_command_and_only_that() -> None:
    started, never = threading.Event(), threading.Event()
    fake = typer.Typer()

    @fake.command()
    def follow() -> None:
        started.set()
        while not never.wait(0.01):
            pass

    @fake.command()
    def other() -> None:
        pass

    dispatch, errors = _dispatcher(fake)
    assert dispatch.interrupt() is False  # nothing running: nothing happens
    outcomes = []
    runner = threading.Thread(target=lambda: outcomes.append(dispatch("follow")))
    runner.start()
    assert started.wait(10)
    assert dispatch.interrupt() is True
    runner.join(10)
    assert not runner.is_alive()
    assert outcomes[0].exit_code == 130 and errors == ["grove: interrupted"]
    assert dispatch.interrupt() is False
    assert dispatch("other").exit_code == 0


# -- status line -----------------------------------------------------------------------------


def test_status_counts_and_todays_spend(grove: Grove) -> None:
    done = grove.run("planner", "plan")  # the scripted runtime charges $0.0001
    grove.spawn("planner", "later")
    grove.spawn("planner", "later still")
    line = StatusLine(lambda: read_status(grove.store))
    line.refresh()
    assert done.cost_usd > 0
    assert line() == f" executing 0 · pending 2 · spent today ${done.cost_usd:.4f}"


def test_status_line_survives_a_failing_read() -> None:
    def broken() -> object:
        raise OSError("database is locked")

    line = StatusLine(broken)  # type: ignore[arg-type]
    line.refresh()
    assert line() == " status unavailable: OSError: database is locked"


# -- finish notices --------------------------------------------------------------------------


def test_notices_report_each_ending_after_the_shell_opened_once(grove: Grove) -> None:
    before = grove.run("planner", "finished before the shell opened")
    notices = FinishNotices(grove.store)
    notices.start()
    assert notices.poll() == []
    done = grove.run("planner", "plan it")
    queued = grove.spawn("tester", "never runs")
    grove.service.cancel(queued.id)
    lines = notices.poll()
    assert lines == [
        f"{done.id} planner completed (${done.cost_usd:.4f}): {done.output}",
        f"{queued.id} tester cancelled ($0.0000): cancelled: cancelled by request",
    ]
    assert before.id not in "".join(lines)
    assert notices.poll() == []  # each ending once


def test_no_notice_for_what_the_command_itself_showed(grove: Grove) -> None:
    # `run` prints its agent's result, `wait ID` its ending: no second line for them. An agent
    # spawned earlier that ends meanwhile, and was not named, still gets its notice.
    notices = FinishNotices(grove.store)
    notices.start()
    background = grove.spawn("tester", "spawned before")
    waited = grove.spawn("tester", "waited for")
    since = notices.mark()
    ran = grove.run("planner", "run in the foreground")  # as `run planner ...` would
    anyio.run(grove.execute_async, [background.id, waited.id])
    notices.shown_by_command(since, ["wait", waited.id[:6]])
    lines = notices.poll()
    assert [line.split()[0] for line in lines] == [background.id], lines
    assert ran.id not in "".join(lines)


# -- the real shell in tmux ------------------------------------------------------------------


class Tmux:
    """One private tmux server (``tmux -L name``) with one 200x50 window."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout

    def start(self, command: list[str], cwd: Path) -> None:
        """Run ``command``; when it ends the pane says ``exited N`` and stays open."""
        # The trap keeps sh alive when Ctrl-C interrupts a command of the shell under test.
        shell_line = f"trap : INT; {shlex.join(command)}; echo exited $?; exec cat"
        self._tmux(
            "new-session", "-d", "-x", "200", "-y", "50", "-c", str(cwd), "sh", "-c", shell_line
        )

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "0", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "0", "-l", text)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "0")

    def wait_for(self, check: str | Callable[[str], bool], timeout_s: float = 30) -> str:
        """The screen once it contains ``check`` (or ``check(screen)`` holds)."""
        test = check if callable(check) else (lambda s: check in s)
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if test(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"not on screen after {timeout_s}s: {check!r}\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, check=False)


def prompt_line(screen: str) -> str:
    """The last line holding the prompt (the status line sits below it)."""
    return [line for line in screen.splitlines() if line.startswith("grove>")][-1]


def prompt_is_back(screen: str) -> bool:
    lines = [line for line in screen.splitlines() if line.strip()]
    return len(lines) >= 2 and lines[-2].rstrip() == "grove>"


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    need("tmux", shutil.which("tmux") is not None, "apt-get install tmux")
    session = Tmux(f"grove-test-{os.getpid()}-{tmp_path.name}")
    try:
        yield session
    finally:
        session.kill()


@pytest.fixture
def shell_repo(repo: Path) -> Path:
    (repo / "grove.toml").write_text(SCRIPTED)
    Grove.init(repo).close()
    return repo


def start_shell(tmux: Tmux, repo: Path) -> None:
    tmux.start([sys.executable, "-m", "agentgrove", "shell"], repo)
    tmux.wait_for(lambda s: prompt_is_back(s) and " executing " in s)


def test_tmux_spawn_prints_an_id_that_ls_shows(tmux: Tmux, shell_repo: Path) -> None:
    start_shell(tmux, shell_repo)
    tmux.type("spawn file-writer 'write hello.txt'")
    tmux.send("Enter")
    screen = tmux.wait_for(lambda s: AGENT_ID.search(s) is not None and prompt_is_back(s))
    agent_id = AGENT_ID.findall(screen)[0]
    tmux.type("ls")
    tmux.send("Enter")
    screen = tmux.wait_for(
        lambda s: re.search(rf"{agent_id}\s+file-writer\s+pending", s) is not None
    )
    assert "write hello.txt" in screen
    with Grove.open(shell_repo) as grove:
        assert grove.get(agent_id).task == "write hello.txt"


def test_tmux_tab_completes_a_role_and_an_agent_id(tmux: Tmux, shell_repo: Path) -> None:
    with Grove.open(shell_repo) as grove:
        agent_id = grove.spawn("planner", "plan it").id
    start_shell(tmux, shell_repo)
    tmux.type("spawn file-wr")
    tmux.send("Tab")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == "grove> spawn file-writer")
    tmux.type("'then the task'")  # the completion ended the word: no space to type
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == "grove> spawn file-writer 'then the task'")
    tmux.send("C-u")
    tmux.type(f"show {agent_id[:5]}")
    tmux.send("Tab")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == f"grove> show {agent_id}")
    tmux.type("x")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == f"grove> show {agent_id} x")
    tmux.send("BSpace")
    tmux.send("Enter")
    screen = tmux.wait_for(lambda s: "plan it" in s and prompt_is_back(s))
    assert re.search(r"status\s+pending", screen)


def test_tmux_bad_command_history_status_line_and_ctrl_d(tmux: Tmux, shell_repo: Path) -> None:
    start_shell(tmux, shell_repo)
    tmux.type("frobnicate --now")
    tmux.send("Enter")
    screen = tmux.wait_for(lambda s: "frobnicate'" in s and prompt_is_back(s))
    lines = [line for line in screen.splitlines() if line.strip()]
    # The command line, exactly one error line, the prompt again, the status line.
    assert lines[0].startswith("grove> frobnicate --now")
    assert lines[1].startswith("grove: error: No such command 'frobnicate'")
    assert lines[2].rstrip() == "grove>"
    assert len(lines) == 4
    tmux.send("Up")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == "grove> frobnicate --now")
    tmux.send("C-u")
    # Agents spawned elsewhere show in the status line without a key press.
    with Grove.open(shell_repo) as grove:
        grove.spawn("planner", "one")
        grove.spawn("planner", "two")
    tmux.wait_for(" executing 0 · pending 2 · spent today $0.0000")
    # An agent that ends elsewhere gets a line above the prompt.
    with Grove.open(shell_repo) as grove:
        done = grove.run("planner", "finish elsewhere")
    tmux.wait_for(f"{done.id} planner completed")
    tmux.send("C-d")
    tmux.wait_for("exited 0")
    history = (shell_repo / ".grove" / "shell_history").read_text()
    assert "frobnicate --now" in history


def test_tmux_ctrl_c_interrupts_a_command_and_the_shell_goes_on(
    tmux: Tmux, shell_repo: Path
) -> None:
    with Grove.open(shell_repo) as grove:
        agent_id = grove.spawn("planner", "never runs: no worker").id
    start_shell(tmux, shell_repo)
    tmux.type(f"logs -f {agent_id}")  # follows a pending agent: would never end by itself
    tmux.send("Enter")
    tmux.wait_for("agent.spawned")
    tmux.send("C-c")
    tmux.wait_for(lambda s: "grove: interrupted" in s and prompt_is_back(s))
    tmux.type("ls")
    tmux.send("Enter")
    tmux.wait_for(
        lambda s: re.search(rf"{agent_id}\s+planner\s+pending", s) is not None and prompt_is_back(s)
    )
    tmux.send("C-d")
    tmux.wait_for("exited 0")


def test_notices_report_an_ending_that_committed_after_higher_ids_were_read(grove: Grove) -> None:
    # PostgreSQL numbers event rows at insert: an ending may become visible after events with
    # higher ids were read. Simulated here by writing an ending into a gap of the id sequence.
    from sqlalchemy import delete, insert

    from agentgrove.store._core import utcnow
    from agentgrove.store._schema import events

    late = grove.run("planner", "ends late")
    for _ in range(3):
        grove.store.append_event(None, "test.filler", {})
    gap = grove.store.last_event_id() - 1
    with grove.store.engine.begin() as conn:
        conn.execute(delete(events).where(events.c.id == gap))
    notices = FinishNotices(grove.store)
    notices.start()
    early = grove.run("planner", "ends first")
    line = "{a.id} planner completed (${a.cost_usd:.4f}): {a.output}"
    assert notices.poll() == [line.format(a=early)]
    with grove.store.engine.begin() as conn:
        conn.execute(
            insert(events).values(
                id=gap, at=utcnow(), agent_id=late.id, kind="agent.completed", data={}
            )
        )
    assert notices.poll() == [line.format(a=late)]
    assert notices.poll() == []
