"""Bad input through the real ``grove`` CLI: exit code 2, ONE line on stderr naming the problem,
and nothing written (database rows, worktrees, branches and the grove home are unchanged).

Every call points ANTHROPIC_BASE_URL at a loopback port that refuses connections unless a case
needs a model endpoint that answers, so no test can reach the network.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentgrove.errors import (
    BadInput,
    BadRef,
    ConfigError,
    MissingInputs,
    NotInitialised,
    UnknownAgent,
    UnknownRole,
)
from agentgrove.grove import Grove
from agentgrove.testing import ModelServer, Script
from agentgrove.workflows.spec import WorkflowError
from tests.conftest import run_cli

MISSING_ID = "zzzz0000"  # not hex: no agent id can start with it

# --- endpoints ---------------------------------------------------------------------------------


@contextmanager
def refusing_port() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class _Refuse401(BaseHTTPRequestHandler):
    """Answers 401 with an Anthropic error body to every request (the scripted ModelServer
    answers GET /v1/models with 404, which the preflight counts as usable)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _refuse(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _refuse


@contextmanager
def auth_refusing_server() -> Iterator[tuple[str, list[str]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse401)
    httpd.daemon_threads = True
    seen: list[str] = []
    httpd.seen = seen  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- what "nothing was written" means ---------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def snapshot(repo: Path) -> dict[str, Any]:
    """Every row of every table, the worktrees, the branches and the files of the grove home."""
    home = repo / ".grove"
    tables: dict[str, list[str]] = {}
    db = home / "grove.db"
    if db.exists():
        with closing(sqlite3.connect(db)) as conn:
            names = [
                r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")
            ]
            for name in sorted(names):
                rows = conn.execute(f'select * from "{name}"').fetchall()
                tables[name] = sorted(repr(r) for r in rows)
    files = (
        sorted(
            str(p.relative_to(home))
            for p in home.rglob("*")
            if not p.name.endswith(("-wal", "-shm"))
        )
        if home.exists()
        else None
    )
    return {
        "tables": tables,
        "worktrees": _git(repo, "worktree", "list", "--porcelain"),
        "branches": _git(repo, "branch", "--list", "--all", "--verbose"),
        "refs": _git(repo, "for-each-ref"),
        "home": files,
    }


def assert_refused(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 2, nothing on stdout, and exactly one ``grove: error:`` line naming the problem."""
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 2, detail
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("grove: error: "), detail
    assert expected in lines[0], detail
    assert proc.stdout == "", detail


# --- an initialised grove with one pending agent -------------------------------------------------


@dataclass
class Setup:
    repo: Path
    agent_id: str


@pytest.fixture
def setup(repo: Path) -> Setup:
    with Grove.init(repo) as g:
        agent = g.spawn("file-writer", "write a.txt")
    return Setup(repo, agent.id)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str
    endpoint: str = "refused"  # refused | scripted (answers, but must get no message) | 401
    toml: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the repository first


CYCLE_YAML = """
name: loop
nodes:
  - {key: a, role: tester, task: first, depends_on: [b]}
  - {key: b, role: tester, task: second, depends_on: [a]}
"""
UNKNOWN_ROLE_YAML = "name: w\nnodes:\n  - {key: a, role: nope, task: do it}\n"
INPUT_YAML = (
    "name: w\ninputs: [feature]\nnodes:\n  - {key: a, role: tester, task: '{{ inputs.feature }}'}\n"
)
BROKEN_YAML = "name: w\nnodes: [\n"

BAD_TOML = "[roles.file-writer\nmax_turns = 3\n"
UNKNOWN_KEY_TOML = "[workers]\nconcurrency = 2\n"
UNKNOWN_ROLE_KEY_TOML = "[roles.tester]\nmaxturns = 3\n"
WRONG_TYPE_TOML = '[roles.file-writer]\nmax_turns = "x"\n'

CASES: dict[str, Case] = {
    "spawn-unknown-role": Case(("spawn", "nope", "do it"), "unknown role 'nope'"),
    "run-unknown-role": Case(("run", "nope", "do it"), "unknown role 'nope'", "scripted"),
    "spawn-empty-task": Case(("spawn", "file-writer", ""), "the task is empty"),
    "spawn-blank-task": Case(("spawn", "file-writer", " \t\n "), "the task is empty"),
    "run-empty-task": Case(("run", "file-writer", ""), "the task is empty", "scripted"),
    "run-blank-task": Case(("run", "file-writer", "   "), "the task is empty", "scripted"),
    "show-unknown-id": Case(("show", MISSING_ID), f"unknown agent id {MISSING_ID!r}"),
    "show-json-unknown-id": Case(("show", "--json", MISSING_ID), "unknown agent id"),
    "logs-unknown-id": Case(("logs", MISSING_ID), f"unknown agent id {MISSING_ID!r}"),
    "logs-follow-unknown-id": Case(("logs", "-f", MISSING_ID), "unknown agent id"),
    "wait-unknown-id": Case(("wait", MISSING_ID), f"unknown agent id {MISSING_ID!r}"),
    "wait-one-unknown-id": Case(("wait", "{id}", MISSING_ID), "unknown agent id"),
    "cancel-unknown-id": Case(("cancel", MISSING_ID), f"unknown agent id {MISSING_ID!r}"),
    "diff-unknown-id": Case(("diff", MISSING_ID), f"unknown agent id {MISSING_ID!r}"),
    "show-empty-id": Case(("show", ""), "unknown agent id ''"),
    "show-short-id": Case(("show", "{id:.3}"), "too short"),
    "cancel-short-id": Case(("cancel", "{id:.3}"), "too short"),
    "spawn-parent-short-id": Case(
        ("spawn", "file-writer", "x", "--parent", "{id:.2}"), "too short"
    ),
    "spawn-parent-unknown": Case(
        ("spawn", "file-writer", "x", "--parent", MISSING_ID), f"unknown agent id {MISSING_ID!r}"
    ),
    "spawn-base-no-commit": Case(
        ("spawn", "file-writer", "x", "--base", "no-such-ref"),
        "--base 'no-such-ref' does not name a commit",
    ),
    "spawn-base-a-tree": Case(
        ("spawn", "file-writer", "x", "--base", "HEAD^{{tree}}"), "does not name a commit"
    ),
    "run-base-no-commit": Case(
        ("run", "file-writer", "x", "--base", "no-such-ref"),
        "--base 'no-such-ref' does not name a commit",
        "scripted",
    ),
    "spawn-empty-model": Case(("spawn", "file-writer", "x", "--model", ""), "--model is empty"),
    "ls-bogus-status": Case(("ls", "--status", "bogus"), "unknown status 'bogus'"),
    "diff-not-run-yet": Case(("diff", "{id}"), "has no git workspace"),
    "toml-syntax-ls": Case(("ls",), "not valid TOML", toml=BAD_TOML),
    "toml-syntax-spawn": Case(("spawn", "file-writer", "x"), "not valid TOML", toml=BAD_TOML),
    "toml-unknown-key": Case(("ls",), "workers: Extra inputs", toml=UNKNOWN_KEY_TOML),
    "toml-unknown-role-key": Case(
        ("spawn", "tester", "x"), "roles.tester.maxturns", toml=UNKNOWN_ROLE_KEY_TOML
    ),
    "toml-wrong-type": Case(
        ("spawn", "file-writer", "x"), "roles.file-writer.max_turns", toml=WRONG_TYPE_TOML
    ),
    "toml-wrong-type-run": Case(
        ("run", "file-writer", "x"), "max_turns", "scripted", toml=WRONG_TYPE_TOML
    ),
    "run-model-unreachable": Case(("run", "file-writer", "x"), "is unreachable"),
    "run-auth-refused": Case(("run", "file-writer", "x"), "refused the API key (HTTP 401)", "401"),
    "run-no-api-key": Case(
        ("run", "file-writer", "x"), "ANTHROPIC_API_KEY is not set", env={"ANTHROPIC_API_KEY": ""}
    ),
    # workflows through the command line
    "workflow-validate-cycle": Case(
        ("workflow", "validate", "loop.yaml"), "cycle: a -> b -> a", files={"loop.yaml": CYCLE_YAML}
    ),
    "workflow-run-cycle": Case(
        ("workflow", "run", "loop.yaml"), "cycle: a -> b -> a", files={"loop.yaml": CYCLE_YAML}
    ),
    "workflow-run-unknown-role": Case(
        ("workflow", "run", "w.yaml"),
        "node 'a': unknown role 'nope'",
        files={"w.yaml": UNKNOWN_ROLE_YAML},
    ),
    "workflow-run-missing-input": Case(
        ("workflow", "run", "w.yaml"),
        "missing required input 'feature' for workflow 'w'; pass --input feature=VALUE",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-run-unknown-input": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=x", "--input", "colour=red"),
        "unknown input 'colour'",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-run-input-without-equals": Case(
        ("workflow", "run", "w.yaml", "--input", "feature"),
        "NAME=VALUE",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-run-yaml-syntax": Case(
        ("workflow", "run", "broken.yaml"), "not valid YAML", files={"broken.yaml": BROKEN_YAML}
    ),
    "workflow-run-no-such-file": Case(
        ("workflow", "run", "missing.yaml"), "missing.yaml': it is not a file"
    ),
    "workflow-run-zero-budget": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=x", "--budget-usd", "0"),
        "above zero",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-run-base-no-commit": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=x", "--base", "no-such-ref"),
        "does not name a commit",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-show-unknown-run": Case(
        ("workflow", "show", MISSING_ID), f"unknown workflow run {MISSING_ID!r}"
    ),
    "workflow-merge-unknown-run": Case(
        ("workflow", "merge", MISSING_ID), f"unknown workflow run {MISSING_ID!r}"
    ),
    "workflow-cancel-unknown-run": Case(
        ("workflow", "cancel", MISSING_ID), f"unknown workflow run {MISSING_ID!r}"
    ),
    "workflow-rerun-unknown-run": Case(
        ("workflow", "rerun", MISSING_ID, "--from", "a"), f"unknown workflow run {MISSING_ID!r}"
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_and_writes_nothing(setup: Setup, case: Case) -> None:
    repo = setup.repo
    if case.toml is not None:
        (repo / "grove.toml").write_text(case.toml)
    for name, text in case.files.items():
        (repo / name).write_text(text)
    args = [a.format(id=setup.agent_id) for a in case.args]
    before = snapshot(repo)
    assert before["tables"]["agents"], "the fixture's agent should be there"

    with _endpoint(case.endpoint) as (url, contacted):
        proc = run_cli(*args, cwd=repo, env={"ANTHROPIC_BASE_URL": url, **case.env}, timeout=60)
        assert_refused(proc, case.expect)
        assert snapshot(repo) == before
        if case.endpoint == "scripted":
            assert contacted() == []  # refused before any message reached the model
        if case.endpoint == "401":
            assert contacted() == ["GET /v1/models"]


@contextmanager
def _endpoint(kind: str) -> Iterator[tuple[str, Any]]:
    """(base URL, function returning what the endpoint received)."""
    if kind == "scripted":
        with ModelServer(Script()) as server:
            yield server.url, lambda: server.requests
    elif kind == "401":
        with auth_refusing_server() as (url, seen):
            yield url, lambda: list(seen)
    else:
        with refusing_port() as url:
            yield url, lambda: []


# --- not initialised ---------------------------------------------------------------------------

NOT_INITIALISED = [
    ("ls",),
    ("ls", "--json"),
    ("show", "abcd1234"),
    ("spawn", "file-writer", "x"),
    ("run", "file-writer", "x"),
    ("logs", "abcd1234"),
    ("wait", "abcd1234"),
    ("cancel", "abcd1234"),
    ("diff", "abcd1234"),
    ("gc",),
    ("worker", "--drain"),
]


@pytest.mark.parametrize("args", NOT_INITIALISED, ids=[" ".join(a) for a in NOT_INITIALISED])
def test_not_initialised_creates_nothing(repo: Path, args: tuple[str, ...]) -> None:
    with refusing_port() as url:
        proc = run_cli(*args, cwd=repo, env={"ANTHROPIC_BASE_URL": url}, timeout=60)

    assert_refused(proc, "run `grove init`")
    assert f"no grove home at {repo / '.grove'}" in proc.stderr
    assert not (repo / ".grove").exists()
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert _git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_not_initialised_in_a_subdirectory_names_the_repository_root(repo: Path) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    proc = run_cli("ls", cwd=sub)
    assert_refused(proc, f"no grove home at {repo / '.grove'}")
    assert not (repo / ".grove").exists()
    assert not (sub / ".grove").exists()


def test_init_with_invalid_config_creates_nothing(repo: Path) -> None:
    (repo / "grove.toml").write_text(WRONG_TYPE_TOML)
    proc = run_cli("init", cwd=repo)
    assert_refused(proc, "max_turns")
    assert not (repo / ".grove").exists()
    assert ".grove" not in (repo / ".git" / "info" / "exclude").read_text()


def test_run_reports_bad_task_before_checking_the_endpoint(setup: Setup) -> None:
    with refusing_port() as url:
        proc = run_cli("run", "file-writer", "  ", cwd=setup.repo, env={"ANTHROPIC_BASE_URL": url})
    assert_refused(proc, "the task is empty")


USAGE_ERRORS = [
    ("spawn",),
    ("spawn", "file-writer"),
    ("nosuchcommand",),
    ("ls", "--bogus"),
    ("wait", "abcd1234", "--timeout", "soon"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_usage_errors_exit_2_without_traceback(setup: Setup, args: tuple[str, ...]) -> None:
    before = snapshot(setup.repo)
    proc = run_cli(*args, cwd=setup.repo)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2
    assert snapshot(setup.repo) == before


# --- the Python API ----------------------------------------------------------------------------
#
# The same promise through ``agentgrove.Grove``: the exception's type, ONE line naming what is
# wrong and what to do, and nothing written (every row of every table, the worktrees, the
# branches and the grove home, as :func:`snapshot` sees them).

Call = Callable[[Grove, "ApiSetup"], object]


@dataclass
class ApiSetup:
    repo: Path
    agent_id: str
    run_id: str  # nodes "a" (pending) and "b" (waiting for "a")
    outside: Path  # a directory with no grove


@pytest.fixture
def api_setup(setup: Setup, tmp_path: Path) -> ApiSetup:
    with Grove.open(setup.repo) as g:
        run = g.start_workflow(
            {"name": "pair", "nodes": [_node("a"), _node("b", depends_on=["a"])]}
        )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    return ApiSetup(setup.repo, setup.agent_id, run.id, outside)


def _node(key: str = "a", **fields: object) -> dict[str, object]:
    return {"key": key, "role": "tester", "task": "do it", **fields}


def _workflow(*nodes: dict[str, object], **fields: object) -> dict[str, object]:
    return {"name": "w", "nodes": list(nodes) or [_node()], **fields}


def _start(*nodes: dict[str, object], **fields: object) -> Call:
    return lambda g, s: g.start_workflow(_workflow(*nodes, **fields))


@dataclass(frozen=True)
class ApiCase:
    call: Call
    error: type[Exception]
    problem: str  # names what is wrong
    advice: str  # says what to do
    toml: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _open_repo(g: Grove, s: ApiSetup) -> object:
    return Grove.open(s.repo)


API_CASES: dict[str, ApiCase] = {
    # opening
    "open-uninitialised": ApiCase(
        lambda g, s: Grove.open(s.outside), NotInitialised, "no grove home at", "run `grove init`"
    ),
    "open-toml-wrong-type": ApiCase(
        _open_repo, ConfigError, "roles.file-writer.max_turns", "fix the file", WRONG_TYPE_TOML
    ),
    "open-toml-syntax": ApiCase(
        _open_repo, ConfigError, "not valid TOML", "fix the file", BAD_TOML
    ),
    "open-toml-unknown-key": ApiCase(
        _open_repo, ConfigError, "workers: Extra inputs", "fix the file", UNKNOWN_KEY_TOML
    ),
    "init-toml-wrong-type": ApiCase(
        lambda g, s: Grove.init(s.repo), ConfigError, "max_turns", "fix the file", WRONG_TYPE_TOML
    ),
    "open-db-url-not-a-url": ApiCase(
        _open_repo,
        ConfigError,
        "database URL (not a URL) cannot be used",
        "set GROVE_DB_URL to",
        env={"GROVE_DB_URL": "not-a-url"},
    ),
    "open-db-url-no-driver": ApiCase(
        _open_repo,
        ConfigError,
        "'mysql://me:***@db.invalid/grove' cannot be used: No module named",
        "set GROVE_DB_URL to",
        env={"GROVE_DB_URL": "mysql://me:hunter2@db.invalid/grove"},
    ),
    # agents
    "spawn-unknown-role": ApiCase(
        lambda g, s: g.spawn("nope", "x"), UnknownRole, "unknown role 'nope'", "add one in"
    ),
    "spawn-empty-task": ApiCase(
        lambda g, s: g.spawn("tester", ""), BadInput, "the task is empty", "say what the agent"
    ),
    "spawn-blank-task": ApiCase(
        lambda g, s: g.spawn("tester", " \n\t"), BadInput, "the task is empty", "say what"
    ),
    "spawn-blank-model": ApiCase(
        lambda g, s: g.spawn("tester", "x", model=" "), BadInput, "is empty", "give a model name"
    ),
    "spawn-zero-budget": ApiCase(
        lambda g, s: g.spawn("tester", "x", budget_usd=0), BadInput, "got 0", "above zero"
    ),
    "spawn-negative-budget": ApiCase(
        lambda g, s: g.spawn("tester", "x", budget_usd=-1.5), BadInput, "got -1.5", "above zero"
    ),
    "spawn-unknown-parent": ApiCase(
        lambda g, s: g.spawn("tester", "x", parent_id=MISSING_ID),
        UnknownAgent,
        f"unknown agent id {MISSING_ID!r}",
        "`grove ls` lists",
    ),
    "spawn-short-parent": ApiCase(
        lambda g, s: g.spawn("tester", "x", parent_id=s.agent_id[:2]),
        BadInput,
        "is too short",
        "give at least 4 characters",
    ),
    "spawn-base-no-commit": ApiCase(
        lambda g, s: g.spawn("tester", "x", base="no-such-ref"),
        BadRef,
        "'no-such-ref' does not name a commit",
        "give a branch, tag or commit",
    ),
    "spawn-base-a-tree": ApiCase(
        lambda g, s: g.spawn("tester", "x", base="HEAD^{tree}"),
        BadRef,
        "does not name a commit",
        "give a branch, tag or commit",
    ),
    "get-unknown-id": ApiCase(
        lambda g, s: g.get(MISSING_ID), UnknownAgent, "unknown agent id", "`grove ls` lists"
    ),
    "get-short-id": ApiCase(
        lambda g, s: g.get(s.agent_id[:3]), BadInput, "is too short", "at least 4 characters"
    ),
    "wait-unknown-id": ApiCase(
        lambda g, s: g.wait([s.agent_id, MISSING_ID]), UnknownAgent, MISSING_ID, "`grove ls`"
    ),
    "tree-totals-unknown-id": ApiCase(
        lambda g, s: g.tree_totals(MISSING_ID), UnknownAgent, MISSING_ID, "`grove ls`"
    ),
    "cancel-unknown-id": ApiCase(
        lambda g, s: g.service.cancel(MISSING_ID), UnknownAgent, MISSING_ID, "`grove ls`"
    ),
    # workflows: the definition
    "workflow-no-nodes": ApiCase(
        lambda g, s: g.start_workflow({"name": "w", "nodes": []}),
        WorkflowError,
        "the workflow has no nodes",
        "add at least one under 'nodes'",
    ),
    "workflow-nodes-missing": ApiCase(
        lambda g, s: g.start_workflow({"name": "w"}), WorkflowError, "nodes:", "field required"
    ),
    "workflow-empty-name": ApiCase(
        lambda g, s: g.start_workflow({"name": "", "nodes": [_node()]}),
        WorkflowError,
        "name:",
        "at least 1 character",
    ),
    "workflow-unknown-role": ApiCase(
        _start(_node(role="nope")),
        WorkflowError,
        "node 'a': unknown role 'nope'",
        "define it in grove.toml under [roles.nope]",
    ),
    "workflow-unknown-dependency": ApiCase(
        _start(_node(depends_on=["b"])),
        WorkflowError,
        "node 'a' depends on unknown node 'b'",
        "(nodes: a)",
    ),
    "workflow-cycle": ApiCase(
        _start(_node("a", depends_on=["b"]), _node("b", depends_on=["a"])),
        WorkflowError,
        "cycle: a -> b -> a",
        "remove one of these dependencies",
    ),
    "workflow-depends-on-itself": ApiCase(
        _start(_node(depends_on=["a"])),
        WorkflowError,
        "node 'a' depends on itself",
        "remove it from depends_on",
    ),
    "workflow-duplicate-key": ApiCase(
        _start(_node("a"), _node("a")),
        WorkflowError,
        "duplicate node key 'a'",
        "give each node its own key",
    ),
    "workflow-bad-key": ApiCase(
        _start(_node("Bad Key")),
        WorkflowError,
        "node key 'Bad Key' is invalid",
        "use lowercase letters",
    ),
    "workflow-reserved-key": ApiCase(
        _start(_node("inputs")), WorkflowError, "'inputs' is reserved", "rename the node"
    ),
    "workflow-template-syntax": ApiCase(
        _start(_node(task="{{ oops")),
        WorkflowError,
        "node 'a' task: template syntax error on line 1",
        "expected 'end of print statement'",
    ),
    "workflow-template-unknown-name": ApiCase(
        _start(_node(task="{{ ghost.output }}")),
        WorkflowError,
        "uses unknown name 'ghost'",
        "templates use inputs.NAME",
    ),
    "workflow-template-not-a-dependency": ApiCase(
        _start(_node("a"), _node("b", task="{{ a.output }}")),
        WorkflowError,
        "node 'b' template uses 'a.output' but does not depend on 'a'",
        "add 'a' to its depends_on",
    ),
    "workflow-template-unknown-input": ApiCase(
        _start(_node(task="{{ inputs.nope }}")),
        WorkflowError,
        "unknown input 'inputs.nope'",
        "(declared: none)",
    ),
    "workflow-unknown-field": ApiCase(
        _start(_node(colour="red")),
        WorkflowError,
        "nodes[0].colour (node 'a'): unknown field",
        "use one of key, role, task",
    ),
    "workflow-empty-task": ApiCase(
        _start(_node(task="")), WorkflowError, "nodes[0].task", "at least 1 character"
    ),
    "workflow-zero-attempts": ApiCase(
        _start(_node(max_attempts=0)),
        WorkflowError,
        "nodes[0].max_attempts",
        "greater than or equal to 1",
    ),
    "workflow-negative-timeout": ApiCase(
        _start(_node(timeout_s=-1)), WorkflowError, "nodes[0].timeout_s", "greater than 0"
    ),
    "workflow-input-required-with-default": ApiCase(
        _start(inputs={"f": {"required": True, "default": "x"}}),
        WorkflowError,
        "inputs.f: an input with a default cannot be required",
        "drop one of the two",
    ),
    "workflow-no-such-file": ApiCase(
        lambda g, s: g.start_workflow(s.repo / "missing.yaml"),
        WorkflowError,
        "missing.yaml': it is not a file",
        "the built-in workflows are",
    ),
    "workflow-yaml-syntax": ApiCase(
        lambda g, s: g.start_workflow("name: w\nnodes: [\n"),
        WorkflowError,
        "not valid YAML at line 3",
        "fix the file",
    ),
    "workflow-yaml-duplicate-key": ApiCase(
        lambda g, s: g.start_workflow("name: w\nname: v\nnodes: []\n"),
        WorkflowError,
        "duplicate key 'name'",
        "fix the file",
    ),
    "workflow-yaml-a-list": ApiCase(
        lambda g, s: g.start_workflow("- a\n- b\n"),
        WorkflowError,
        "got list",
        "expected a mapping with 'name' and 'nodes'",
    ),
    # workflows: starting one
    "workflow-missing-input": ApiCase(
        _start(_node(task="{{ inputs.f }}"), inputs=["f"]),
        MissingInputs,
        "missing required input 'f'",
        "give inputs={'f': ...}",  # the API's words, not the command line's --input
    ),
    "workflow-unknown-input": ApiCase(
        lambda g, s: g.start_workflow(_workflow(), {"x": "1"}),
        BadInput,
        "unknown input 'x'",
        "takes no inputs",
    ),
    "workflow-zero-budget": ApiCase(
        lambda g, s: g.start_workflow(_workflow(), budget_usd=0),
        BadInput,
        "got 0",
        "above zero",
    ),
    "workflow-base-no-commit": ApiCase(
        lambda g, s: g.start_workflow(_workflow(), base="no-such-ref"),
        BadRef,
        "'no-such-ref' does not name a commit",
        "give a branch, tag or commit",
    ),
    # workflow runs
    "run-unknown-id": ApiCase(
        lambda g, s: g.workflows.get(MISSING_ID),
        BadInput,
        f"unknown workflow run {MISSING_ID!r}",
        "`grove workflow ls` lists them",
    ),
    "run-cancel-unknown-id": ApiCase(
        lambda g, s: g.workflows.cancel(MISSING_ID), BadInput, "unknown workflow run", "ls"
    ),
    "rerun-unknown-node": ApiCase(
        lambda g, s: g.workflows.rerun(s.run_id, "zz"),
        BadInput,
        "has no node 'zz'",
        "its nodes are a, b",
    ),
    "rerun-live-node": ApiCase(
        lambda g, s: g.workflows.rerun(s.run_id, "a"),
        BadInput,
        "node 'a' is still pending",
        "wait or cancel first",
    ),
    "rerun-dependency-not-completed": ApiCase(
        lambda g, s: g.workflows.rerun(s.run_id, "b"),
        BadInput,
        "cannot rerun 'b': its dependency 'a' has not completed",
        "rerun from 'a' instead",
    ),
}


@pytest.mark.parametrize("case", list(API_CASES.values()), ids=list(API_CASES))
def test_python_api_refuses_bad_input_and_writes_nothing(
    api_setup: ApiSetup, case: ApiCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = api_setup
    with Grove.open(s.repo) as g:
        # After opening: a case that opens a grove itself meets the bad grove.toml or variable.
        if case.toml is not None:
            (s.repo / "grove.toml").write_text(case.toml)
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)
        before = snapshot(s.repo)
        assert before["tables"]["agents"] and before["tables"]["workflow_runs"]
        with pytest.raises(BadInput) as raised:
            case.call(g, s)

    exc = raised.value
    message = str(exc)
    assert type(exc) is case.error, f"{type(exc).__name__}: {message}"
    assert "\n" not in message and message.strip() == message, message
    assert case.problem in message, message
    assert case.advice in message, message
    assert "hunter2" not in message, "a password in a URL is never shown"
    assert snapshot(s.repo) == before
    assert list(s.outside.iterdir()) == []
