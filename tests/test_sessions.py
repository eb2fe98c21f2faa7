"""Which session a retried attempt runs in (agentgrove.sessions, pure) and whether the Claude
runtime has a session on this machine (its CLI config directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgrove.runtime.claude import ClaudeRuntime
from agentgrove.sessions import Child, EarlierWork, plan_session

WORK = EarlierWork(
    branch="grove/abc",
    head_commit="0123456789abcdef0123456789abcdef01234567",
    files=("wip.txt",),
    children=(Child("c1", "implementer", "pending"),),
)


def test_a_first_attempt_starts_fresh_with_the_task() -> None:
    plan = plan_session("do it", attempt=1, session_id=None, session_here=False, earlier=None)
    assert (plan.resume, plan.prompt) == (None, "do it")


def test_a_retry_resumes_a_session_this_machine_has() -> None:
    plan = plan_session("do it", attempt=2, session_id="s1", session_here=True, earlier=WORK)
    assert (plan.resume, plan.prompt) == ("s1", "do it")


@pytest.mark.parametrize("session_id", ["s1", None])
def test_a_retry_without_the_session_here_starts_fresh_told_what_is_committed(
    session_id: str | None,
) -> None:
    plan = plan_session("do it", attempt=3, session_id=session_id, session_here=False, earlier=WORK)
    assert plan.resume is None
    assert plan.prompt.startswith("do it\n\n---\nThis is attempt 3 of this task.")
    assert "grove/abc (commit 0123456789ab)" in plan.prompt and "wip.txt" in plan.prompt
    assert "- c1 (implementer): pending" in plan.prompt and "do not spawn them again" in plan.prompt


def test_a_retry_of_an_attempt_that_committed_nothing_says_so() -> None:
    nothing = EarlierWork(branch="grove/abc", head_commit="0" * 40)
    plan = plan_session("do it", attempt=2, session_id=None, session_here=False, earlier=nothing)
    assert "It committed no changes" in plan.prompt and "started these agents" not in plan.prompt


def test_the_claude_runtime_finds_a_session_in_its_config_dir_only(tmp_path: Path) -> None:
    config = tmp_path / "claude"
    (config / "projects" / "-some-worktree").mkdir(parents=True)
    (config / "projects" / "-some-worktree" / "abc-123.jsonl").write_text("{}\n")
    here = ClaudeRuntime(env={"CLAUDE_CONFIG_DIR": str(config)})
    assert here.has_session("abc-123")
    assert not here.has_session("abc-124")
    # Not a session id: never a path, never a glob.
    assert not here.has_session("../-some-worktree/abc-123")
    assert not here.has_session("*")
    elsewhere = ClaudeRuntime(env={"CLAUDE_CONFIG_DIR": str(tmp_path / "other")})
    assert not elsewhere.has_session("abc-123")
