"""Shared fixtures. Every test gets its own repository and grove home; no test reaches the
network: the model is the scripted server on loopback, and API keys are fake."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from agentgrove.grove import Grove
from agentgrove.runtime import ScriptedRuntime
from agentgrove.workspaces import init_repo

GROVE = [sys.executable, "-m", "agentgrove"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real key, no inherited grove settings or terminal size, a private HOME for the CLI."""
    # COLUMNS/LINES: pytest-xdist's workers set 80x24, which would make the CLI's piped output
    # wrap where a plain pytest run does not.
    for var in (
        "GROVE_HOME",
        "GROVE_DB_URL",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "COLUMNS",
        "LINES",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit; the working directory for the test."""
    path = tmp_path / "repo"
    init_repo(path, {"README.md": "# test repo\n"})
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def scripted() -> ScriptedRuntime:
    return ScriptedRuntime()


@pytest.fixture
def grove(repo: Path, scripted: ScriptedRuntime) -> Iterator[Grove]:
    """An initialised grove in ``repo`` whose agents run on the in-process scripted runtime."""
    with Grove.init(repo, runtime=scripted) as g:
        yield g


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the real ``grove`` command in a subprocess; output captured as text."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*GROVE, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
"""The PostgreSQL the machine runs (trust auth, database ``test``)."""

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""``CI=true`` (``.ci/run`` sets it): a missing service fails the tests that need it."""


def need(what: str, available: bool, how: str) -> None:
    """Skip the test, with a reason, when ``what`` is missing on this machine; in CI fail it
    instead: there every test must run (``.ci/run`` installs and starts what they need)."""
    if available:
        return
    message = f"{what} is not available ({how})"
    if IN_CI:
        pytest.fail(f"{message}; CI must run every test", pytrace=False)
    pytest.skip(message)


@functools.cache
def postgres_answers() -> bool:
    """Whether the machine's PostgreSQL accepts a connection (asked once per process)."""
    engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") is not None:
        need(
            "PostgreSQL at 127.0.0.1:5432",
            postgres_answers(),
            "start it: pg_ctlcluster $(ls /etc/postgresql) main start",
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database every grove (and every process) of the test uses, through GROVE_DB_URL:
    the default SQLite file, or a PostgreSQL schema of the test's own, dropped afterwards."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    with pg_schema() as url:
        monkeypatch.setenv("GROVE_DB_URL", url)
        yield "postgres"


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of its own (dropped afterwards), as a GROVE_DB_URL."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL schema of the test's own (dropped afterwards), as a GROVE_DB_URL (for
    tests that hand it to several processes rather than set it for the test)."""
    with pg_schema() as url:
        yield url


def git(repo: Path, *args: str) -> str:
    """Run the real ``git`` (the user's, not grove's hardened one) in ``repo``; its stripped
    stdout. A failure raises ``CalledProcessError``."""
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; ``AssertionError`` after ``timeout_s`` (no test
    sleeps to wait for something: it waits for the thing)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.02)


def write_scripted_config(
    repo: Path, *, delay_s: float, lease_s: float, poll_s: float = 0.1
) -> None:
    """``grove.toml`` for worker-process tests: agents "complete" after ``delay_s`` without a
    model, with fast heartbeats and no shutdown grace."""
    (repo / "grove.toml").write_text(
        f"""
[runtime]
kind = "scripted"
scripted_delay_s = {delay_s}

[worker]
lease_s = {lease_s}
heartbeat_s = 0.3
poll_s = {poll_s}
grace_s = 0
"""
    )
