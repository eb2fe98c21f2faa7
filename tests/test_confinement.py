"""Confinement on a default install: a role's policy decides every call it covers (the CLI's
own permission mode approves nothing behind grove's back), an agent with Bash never starts
without the sandbox unless the user said ``sandbox = "off"``, and inside the sandbox an agent's
Bash reaches nothing of the worker's (its environment, the main ``.git``, the grove home, the
database) and leaves nothing running."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentgrove.runtime.claude import sandbox_available
from agentgrove.testing import ModelRequest, ModelServer, Script, Turn, bash, say, tool_use
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
    for name in ("touched.txt", "made-dir", "copied.txt", "written.txt"):
        assert not (worktree / name).exists(), name
    assert _committed_files(repo, agent) == []


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
