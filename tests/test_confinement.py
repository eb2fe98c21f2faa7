"""Confinement on a default install: a role's policy decides every call it covers (the CLI's
own permission mode approves nothing behind grove's back), an agent with Bash never starts
without the sandbox unless the user said ``sandbox = "off"``, and inside the sandbox an agent's
Bash reaches nothing of the worker's (its environment, the main ``.git``, the grove home, the
database) and leaves nothing running."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from agentgrove.runtime.claude import sandbox_available
from agentgrove.testing import (
    ModelRequest,
    ModelServer,
    Script,
    Turn,
    bash,
    say,
    tool_use,
    write_file,
)
from agentgrove.workspaces import run_git
from tests.conftest import run_cli

needs_sandbox = pytest.mark.skipif(not sandbox_available(), reason="needs bubblewrap and socat")


def _results_say(request: ModelRequest) -> Turn:
    """The last turn: repeat every tool result the model saw, so the test can read them."""
    return say("RESULTS " + json.dumps(request.tool_results))


def _recording(turns: list[Any]) -> tuple[list[Any], list[str]]:
    """``turns`` as script steps that collect each tool result, then a closing ``say``; the
    list the results land in (in call order)."""
    seen: list[str] = []

    def after(turn: Any) -> Any:
        def step(request: ModelRequest) -> Any:
            seen.extend(request.tool_results)
            return turn

        return step

    return [turns[0], *map(after, [*turns[1:], say("done")])], seen


def _tool_results(agent: dict[str, Any]) -> list[str]:
    output = agent.get("output") or ""
    assert output.startswith("RESULTS "), output
    results: list[str] = json.loads(output.removeprefix("RESULTS "))
    return results


def _committed_files(repo: Path, agent: dict[str, Any]) -> list[str]:
    """Files changed on the agent's branch since the repository's first commit."""
    branch = agent["workspace"]["branch"]
    root = run_git(["rev-list", "--max-parents=0", "HEAD"], repo).split()[0]
    return run_git(["diff", "--name-only", root, branch], repo).split()


# -- item 3: a read-only role is read-only --------------------------------------------------

WRITERS = [
    "touch touched.txt",
    "mkdir made-dir",
    "sed -i s/test/HACKED/ README.md",
    "cp README.md copied.txt",
    "rm README.md",
    # Readers with an option that writes or runs a program.
    "sort -o sorted.txt README.md",
    "uniq README.md uniq.txt",
    "tree -o tree.txt",
    "git diff --output=diff.txt HEAD",
    "git log --output=log.txt -1",
    "find . -fprintf found.txt %p",
    "rg --pre touch x README.md",
    "git grep --open-files-in-pager=touch test",
    "git branch planted-branch",
]
_REFUSALS = ("read-only role", "not available to this role", "No such tool")


@pytest.mark.e2e
def test_a_reviewers_bash_and_write_tools_change_nothing(repo: Path) -> None:
    """The CLI's acceptEdits mode approves touch/mkdir/sed -i/cp/rm in the cwd itself; grove's
    policy must still decide them (and Write/Edit, which a reviewer does not have)."""
    turns: list[Any] = [bash(command) for command in WRITERS]
    turns += [
        Turn([tool_use("Write", {"file_path": "written.txt", "content": "x"})]),
        Turn(
            [
                tool_use(
                    "Edit",
                    {"file_path": "README.md", "old_string": "test", "new_string": "EDITED"},
                )
            ]
        ),
    ]
    steps, seen = _recording(turns)
    script = Script().on(role="reviewer", turns=steps)
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli("run", "reviewer", "review", "--json", cwd=repo, env=server.env())
        server.assert_done()
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    results = seen
    assert len(results) == len(turns), results
    calls = list(zip([*WRITERS, "Write", "Edit"], results, strict=True))
    allowed = [(c, t) for c, t in calls if not any(w in t for w in _REFUSALS)]
    assert allowed == [], allowed
    worktree = Path(agent["workspace"]["path"])
    assert (worktree / "README.md").read_text() == "# test repo\n"
    written = ["sorted.txt", "uniq.txt", "tree.txt", "diff.txt", "log.txt", "found.txt", "x"]
    for name in ("touched.txt", "made-dir", "copied.txt", "written.txt", *written):
        assert not (worktree / name).exists(), name
    assert _committed_files(repo, agent) == []
    assert "planted-branch" not in run_git(["branch"], repo)


@pytest.mark.e2e
def test_a_role_without_bash_or_write_is_refused_each(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        '[roles.quiet]\ndescription = "no bash"\nmodel = "claude-sonnet-4-5"\n'
        'system_prompt = "look"\ntools = ["Read", "Write", "Bash"]\nbash = "none"\n'
        '[roles.nowrite]\ndescription = "no write"\nmodel = "claude-sonnet-4-5"\n'
        'system_prompt = "look"\ntools = ["Read", "Bash", "Edit"]\n'
    )
    script = (
        Script()
        .on(role="quiet", turns=[bash("touch quiet.txt"), _results_say])
        .on(
            role="nowrite",
            turns=[
                Turn([tool_use("Write", {"file_path": "nowrite.txt", "content": "x"})]),
                _results_say,
            ],
        )
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        quiet = json.loads(
            run_cli("run", "quiet", "go", "--json", cwd=repo, env=server.env()).stdout
        )
        nowrite = json.loads(
            run_cli("run", "nowrite", "go", "--json", cwd=repo, env=server.env()).stdout
        )
        server.assert_done()
    [quiet_result] = _tool_results(quiet)
    assert "may not run commands" in quiet_result
    [nowrite_result] = _tool_results(nowrite)
    assert "nowrite.txt" not in os.listdir(nowrite["workspace"]["path"]), nowrite_result
    assert _committed_files(repo, quiet) == [] and _committed_files(repo, nowrite) == []


# -- item 2: no Bash without the sandbox unless the user said so -----------------------------


def _path_without_sandbox(tmp_path: Path) -> str:
    """A PATH with every program of this one but bubblewrap and socat (symlinks in one folder),
    for running grove as on a machine without them."""
    folder = tmp_path / "bin-without-bwrap"
    if folder.is_dir():
        return str(folder)
    folder.mkdir()
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            link = folder / name
            if name in ("bwrap", "socat") or link.exists() or link.is_symlink():
                continue
            link.symlink_to(Path(entry, name))
    return str(folder)


def test_no_sandbox_check_follows_path(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = "from agentgrove.runtime.claude import sandbox_available as s; print(s())"
    env = {**os.environ, "PATH": _path_without_sandbox(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.e2e
def test_an_agent_with_bash_does_not_start_without_the_sandbox(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran-unconfined"
    script = Script().on(role="tester", turns=[bash(f"touch {marker}"), say("ran")], optional=True)
    no_bwrap = {"PATH": _path_without_sandbox(tmp_path)}
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        result = run_cli(
            "run", "tester", "run it", "--json", cwd=repo, env={**server.env(), **no_bwrap}
        )
        assert server.requests == [], "the CLI started"
    assert result.stdout, result.stderr
    agent = json.loads(result.stdout)
    assert result.returncode == 1
    assert agent["status"] == "failed" and agent["error_kind"] == "permanent"
    assert "apt-get install bubblewrap socat" in agent["error"]
    assert '[runtime] sandbox = "off"' in agent["error"] and "\n" not in agent["error"]
    assert agent["attempt"] <= 1 and not marker.exists()


@pytest.mark.e2e
def test_a_role_without_bash_and_sandbox_off_run_without_bwrap(repo: Path, tmp_path: Path) -> None:
    no_bwrap = {"PATH": _path_without_sandbox(tmp_path)}
    script = (
        Script()
        .on(role="file-writer", turns=[write_file("a.txt", "a\n"), say("wrote a.txt")])
        .on(role="tester", turns=[bash("echo ran > b.txt"), say("ran")])
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        env = {**server.env(), **no_bwrap}
        writer = run_cli("run", "file-writer", "write a.txt", "--json", cwd=repo, env=env)
        assert json.loads(writer.stdout)["status"] == "completed", writer.stdout + writer.stderr
        # The user's own choice: Bash unconfined.
        (repo / "grove.toml").write_text('[runtime]\nsandbox = "off"\n')
        tester = run_cli("run", "tester", "run it", "--json", cwd=repo, env=env)
        server.assert_done()
    assert json.loads(tester.stdout)["status"] == "completed", tester.stdout + tester.stderr


@pytest.mark.e2e
def test_required_refuses_even_a_role_without_bash(repo: Path, tmp_path: Path) -> None:
    (repo / "grove.toml").write_text('[runtime]\nsandbox = "required"\n')
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(Script()) as server:
        env = {**server.env(), "PATH": _path_without_sandbox(tmp_path)}
        result = run_cli("run", "file-writer", "write a.txt", "--json", cwd=repo, env=env)
    agent = json.loads(result.stdout)
    assert agent["error_kind"] == "permanent" and "bubblewrap" in agent["error"]


@pytest.mark.e2e
def test_demo_runs_without_bwrap_and_says_it_is_unconfined(tmp_path: Path) -> None:
    env = {"PATH": _path_without_sandbox(tmp_path), "COLUMNS": "200"}
    result = run_cli("demo", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "run unconfined" in result.stdout
    assert "tester said: Ran greet.py: Hello, Grove! — PASS" in result.stdout


@pytest.mark.e2e
@needs_sandbox
def test_demo_with_bwrap_is_confined(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unconfined" not in result.stdout
    # Without --keep the temporary repository is gone afterwards.
    repo = Path(re.search(r"demo repository: (\S+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert not repo.exists() and "removed the demo repository" in result.stdout


def test_doctor_reports_the_sandbox(repo: Path, tmp_path: Path) -> None:
    missing = run_cli("doctor", cwd=repo, env={"PATH": _path_without_sandbox(tmp_path)})
    assert missing.returncode == 1
    [line] = [ln for ln in missing.stdout.splitlines() if "sandbox" in ln]
    assert line.startswith("FAIL") and "apt-get install bubblewrap socat" in line, line
    assert '[runtime] sandbox = "off"' in line
    (repo / "grove.toml").write_text('[runtime]\nsandbox = "off"\n')
    off = run_cli("doctor", cwd=repo, env={"PATH": _path_without_sandbox(tmp_path)})
    assert off.returncode == 0 and "WARN  sandbox" in off.stdout and "unconfined" in off.stdout


@needs_sandbox
def test_doctor_is_happy_with_bwrap(repo: Path) -> None:
    found = run_cli("doctor", cwd=repo)
    assert found.returncode == 0, found.stdout + found.stderr
    assert "ok    sandbox: bubblewrap and socat found" in found.stdout


# -- item 2: what an agent's Bash can still reach inside the sandbox -------------------------


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.e2e
@needs_sandbox
def test_sandboxed_bash_reaches_nothing_of_the_worker(repo: Path) -> None:
    """Per THREATS.md: the worker's environment through /proc, a hook in the main .git, the
    SQLite database (read or write), the main checkout, PostgreSQL on loopback, and a
    background process that dropped grove's markers and called setsid."""
    home = repo / ".grove"
    secret = "s3cret-of-the-worker"
    sleeper = "987651"
    attacks = {
        "environ": "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -a PROBE_SECRET",
        "hook": f"echo 'touch /tmp/pwned' > {repo}/.git/hooks/post-commit && echo HOOK_WRITTEN",
        # $((6*7)): the marker never appears in the transcript that grove writes to the database.
        "db-write": f"echo PLANTED_$((6*7))_ROW >> {home}/grove.db",
        "db-read": f"head -c 15 {home}/grove.db",
        "checkout": f"echo x > {repo}/planted.txt && echo CHECKOUT_WRITTEN",
        "postgres": "timeout 5 bash -c 'echo > /dev/tcp/127.0.0.1/5432' && echo PG_REACHED",
        "background": (
            f"(env -u GROVE_AGENT_ID -u GROVE_AGENT_ATTEMPT setsid sleep {sleeper} "
            ">/dev/null 2>&1 &) ; echo BACKGROUND_STARTED"
        ),
    }
    steps, seen = _recording([bash(command) for command in attacks.values()])
    script = Script().on(role="tester", turns=steps)
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        env = {**server.env(), "GROVE_PROBE_SECRET": secret}
        result = run_cli("run", "tester", "attack", "--json", cwd=repo, env=env)
        server.assert_done()
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", result.stderr
    results = dict(zip(attacks, seen, strict=True))
    assert secret not in results["environ"], results["environ"]
    assert "HOOK_WRITTEN" not in results["hook"]
    assert not (repo / ".git/hooks/post-commit").exists()
    # Denied reads put an empty tmpfs over the grove home: a write lands there, not in the file.
    assert b"PLANTED_42_ROW" not in (home / "grove.db").read_bytes(), results["db-write"]
    assert "SQLite format" not in results["db-read"], results["db-read"]
    assert "CHECKOUT_WRITTEN" not in results["checkout"] and not (repo / "planted.txt").exists()
    if _listening(5432):  # the machine's PostgreSQL, when it runs one
        assert "PG_REACHED" not in results["postgres"], results["postgres"]
    assert "BACKGROUND_STARTED" in results["background"]
    assert _processes_with(f"sleep\0{sleeper}") == [], "a background process outlived the run"
    assert run_cli("ls", cwd=repo).returncode == 0, "the database still works"
