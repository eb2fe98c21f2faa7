"""The file tools' paths are checked as the CLI will read them: the CLI expands a leading ``~``
to the worker's home, so ``~/x`` is never "a folder named ~ inside the worktree"."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import PermissionResultAllow

from agentgrove.runtime.claude import _can_use_tool
from agentgrove.testing import ModelServer, Script, Turn, read_file, tool_use
from tests.conftest import run_cli
from tests.test_confinement import _recording

SECRET = "HOME-SECRET-7f3a"


def _allowed(worktree: Path, name: str, tool_input: dict[str, Any]) -> bool:
    decision = _can_use_tool(worktree, [name], name, tool_input, "read-only")
    return isinstance(decision, PermissionResultAllow)


def test_paths_through_the_home_directory_are_refused(tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    outside = [
        ("Read", {"file_path": "~/.pgpass"}),
        ("Read", {"file_path": "~root/.npmrc"}),
        ("Read", {"file_path": "~"}),
        ("Grep", {"pattern": "x", "path": "~/.ssh"}),
        ("Grep", {"pattern": "x", "path": "~"}),
        ("Glob", {"pattern": "*", "path": "~"}),
        ("Glob", {"pattern": "~/*"}),
        ("Glob", {"pattern": "{..,src}/*"}),
        ("LS", {"path": "~"}),
    ]
    inside = [
        ("Read", {"file_path": "notes~.txt"}),
        ("Read", {"file_path": "src/a~b.py"}),
        ("Glob", {"pattern": "**/*~"}),
    ]
    assert [call for call in outside if _allowed(worktree, *call)] == []
    assert [call for call in inside if not _allowed(worktree, *call)] == []


@pytest.mark.e2e
def test_a_reviewer_reads_nothing_of_home_through_a_tilde(repo: Path) -> None:
    """Before: Grep with path ``~`` returned the file's lines and Glob listed the home (the
    check took ``~`` for a folder of the worktree; the CLI expanded it)."""
    home = Path(os.environ["HOME"])
    (home / ".pgpass").write_text(f"db:5432:*:grove:{SECRET}\n")
    turns = [
        read_file("~/.pgpass"),
        Turn([tool_use("Grep", {"path": "~", "pattern": "HOME-SECRET", "output_mode": "content"})]),
        Turn([tool_use("Glob", {"pattern": "*", "path": "~"})]),
        Turn([tool_use("Glob", {"pattern": "~/.*"})]),
    ]
    steps, seen = _recording(turns)
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(Script().on(role="reviewer", turns=steps)) as server:
        result = run_cli("run", "reviewer", "look around", "--json", cwd=repo, env=server.env())
    agent = json.loads(result.stdout)
    assert agent["status"] == "completed", agent
    assert len(seen) == 4, seen
    assert not [s for s in seen if SECRET in s], seen
    assert [s for s in seen if "outside this agent's worktree" not in s] == [], seen
