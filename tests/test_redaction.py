"""Secrets never reach storage: the worker's database password, found in an agent's tool call,
tool result, final text and task, is in no row of the database and in no output of ``grove``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from agentgrove.secrets import Redactor
from agentgrove.testing import ModelServer, Script, bash, say
from tests.conftest import PG_URL, run_cli

PASSWORD = "s3cr3t-pw"
# Trust authentication accepts any password: a real, working URL that carries one.
SECRET_URL = PG_URL.replace("postgres@", f"postgres:{PASSWORD}@")


@pytest.fixture
def secret_db_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of the test's own, reached through a URL with a password."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{SECRET_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("GROVE_DB_URL", url)
    yield url, schema
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def _dump(schema: str) -> str:
    """Every row of every table of the grove's schema, as text."""
    engine = sqlalchemy.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %(s)s",
                {"s": schema},
            ).scalars()
            return "\n".join(
                repr(row)
                for table in list(tables)
                for row in conn.exec_driver_sql(f'SELECT * FROM {schema}."{table}"')
            )
    finally:
        engine.dispose()


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_database_password_reaches_no_row_and_no_output(
    repo: Path, secret_db_url: tuple[str, str]
) -> None:
    url, schema = secret_db_url
    (repo / "grove.toml").write_text('[runtime]\nsandbox = "off"\n')
    script = Script().on(
        role="tester",
        turns=[
            # The URL and the bare password in a tool call's input, and so in its result; the
            # CLI's environment too, if it has it.
            bash(f"echo {url}; echo pw={PASSWORD}; printenv GROVE_DB_URL; true"),
            say(f"Connected with {url} (password {PASSWORD})."),
        ],
    )
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(script) as server:
        ran = run_cli(
            "run", "tester", f"log in with {PASSWORD}", "--json", cwd=repo, env=server.env()
        )
        server.assert_done()
    assert ran.returncode == 0, ran.stderr
    agent = json.loads(ran.stdout)
    assert agent["status"] == "completed"
    # What the agent said is still readable, with the password replaced.
    assert "127.0.0.1:5432/test" in agent["output"]
    outputs = [ran.stdout, ran.stderr]
    for args in (
        ("show", agent["id"]),
        ("show", agent["id"], "--json"),
        ("logs", agent["id"]),
        ("logs", agent["id"], "--json"),
        ("ls",),
        ("ls", "--json"),
    ):
        shown = run_cli(*args, cwd=repo, env={"COLUMNS": "400"})
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    dump = _dump(schema)
    assert "echo" in dump and "127.0.0.1:5432/test" in dump, "the transcript was recorded"
    assert PASSWORD not in dump
    for output in outputs:
        assert PASSWORD not in output


def test_urls_keep_everything_but_the_password() -> None:
    redact = Redactor({})
    assert redact("see postgresql://bob:hunter22@db.example:5432/x?sslmode=require now") == (
        "see postgresql://bob:[redacted]@db.example:5432/x?sslmode=require now"
    )
    # A token as the user part only, and secret query parameters.
    assert redact("https://ghp_abcdefgh1234@github.com/o/r") == "https://[redacted]@github.com/o/r"
    assert redact("https://h/x?user=a&password=pw1&token=t&page=2") == (
        "https://h/x?user=a&password=[redacted]&token=[redacted]&page=2"
    )
    assert redact("plain https://example.com/a@b and mail a@b.c") == (
        "plain https://example.com/a@b and mail a@b.c"
    )
    assert redact({"a": ["x://u:p@h"], "b": ("y://u:p@h",)}) == {
        "a": ["x://u:[redacted]@h"],
        "b": ("y://u:[redacted]@h",),
    }


def test_secret_looking_environment_values_are_redacted_wherever_they_appear() -> None:
    redact = Redactor.from_environ(
        {
            "ANTHROPIC_API_KEY": "sk-ant-0123456789",
            "GITHUB_TOKEN": "ghp_tokenvalue",
            "MY_PASS": "passvalue1",
            "BASIC_AUTH": "user:authvalue",
            "SERVICE_CREDENTIALS": "credvalue1",
            "DATABASE_URL": "mysql://root:dbpassword@db/app",
            "CACHE": "redis://:cachepass1@cache:6379",
            "GIT_AUTHOR_NAME": "Grove Agent Person",
            "SHORT_TOKEN": "abc",
            "PATH": "/usr/bin:/bin",
        }
    )
    text = (
        "key sk-ant-0123456789 tok ghp_tokenvalue pass passvalue1 auth user:authvalue "
        "cred credvalue1 bare dbpassword and cachepass1 by Grove Agent Person abc /usr/bin:/bin"
    )
    assert redact(text) == (
        "key [redacted:ANTHROPIC_API_KEY] tok [redacted:GITHUB_TOKEN] pass [redacted:MY_PASS] "
        "auth [redacted:BASIC_AUTH] cred [redacted:SERVICE_CREDENTIALS] bare "
        "[redacted:DATABASE_URL] and [redacted:CACHE] by Grove Agent Person abc /usr/bin:/bin"
    )


def test_every_path_to_storage_is_redacted(
    repo: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs, errors, tasks, events written by any code: the store's columns redact them."""
    from agentgrove.grove import Grove
    from agentgrove.runtime import ScriptedRuntime
    from agentgrove.runtime._base import RunResult, RunSpec
    from agentgrove.store._schema import metadata

    monkeypatch.setenv("DEPLOY_TOKEN", "tok-0123456789")
    leak = f"{SECRET_URL} tok-0123456789 {PASSWORD}"
    monkeypatch.setenv("WAREHOUSE_URL", SECRET_URL)

    def behaviour(spec: RunSpec) -> RunResult:
        if "fail" in spec.prompt:
            return RunResult(success=False, error=f"could not connect: {leak}")
        return RunResult(success=True, output=f"used {leak}")

    with Grove.init(repo, runtime=ScriptedRuntime(behaviour)) as grove:
        ok = grove.run("tester", f"use {leak}")
        failed = grove.run("tester", f"fail {leak}")
        grove.store.append_event(ok.id, "agent.warning", {leak: [leak, {"x": leak}]})
        grove.run_workflow(
            {"name": f"flow {leak}", "nodes": [{"key": "a", "role": "tester", "task": leak}]}
        )
        with grove.store.engine.connect() as conn:
            dump = "\n".join(
                repr(row)
                for table in metadata.sorted_tables
                for row in conn.execute(table.select())
            )
        assert grove.get(ok.id).output == (
            "used postgresql+psycopg://postgres:[redacted]@127.0.0.1:5432/test "
            "[redacted:DEPLOY_TOKEN] [redacted:WAREHOUSE_URL]"
        )
        assert "could not connect" in (grove.get(failed.id).error or "")
    assert "tok-0123456789" not in dump and PASSWORD not in dump
    assert dump.count("[redacted") > 10
