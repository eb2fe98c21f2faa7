"""More bad input (issue 9, item 14), held to the promise of :mod:`tests.test_bad_input`: exit
code 2, ONE ``grove: error:`` line naming the problem and what to do, and nothing written (every
row, worktree, branch and file of the grove home; no home created where there was none). The
same inputs through :class:`agentgrove.Grove` raise :class:`BadInput`.

Covered here: a database URL that cannot be used (a port where something accepts and says
nothing, a closed port, a missing PostgreSQL database, a file that is not SQLite); text that
cannot be stored (invalid UTF-8 from argv, NUL) in tasks, inputs, grove.toml and workflows;
floats that are not finite or out of range (``--budget-usd nan``, ``lease_s = inf``...);
workflows nested too deep, alias bombs and oversized files; bad dashboard ports and tokens.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentgrove.errors import BadInput, ConfigError
from agentgrove.grove import Grove
from agentgrove.workflows.spec import WorkflowError
from tests.conftest import PG_URL, run_cli
from tests.test_bad_input import (
    INPUT_YAML,
    Setup,
    assert_refused,
    refusing_port,
    setup,
    snapshot,
)
from tests.test_bad_input import (
    _endpoint as endpoint,
)

_ = setup  # the fixture, imported for use here

CLI_TIMEOUT_S = 60
"""No command may take longer than this, even when its database never answers (the connect
timeout is 5 s): a hang shows up as ``subprocess.TimeoutExpired``."""

# --- a database that is not a database -----------------------------------------------------


@contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts every connection and never says a word (nor closes)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _closed_port() -> int:
    with refusing_port() as url:
        return int(url.rsplit(":", 1)[1])


def _bomb(levels: int) -> str:
    """A YAML alias bomb: ``levels`` lines, each a list of nine aliases to the line before, so
    the last one expands to 9**levels strings. Used where a list of names is expected."""
    lines = ["name: w", "nodes:", "  - {key: a, role: tester, task: t}"]
    lines.append("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]")
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"inputs: [*l{levels}]")
    return "\n".join(lines) + "\n"


def _deep(levels: int) -> str:
    return "name: w\nnodes:\n  - {key: a, role: tester, task: t}\ndescription: " + (
        "[" * levels + "]" * levels + "\n"
    )


BIG_YAML = INPUT_YAML + "# " + "x" * (1024 * 1024) + "\n"
NUL_TASK_YAML = 'name: w\nnodes:\n  - {key: a, role: tester, task: "do \\0 it"}\n'

# --- the CLI ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str
    db: str | None = None  # GROVE_DB_URL: "silent", "closed", "text", "random", or a URL
    toml: bytes | None = None
    files: dict[str, bytes | str] = field(default_factory=dict)
    endpoint: str = "refused"


def _utf8_bad(text: str) -> str:
    """``text`` with an invalid UTF-8 byte, as Python sees such an argv (surrogateescape)."""
    return os.fsdecode(text.encode() + b"\xff\xfe")


CASES: dict[str, Case] = {
    # the database URL
    "db-silent-listener-ls": Case(("ls",), "no answer within 5 s", db="silent"),
    "db-silent-listener-spawn": Case(("spawn", "tester", "x"), "no answer", db="silent"),
    "db-closed-port": Case(("ls",), "Connection refused", db="closed"),
    "db-not-sqlite-text": Case(("ls",), "is not a SQLite database", db="text"),
    "db-not-sqlite-bytes": Case(("spawn", "tester", "x"), "not a SQLite database", db="random"),
    # text that cannot be stored
    "task-invalid-utf8-spawn": Case(("spawn", "tester", _utf8_bad("fix")), "not valid UTF-8"),
    "task-invalid-utf8-run": Case(
        ("run", "tester", _utf8_bad("fix")), "not valid UTF-8", endpoint="scripted"
    ),
    "input-invalid-utf8": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=" + _utf8_bad("x")),
        "not valid UTF-8",
        files={"w.yaml": INPUT_YAML},
    ),
    "toml-invalid-utf8": Case(
        ("ls",), "not valid UTF-8", toml=b"[worker]\n# caf\xe9\nlease_s = 60\n"
    ),
    "workflow-file-invalid-utf8": Case(
        ("workflow", "run", "w.yaml"), "not valid UTF-8", files={"w.yaml": b"name: caf\xe9\n"}
    ),
    "workflow-nul-in-task": Case(
        ("workflow", "run", "w.yaml"), "NUL character", files={"w.yaml": NUL_TASK_YAML}
    ),
    # floats
    "spawn-budget-nan": Case(("spawn", "tester", "x", "--budget-usd", "nan"), "got nan"),
    "spawn-budget-inf": Case(("spawn", "tester", "x", "--budget-usd", "inf"), "got inf"),
    "spawn-budget-negative": Case(("spawn", "tester", "x", "--budget-usd", "-2"), "got -2"),
    "run-budget-nan": Case(
        ("run", "tester", "x", "--budget-usd", "nan"), "got nan", endpoint="scripted"
    ),
    "workflow-budget-nan": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=x", "--budget-usd", "nan"),
        "got nan",
        files={"w.yaml": INPUT_YAML},
    ),
    "workflow-budget-inf": Case(
        ("workflow", "run", "w.yaml", "--input", "feature=x", "--budget-usd", "inf"),
        "got inf",
        files={"w.yaml": INPUT_YAML},
    ),
    "wait-timeout-nan": Case(("wait", "{id}", "--timeout", "nan"), "--timeout"),
    "wait-timeout-negative": Case(("wait", "{id}", "--timeout", "-1"), "--timeout"),
    "worker-grace-nan": Case(("worker", "--drain", "--grace", "nan"), "grace_s"),
    "worker-grace-inf": Case(("worker", "--drain", "--grace", "inf"), "grace_s"),
    "worker-concurrency-zero": Case(("worker", "--drain", "--concurrency", "0"), "concurrency"),
    "up-concurrency-zero": Case(("up", "--no-shell", "--concurrency", "0"), "--concurrency 0"),
    "toml-lease-inf": Case(("ls",), "worker.lease_s", toml=b"[worker]\nlease_s = inf\n"),
    "toml-lease-nan": Case(("ls",), "worker.lease_s", toml=b"[worker]\nlease_s = nan\n"),
    "toml-lease-huge": Case(("ls",), "worker.lease_s", toml=b"[worker]\nlease_s = 1e300\n"),
    "toml-heartbeat-inf": Case(
        ("ls",), "worker.heartbeat_s", toml=b"[worker]\nheartbeat_s = inf\n"
    ),
    "toml-daily-nan": Case(("ls",), "budget.daily_usd", toml=b"[budget]\ndaily_usd = nan\n"),
    "toml-role-timeout-inf": Case(
        ("ls",), "roles.tester.timeout_s", toml=b"[roles.tester]\ntimeout_s = inf\n"
    ),
    "toml-role-budget-nan": Case(
        ("ls",), "roles.tester.max_budget_usd", toml=b"[roles.tester]\nmax_budget_usd = nan\n"
    ),
    "toml-scripted-delay-inf": Case(
        ("ls",), "runtime.scripted_delay_s", toml=b"[runtime]\nscripted_delay_s = inf\n"
    ),
    # workflow files
    "workflow-nested-5000": Case(
        ("workflow", "validate", "deep.yaml"),
        "nested deeper than",
        files={"deep.yaml": _deep(5000)},
    ),
    "workflow-alias-bomb": Case(
        ("workflow", "validate", "bomb.yaml"), "aliases", files={"bomb.yaml": _bomb(6)}
    ),
    "workflow-too-big": Case(
        ("workflow", "run", "big.yaml"), "larger than 1 MiB", files={"big.yaml": BIG_YAML}
    ),
    # the dashboard
    "dashboard-port-too-big": Case(("dashboard", "--port", "99999"), "--port 99999"),
    "dashboard-port-negative": Case(("dashboard", "--port", "-1"), "--port -1"),
    "dashboard-blank-token": Case(
        ("dashboard", "--host", "0.0.0.0", "--token", "  \t "), "token is blank"
    ),
    "dashboard-token-file-missing": Case(("dashboard", "--token-file", "nope.txt"), "--token-file"),
    "dashboard-token-file-blank": Case(
        ("dashboard", "--host", "0.0.0.0", "--token-file", "t.txt"),
        "token is blank",
        files={"t.txt": "\n  \n"},
    ),
    "up-port-too-big": Case(("up", "--no-shell", "--port", "99999"), "--port 99999"),
    "up-blank-token": Case(
        ("up", "--no-shell", "--host", "0.0.0.0", "--token", " "), "token is blank"
    ),
}


def _db_url(kind: str | None, tmp: Path) -> Iterator[dict[str, str]]:
    if kind is None:
        yield {}
    elif kind == "silent":
        with silent_listener() as port:
            yield {"GROVE_DB_URL": f"postgresql+psycopg://grove@127.0.0.1:{port}/grove"}
    elif kind == "closed":
        yield {"GROVE_DB_URL": f"postgresql+psycopg://grove@127.0.0.1:{_closed_port()}/grove"}
    elif kind in ("text", "random"):
        path = tmp / f"{kind}.db"
        path.write_bytes(b"hello, I am a text file\n" if kind == "text" else os.urandom(8192))
        yield {"GROVE_DB_URL": f"sqlite:///{path}"}
    else:
        yield {"GROVE_DB_URL": kind}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_and_writes_nothing(setup: Setup, case: Case, tmp_path: Path) -> None:
    repo = setup.repo
    if case.toml is not None:
        (repo / "grove.toml").write_bytes(case.toml)
    for name, content in case.files.items():
        target = repo / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        if name == "t.txt":
            target.chmod(0o600)
    args = [a.format(id=setup.agent_id) for a in case.args]
    before = snapshot(repo)
    db = _db_url(case.db, tmp_path)
    env = next(db)
    with endpoint(case.endpoint) as (url, contacted):
        started = time.monotonic()
        proc = run_cli(
            *args, cwd=repo, env={"ANTHROPIC_BASE_URL": url, **env}, timeout=CLI_TIMEOUT_S
        )
        took = time.monotonic() - started
        assert_refused(proc, case.expect)
        assert snapshot(repo) == before
        if case.endpoint == "scripted":
            assert contacted() == []
    db.close()
    assert took < CLI_TIMEOUT_S


@pytest.mark.parametrize("kind", ["silent", "closed", "text"])
def test_init_with_an_unusable_database_creates_no_home(repo: Path, kind: str) -> None:
    db = _db_url(kind, repo.parent)
    env = next(db)
    proc = run_cli("init", cwd=repo, env=env, timeout=CLI_TIMEOUT_S)
    db.close()
    assert_refused(proc, "cannot be used")
    assert not (repo / ".grove").exists()


@pytest.mark.postgres
@pytest.mark.parametrize("command", [("ls",), ("init",), ("spawn", "tester", "x")])
def test_a_missing_postgresql_database_is_named(repo: Path, command: tuple[str, ...]) -> None:
    url = PG_URL.rsplit("/", 1)[0] + "/grove_no_such_database"
    proc = run_cli(*command, cwd=repo, env={"GROVE_DB_URL": url}, timeout=CLI_TIMEOUT_S)
    assert_refused(proc, 'database "grove_no_such_database" does not exist')
    assert "createdb" in proc.stderr
    assert not (repo / ".grove").exists()


@pytest.mark.postgres
def test_nul_in_a_task_is_refused_on_postgresql(repo: Path, database: str) -> None:
    with Grove.init(repo) as g:
        with pytest.raises(BadInput, match="NUL character"):
            g.spawn("tester", "do \x00 it")
        with pytest.raises(BadInput, match="NUL character"):
            g.start_workflow({"name": "w", "nodes": [{"key": "a", "role": "tester", "task": "\0"}]})
        assert g.store.list_agents() == []


# --- the Python API --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCase:
    call: object  # Callable[[Grove], object]
    error: type[Exception]
    problem: str


def _wf(**fields: object) -> dict[str, object]:
    return {"name": "w", "nodes": [{"key": "a", "role": "tester", "task": "t"}], **fields}


def _nested(levels: int) -> object:
    value: object = []
    for _ in range(levels):
        value = [value]
    return value


API_CASES: dict[str, ApiCase] = {
    "spawn-nul": ApiCase(lambda g: g.spawn("tester", "a\x00b"), BadInput, "NUL character"),
    "spawn-surrogate": ApiCase(
        lambda g: g.spawn("tester", "fix \udcff"), BadInput, "not valid UTF-8"
    ),
    "spawn-model-nul": ApiCase(
        lambda g: g.spawn("tester", "x", model="m\x00"), BadInput, "NUL character"
    ),
    "spawn-budget-nan": ApiCase(
        lambda g: g.spawn("tester", "x", budget_usd=math.nan), BadInput, "got nan"
    ),
    "spawn-budget-inf": ApiCase(
        lambda g: g.spawn("tester", "x", budget_usd=math.inf), BadInput, "got inf"
    ),
    "workflow-budget-nan": ApiCase(
        lambda g: g.start_workflow(_wf(), budget_usd=math.nan), BadInput, "got nan"
    ),
    "workflow-nul-task": ApiCase(
        lambda g: g.start_workflow(
            {"name": "w", "nodes": [{"key": "a", "role": "tester", "task": "a\0"}]}
        ),
        WorkflowError,
        "NUL character",
    ),
    "workflow-surrogate-name": ApiCase(
        lambda g: g.start_workflow({**_wf(), "name": "w\udcff"}), WorkflowError, "UTF-8"
    ),
    "workflow-nul-input": ApiCase(
        lambda g: g.start_workflow(_wf(inputs=["f"]), {"f": "x\0"}), BadInput, "NUL character"
    ),
    "workflow-nested-mapping": ApiCase(
        lambda g: g.start_workflow(_wf(description=_nested(5000))),
        WorkflowError,
        "nested deeper than",
    ),
    "workflow-nested-yaml": ApiCase(
        lambda g: g.start_workflow(_deep(5000)), WorkflowError, "nested deeper than"
    ),
    "workflow-alias-bomb": ApiCase(lambda g: g.start_workflow(_bomb(7)), WorkflowError, "aliases"),
    "workflow-too-big-text": ApiCase(
        lambda g: g.start_workflow(BIG_YAML), WorkflowError, "larger than 1 MiB"
    ),
    "configure-lease-inf": ApiCase(
        lambda g: g.configure_worker(lease_s=math.inf), ConfigError, "worker.lease_s"
    ),
    "configure-poll-nan": ApiCase(
        lambda g: g.configure_worker(poll_s=math.nan), ConfigError, "worker.poll_s"
    ),
    "wait-timeout-nan": ApiCase(lambda g: g.wait([], timeout_s=math.nan), BadInput, "timeout"),
}


@pytest.mark.parametrize("case", list(API_CASES.values()), ids=list(API_CASES))
def test_python_api_refuses_bad_input_and_writes_nothing(setup: Setup, case: ApiCase) -> None:
    with Grove.open(setup.repo) as g:
        before = snapshot(setup.repo)
        started = time.monotonic()
        with pytest.raises(BadInput) as raised:
            case.call(g)  # type: ignore[operator]
        took = time.monotonic() - started
    message = str(raised.value)
    assert type(raised.value) is case.error, f"{type(raised.value).__name__}: {message}"
    assert "\n" not in message and len(message) < 400, message[:1000]
    assert case.problem in message, message
    assert snapshot(setup.repo) == before
    assert took < CLI_TIMEOUT_S


@pytest.mark.parametrize("kind", ["silent", "closed", "text", "random"])
def test_python_api_open_with_an_unusable_database(
    setup: Setup, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _db_url(kind, tmp_path)
    for name, value in next(db).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        Grove.open(setup.repo)
    db.close()
    message = str(raised.value)
    assert "\n" not in message and "cannot be used" in message, message
