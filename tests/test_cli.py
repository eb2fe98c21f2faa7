"""The ``grove`` command, driven as a user drives it: the real CLI in a subprocess, a real git
repository, the real SQLite database and, for agent runs, the real Claude Code CLI talking to the
scripted model server.

Agent runs cost a few seconds each, so the read-only commands (show, ls, logs, wait, diff) share
one module-scoped grove holding a completed and a failed agent (:func:`finished`); the tests that
change state (gc, cancel, worker) bring their own.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentgrove.testing import (
    Fault,
    ModelRequest,
    ModelServer,
    Script,
    Step,
    file_writer_script,
    say,
    write_file,
)
from agentgrove.workspaces import init_repo
from tests.conftest import run_cli

BUILTIN_ROLES = [
    "spec-writer",
    "planner",
    "implementer",
    "tester",
    "reviewer",
    "file-writer",
    "integrator",
]
AGENT_KEYS = {
    "id",
    "role",
    "status",
    "parent_id",
    "task",
    "model",
    "output",
    "error",
    "error_kind",
    "attempt",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "duration_ms",
    "session_id",
    "depth",
    "workflow_run_id",
    "node_key",
    "created_at",
    "started_at",
    "finished_at",
    "workspace",
}
WORKSPACE_KEYS = {"path", "branch", "base_ref", "head_commit", "files_changed", "state"}
SHOW_ONLY_KEYS = {"tree", "children", "questions"}  # `show --json` adds these to the agent object
HELLO_TASK = "Create hello.txt containing the line hi"


# --- helpers ---------------------------------------------------------------------------------


def grove(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``run_cli`` with a wide terminal, so that rich never wraps or truncates table cells."""
    return run_cli(*args, cwd=cwd, env={"COLUMNS": "200", **(env or {})}, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc).stdout)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def show(repo: Path, agent_id: str) -> dict[str, Any]:
    record: dict[str, Any] = as_json(grove("show", agent_id, "--json", cwd=repo))
    return record


def only_agent(repo: Path) -> dict[str, Any]:
    agents = as_json(grove("ls", "--json", cwd=repo))
    assert len(agents) == 1, agents
    record: dict[str, Any] = agents[0]
    return record


def db_base_ref(repo: Path, agent_id: str) -> str | None:
    """The agent's base commit as stored (``to_json`` shows it only once a workspace exists)."""
    with closing(sqlite3.connect(repo / ".grove" / "grove.db")) as conn:
        row = conn.execute("select base_ref from agents where id = ?", (agent_id,)).fetchone()
    assert row is not None
    value: str | None = row[0]
    return value


def unique_prefix(agent_id: str, others: list[str]) -> str:
    """The shortest prefix of ``agent_id`` (at least 4 characters) no other id starts with."""
    for n in range(4, len(agent_id) + 1):
        if not any(o.startswith(agent_id[:n]) for o in others if o != agent_id):
            return agent_id[:n]
    return agent_id


@pytest.fixture
def inited(repo: Path) -> Path:
    """``repo`` after ``grove init``."""
    ok(grove("init", cwd=repo))
    return repo


# --- init --------------------------------------------------------------------------------------


def test_init_creates_home_and_keeps_git_status_clean(repo: Path) -> None:
    proc = ok(grove("init", cwd=repo))

    assert f"initialised grove at {repo / '.grove'}" in proc.stdout
    assert (repo / ".grove" / "grove.db").is_file()
    assert "/.grove/" in (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_init_is_idempotent_and_keeps_agents(repo: Path) -> None:
    ok(grove("init", cwd=repo))
    agent_id = ok(grove("spawn", "file-writer", "write a.txt", cwd=repo)).stdout.strip()

    ok(grove("init", cwd=repo))

    assert only_agent(repo)["id"] == agent_id
    exclude = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert exclude.count("/.grove/") == 1
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_init_outside_git_warns_loudly(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not any((p / ".git").exists() for p in [plain, *plain.parents])

    proc = ok(grove("init", cwd=plain))

    assert "WARNING" in proc.stderr
    assert "not a git repository" in " ".join(proc.stderr.split())
    assert (plain / ".grove" / "grove.db").is_file()


# --- spawn, ls, cancel (no model needed) ---------------------------------------------------------


def test_spawn_prints_id_and_agent_is_pending(inited: Path) -> None:
    proc = ok(grove("spawn", "file-writer", "write a.txt", cwd=inited))
    agent_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", agent_id), proc.stdout

    agent = only_agent(inited)
    assert agent["id"] == agent_id
    assert agent["status"] == "pending"
    assert agent["role"] == "file-writer"
    assert agent["task"] == "write a.txt"
    assert agent["model"] == "claude-haiku-4-5"  # the role's model
    assert agent["parent_id"] is None
    assert agent["attempt"] == 0
    assert agent["workspace"] is None
    assert agent["started_at"] is None

    pending = as_json(grove("ls", "--status", "pending", "--json", cwd=inited))
    assert [a["id"] for a in pending] == [agent_id]
    assert as_json(grove("ls", "--status", "completed", "--json", cwd=inited)) == []
    table = ok(grove("ls", cwd=inited)).stdout
    assert agent_id in table
    assert "pending" in table


def test_spawn_json_prints_the_record(inited: Path) -> None:
    record = as_json(grove("spawn", "--json", "reviewer", "review main", cwd=inited))
    assert set(record) >= AGENT_KEYS
    assert record["status"] == "pending"
    assert only_agent(inited)["id"] == record["id"]


def test_spawn_parent_and_model(inited: Path) -> None:
    parent = ok(grove("spawn", "planner", "plan it", cwd=inited)).stdout.strip()
    child = ok(
        grove(
            "spawn",
            "implementer",
            "do step 1",
            "--parent",
            parent[:6],  # a prefix is enough
            "--model",
            "claude-opus-4-1",
            cwd=inited,
        )
    ).stdout.strip()

    record = show(inited, child)
    assert record["parent_id"] == parent
    assert record["model"] == "claude-opus-4-1"
    assert record["depth"] == 1
    assert record["children"] == []
    parent_record = show(inited, parent)
    assert parent_record["parent_id"] is None
    assert parent_record["depth"] == 0
    assert parent_record["children"] == [child]
    assert parent_record["tree"] == {"agents": 2, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0}

    # A --parent child starts only after its parent completed: cancelling the parent fails it.
    ok(grove("cancel", parent, cwd=inited))
    record = show(inited, child)
    assert record["status"] == "failed"
    assert record["error_kind"] == "dependency_failed"
    assert parent in record["error"]


def test_spawn_base_is_resolved_to_a_commit(inited: Path) -> None:
    first = git(inited, "rev-parse", "HEAD")
    (inited / "second.txt").write_text("2\n")
    git(inited, "add", "second.txt")
    git(inited, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "second")
    second = git(inited, "rev-parse", "HEAD")
    git(inited, "tag", "v1", first)

    by_rel = ok(grove("spawn", "file-writer", "a", "--base", "HEAD~1", cwd=inited)).stdout.strip()
    by_tag = ok(grove("spawn", "file-writer", "b", "--base", "v1", cwd=inited)).stdout.strip()
    default = ok(grove("spawn", "file-writer", "c", cwd=inited)).stdout.strip()

    assert db_base_ref(inited, by_rel) == first
    assert db_base_ref(inited, by_tag) == first  # the tag's commit, not the name "v1"
    assert db_base_ref(inited, default) == second


def test_cancel_pending_agent_then_cancel_again(inited: Path) -> None:
    agent_id = ok(grove("spawn", "file-writer", "write a.txt", cwd=inited)).stdout.strip()

    first = ok(grove("cancel", agent_id, cwd=inited))
    assert first.stdout.strip() == f"{agent_id} cancelled"
    record = show(inited, agent_id)
    assert record["status"] == "cancelled"
    assert record["error_kind"] == "cancelled"
    assert record["finished_at"] is not None

    second = ok(grove("cancel", agent_id[:5], cwd=inited))
    assert "already cancelled" in second.stdout
    assert show(inited, agent_id)["status"] == "cancelled"


def test_wait_timeout_on_pending_agent_says_still_running(inited: Path) -> None:
    agent_id = ok(grove("spawn", "file-writer", "write a.txt", cwd=inited)).stdout.strip()

    proc = grove("wait", agent_id, "--timeout", "0.3", cwd=inited, timeout=60)

    assert "still running" in proc.stderr
    assert show(inited, agent_id)["status"] == "pending"


def test_wait_timeout_exits_1(inited: Path) -> None:
    agent_id = ok(grove("spawn", "file-writer", "write a.txt", cwd=inited)).stdout.strip()
    assert grove("wait", agent_id, "--timeout", "0.3", cwd=inited, timeout=60).returncode == 1


def test_ls_and_show_print_task_text_verbatim(inited: Path) -> None:
    task = "fix the [/] bug and the [bold] tag"
    agent_id = ok(grove("spawn", "file-writer", task, cwd=inited)).stdout.strip()

    assert task in ok(grove("ls", cwd=inited)).stdout
    assert task in ok(grove("show", agent_id, cwd=inited)).stdout


def test_roles_lists_builtin_and_configured_roles(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        "[roles.docs-writer]\n"
        'description = "Writes the documentation."\n'
        'model = "claude-haiku-4-5"\n'
        'system_prompt = "You write documentation."\n'
        'tools = ["Read", "Write"]\n'
        "\n"
        "[roles.tester]\n"
        "max_turns = 7\n"
    )

    out = ok(grove("roles", cwd=repo)).stdout

    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert set(rows) == {*BUILTIN_ROLES, "docs-writer"}
    assert rows["docs-writer"][1:3] == ["claude-haiku-4-5", "Read,Write"]
    assert rows["tester"][3] == "7"  # max turns overridden field by field
    assert rows["implementer"][3] == "50"


# --- agent runs -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_dogfood_1_file_writer_writes_commits_and_records(inited: Path) -> None:
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        proc = grove("run", "file-writer", HELLO_TASK, cwd=inited, env=server.env())
        server.assert_done()
    ok(proc)
    agent = only_agent(inited)
    agent_id = agent["id"]
    assert proc.stdout.startswith(f"completed {agent_id} file-writer")

    worktree = inited / ".grove" / "worktrees" / agent_id
    assert (worktree / "hello.txt").read_text() == "hi\n"
    assert not (inited / "hello.txt").exists()
    assert git(inited, "status", "--porcelain", "--untracked-files=all") == ""

    branch = f"grove/{agent_id}"
    message = git(inited, "log", "-1", "--format=%B", branch)
    assert f"Grove-Agent: {agent_id}" in message.splitlines()
    assert "Grove-Role: file-writer" in message.splitlines()
    assert git(inited, "show", f"{branch}:hello.txt") == "hi"

    record = show(inited, agent_id)
    assert record["status"] == "completed"
    assert record["error"] is None
    assert record["error_kind"] is None
    assert record["output"] == "Created hello.txt"
    assert record["tokens_in"] > 0
    assert record["tokens_out"] > 0
    assert record["cost_usd"] > 0
    assert record["duration_ms"] > 0
    ws = record["workspace"]
    assert ws["path"] == str(worktree)
    assert ws["branch"] == branch
    assert ws["head_commit"] == git(inited, "rev-parse", branch)
    assert ws["base_ref"] == git(inited, "rev-parse", "main")
    assert ws["files_changed"] == ["hello.txt"]
    assert ws["state"] == "active"


@pytest.mark.e2e
def test_worker_drain_runs_a_spawned_agent_and_exits_0(inited: Path) -> None:
    agent_id = ok(grove("spawn", "file-writer", HELLO_TASK, cwd=inited)).stdout.strip()

    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        proc = grove("worker", "--drain", cwd=inited, env=server.env())
        server.assert_done()

    ok(proc)
    assert "stopped (1 agent run)" in proc.stderr
    record = show(inited, agent_id)
    assert record["status"] == "completed"
    assert record["attempt"] == 1
    assert (inited / ".grove" / "worktrees" / agent_id / "hello.txt").read_text() == "hi\n"


@pytest.mark.e2e
def test_gc_removes_finished_worktrees_but_keeps_branches(inited: Path) -> None:
    with ModelServer(file_writer_script("hello.txt", "hi\n")) as server:
        ok(grove("run", "file-writer", HELLO_TASK, cwd=inited, env=server.env()))
    agent_id = only_agent(inited)["id"]
    worktree = inited / ".grove" / "worktrees" / agent_id
    assert worktree.is_dir()
    pending = ok(grove("spawn", "file-writer", "later", cwd=inited)).stdout.strip()

    assert ok(grove("gc", cwd=inited)).stdout.splitlines()[0] == (
        "removed 1 worktree(s) of finished agents"
    )

    assert not worktree.exists()
    assert str(worktree) not in git(inited, "worktree", "list", "--porcelain")
    assert git(inited, "branch", "--list", f"grove/{agent_id}") != ""
    assert git(inited, "show", f"grove/{agent_id}:hello.txt") == "hi"
    assert show(inited, agent_id)["workspace"]["state"] == "removed"
    assert show(inited, pending)["status"] == "pending"
    assert ok(grove("gc", cwd=inited)).stdout.splitlines()[0] == (
        "removed 0 worktree(s) of finished agents"
    )


def _reported_usage(repo: Path, agent_id: str) -> tuple[int, int, float]:
    """Sum over attempts of what the Claude CLI reported in each attempt's ResultMessage."""
    tokens_in = tokens_out = 0
    cost = 0.0
    with closing(sqlite3.connect(repo / ".grove" / "grove.db")) as conn:
        rows = conn.execute(
            "select message from transcripts where agent_id = ? and kind = 'ResultMessage'",
            (agent_id,),
        ).fetchall()
    for (raw,) in rows:
        message = json.loads(raw)
        usage = message.get("usage") or {}
        tokens_in += sum(
            int(usage.get(k) or 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        tokens_out += int(usage.get("output_tokens") or 0)
        cost += float(message.get("total_cost_usd") or 0.0)
    assert len(rows) == 2, "one ResultMessage per attempt"
    return tokens_in, tokens_out, cost


@pytest.mark.e2e
def test_retried_attempt_tokens_and_cost_are_counted(inited: Path) -> None:
    (inited / "grove.toml").write_text("[worker]\nretry_base_s = 0\n")
    faulted = threading.Event()

    def model(request: ModelRequest) -> Step:
        """Write a.txt, then fail once with a 500; after that, finish (whether or not the
        retry resumes the first attempt's session)."""
        if faulted.is_set():
            return say("Created a.txt")
        if request.turn_index == 0:
            return write_file("a.txt", "a\n")
        faulted.set()
        return Fault.status(500)

    script = Script.from_handler(model)
    with ModelServer(script) as server:
        # The CLI would retry the 500 itself; grove is to see it and retry the attempt.
        env = {**server.env(), "CLAUDE_CODE_MAX_RETRIES": "0"}
        record = as_json(grove("run", "--json", "file-writer", "write a.txt", cwd=inited, env=env))
        server.assert_done()
    assert faulted.is_set()
    assert record["status"] == "completed"
    assert record["attempt"] == 2

    tokens_in, tokens_out, cost = _reported_usage(inited, record["id"])
    assert (record["tokens_in"], record["tokens_out"]) == (tokens_in, tokens_out)
    assert record["cost_usd"] == pytest.approx(cost)


@dataclass(frozen=True)
class Finished:
    """A grove holding one completed and one permanently failed agent, both run by ``run``."""

    repo: Path
    done: dict[str, Any]
    failed: dict[str, Any]
    failed_exit: int

    @property
    def ids(self) -> list[str]:
        return [self.done["id"], self.failed["id"]]


DOOMED_TASK = "Write doomed.txt, then carry on"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    # Module scope runs before the function-scoped autouse environment fixture: isolate here.
    with pytest.MonkeyPatch.context() as mp:
        for var in ("GROVE_HOME", "GROVE_DB_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            mp.delenv(var, raising=False)
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        repo = tmp_path_factory.mktemp("finished") / "repo"
        init_repo(repo, {"README.md": "# finished\n"})
        ok(grove("init", cwd=repo))
        script = (
            Script()
            .on(
                role="file-writer",
                prompt_contains="hello.txt",
                times=1,
                turns=[write_file("hello.txt", "hi\n"), say("Created hello.txt")],
            )
            .on(
                role="file-writer",
                prompt_contains="doomed.txt",
                times=1,
                # The model API refuses the request mid-run: a permanent error (no retry).
                turns=[write_file("doomed.txt", "x\n"), Fault.status(400)],
            )
        )
        with ModelServer(script) as server:
            done = grove("run", "--json", "file-writer", HELLO_TASK, cwd=repo, env=server.env())
            failed = grove("run", "--json", "file-writer", DOOMED_TASK, cwd=repo, env=server.env())
            server.assert_done()
    yield Finished(
        repo=repo,
        done=as_json(done),
        failed=json.loads(failed.stdout),
        failed_exit=failed.returncode,
    )


@pytest.mark.e2e
class TestFinishedAgents:
    def test_run_json_prints_the_final_record(self, finished: Finished) -> None:
        assert finished.done["status"] == "completed"
        assert finished.done["task"] == HELLO_TASK
        assert finished.done["workspace"]["files_changed"] == ["hello.txt"]
        shown = show(finished.repo, finished.done["id"])
        assert {k: v for k, v in shown.items() if k not in SHOW_ONLY_KEYS} == finished.done

    def test_run_with_permanent_model_failure_records_failed(self, finished: Finished) -> None:
        record = show(finished.repo, finished.failed["id"])
        assert {k: v for k, v in record.items() if k not in SHOW_ONLY_KEYS} == finished.failed
        assert record["status"] == "failed"
        assert record["error_kind"] == "permanent"
        assert "400" in record["error"]
        assert record["attempt"] == 1  # permanent: not retried
        assert record["finished_at"] is not None

    def test_run_of_failed_agent_exits_1(self, finished: Finished) -> None:
        assert finished.failed_exit == 1

    def test_show_json_has_every_documented_key(self, finished: Finished) -> None:
        record = show(finished.repo, finished.done["id"])
        assert set(record) >= AGENT_KEYS | SHOW_ONLY_KEYS
        assert set(record["workspace"]) >= WORKSPACE_KEYS
        assert record["children"] == []
        assert record["tree"] == {
            "agents": 1,
            "tokens_in": record["tokens_in"],
            "tokens_out": record["tokens_out"],
            "cost_usd": record["cost_usd"],
        }
        assert isinstance(record["tokens_in"], int)
        assert isinstance(record["tokens_out"], int)
        assert isinstance(record["cost_usd"], float)
        assert isinstance(record["duration_ms"], int)
        stamps = [
            datetime.fromisoformat(record[k]) for k in ("created_at", "started_at", "finished_at")
        ]
        assert all(s.utcoffset() == timedelta(0) for s in stamps), stamps
        assert stamps == sorted(stamps)

    def test_show_human_output(self, finished: Finished) -> None:
        agent_id = finished.done["id"]
        out = ok(grove("show", agent_id, cwd=finished.repo)).stdout
        assert agent_id in out
        assert "completed" in out
        assert f"grove/{agent_id}" in out
        assert "Created hello.txt" in out
        assert "(kept for inspection; `grove gc` removes it)" in out
        # Duration is wall time from claim to end (what the live view counted), with the CLI's
        # own figure beside it.
        record = finished.done
        wall = (
            datetime.fromisoformat(record["finished_at"])
            - datetime.fromisoformat(record["started_at"])
        ).total_seconds()
        assert re.search(
            rf"duration\s+{wall:.1f}s \(in the CLI: {record['duration_ms']} ms, all attempts\)",
            out,
        ), out
        failed_out = ok(grove("show", finished.failed["id"], cwd=finished.repo)).stdout
        assert "permanent" in failed_out

    def test_id_prefix_is_accepted(self, finished: Finished) -> None:
        agent_id = finished.done["id"]
        prefix = unique_prefix(agent_id, finished.ids)
        assert len(prefix) >= 4
        assert show(finished.repo, prefix)["id"] == agent_id
        logs = ok(grove("logs", "--json", prefix, cwd=finished.repo)).stdout.splitlines()
        assert {json.loads(line)["kind"] for line in logs} >= {"agent.spawned", "agent.completed"}

    def test_ls_filters_by_status(self, finished: Finished) -> None:
        repo = finished.repo
        everything = as_json(grove("ls", "--json", cwd=repo))
        assert [a["id"] for a in everything] == finished.ids  # oldest first
        completed = as_json(grove("ls", "--status", "completed", "--json", cwd=repo))
        assert [a["id"] for a in completed] == [finished.done["id"]]
        failed = as_json(grove("ls", "--status", "failed", "--json", cwd=repo))
        assert [a["id"] for a in failed] == [finished.failed["id"]]
        assert as_json(grove("ls", "--status", "executing", "--json", cwd=repo)) == []
        table = ok(grove("ls", "--status", "failed", cwd=repo)).stdout
        assert finished.failed["id"] in table
        assert finished.done["id"] not in table
        none = ok(grove("ls", "--status", "executing", cwd=repo)).stdout
        assert none == "no agents with status executing\n"

    def test_logs_show_the_write_tool_use(self, finished: Finished) -> None:
        agent_id = finished.done["id"]
        human = ok(grove("logs", agent_id, cwd=finished.repo)).stdout
        assert re.search(r"agent\.tool_use\s+Write .*hello\.txt", human), human

        lines = ok(grove("logs", "--json", agent_id, cwd=finished.repo)).stdout.splitlines()
        events = [json.loads(line) for line in lines]
        kinds = [e["kind"] for e in events]
        assert kinds[0] == "agent.spawned"
        assert kinds[-1] == "agent.completed"
        writes = [e for e in events if e["kind"] == "agent.tool_use"]
        assert [w["data"]["tool"] for w in writes] == ["Write"]
        assert "hello.txt" in writes[0]["data"]["input"]

    def test_logs_follow_returns_for_a_finished_agent(self, finished: Finished) -> None:
        agent_id = finished.failed["id"]
        proc = ok(grove("logs", "-f", "--json", agent_id, cwd=finished.repo, timeout=60))
        last = json.loads(proc.stdout.splitlines()[-1])
        assert last["kind"] == "agent.failed"

    def test_wait_for_completed_agent_exits_0(self, finished: Finished) -> None:
        agent_id = finished.done["id"]
        proc = ok(grove("wait", agent_id, cwd=finished.repo, timeout=60))
        assert proc.stdout.strip() == f"{agent_id} completed"
        # Not all completed: exit 1; the records are printed either way.
        both = grove("wait", "--json", *finished.ids, cwd=finished.repo, timeout=60)
        records = json.loads(both.stdout)
        assert [(r["id"], r["status"]) for r in records] == [
            (finished.done["id"], "completed"),
            (finished.failed["id"], "failed"),
        ]

    def test_wait_for_failed_agent_exits_1(self, finished: Finished) -> None:
        proc = grove("wait", finished.failed["id"], cwd=finished.repo, timeout=60)
        assert proc.returncode == 1

    def test_diff_prints_stat_and_patch(self, finished: Finished) -> None:
        agent_id = finished.done["id"]
        out = ok(grove("diff", agent_id, cwd=finished.repo)).stdout
        assert out.startswith(
            f"branch grove/{agent_id}  head {finished.done['workspace']['head_commit']}"
        )
        assert re.search(r"hello\.txt \| 1 \+", out), out
        assert "diff --git a/hello.txt b/hello.txt" in out
        assert "\n+hi\n" in out

        stat = ok(grove("diff", "--stat", agent_id, cwd=finished.repo)).stdout
        assert "hello.txt | 1 +" in stat
        assert "diff --git" not in stat
