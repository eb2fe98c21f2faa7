"""Secrets never reach storage: the worker's database password, found in an agent's tool call,
tool result, final text and task, is in no row of the database and in no output of ``grove``."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy

from agentgrove.secrets import Redactor
from agentgrove.testing import ModelServer, Script, bash, say
from tests.conftest import PG_URL, run_cli
from tests.test_confinement import _recording

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


# --- Encoded, escaped and short secrets; secrets in key=value text (issue 9, item 6) -------------

SERVICE_TOKEN = "mst-4f1c9a7e2b6d8035-~~~???>>>-Zq9"
"""A token whose base64 has ``+`` and ``/`` (so the URL-safe alphabet differs)."""
LONG_TOKEN = "lt-" + "9f8e7d6c5b4a3210" * 5
"""Long enough (83 bytes) that ``base64`` wraps its encoding over two lines."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _forms(secret: str) -> dict[str, str]:
    """What an agent gets from ``secret`` with the usual shell tools and encoders."""
    raw = secret.encode()
    return {
        "base64": _b64(raw),
        "base64 unpadded": _b64(raw).rstrip("="),
        "base64 of echo": _b64(raw + b"\n"),
        "urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "urlsafe unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "base64 after 1 byte": _b64(b"x" + raw + b"\n"),
        "base64 after 2 bytes": _b64(b"xy" + raw + b"\n"),
        "base64 mid-stream": _b64(b"token: " + raw + b"; more text follows"),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "reversed": secret[::-1],
        "url-encoded": quote(secret, safe=""),
        "url-encoded lower": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(secret, safe="")),
        "url-encoded plus": quote_plus(secret),
    }


def _leaked(text: str, secret: str, *, window: int = 16) -> list[str]:
    """The forms of ``secret`` of which some ``window``-character piece is in ``text``."""
    # Not the stream around it, which is no secret.
    forms = {"plain": secret, **_forms(secret)}
    del forms["base64 mid-stream"]
    return [
        name
        for name, form in forms.items()
        if any(form[i : i + window] in text for i in range(max(1, len(form) - window + 1)))
    ]


def test_encoded_and_reversed_forms_of_a_secret_are_redacted() -> None:
    redact = Redactor.from_environ(
        {"MY_SERVICE_TOKEN": SERVICE_TOKEN, "LONG_TOKEN": LONG_TOKEN, "HOME": "/root"}
    )
    forms = _forms(SERVICE_TOKEN)
    assert forms["base64"] != forms["urlsafe"], "the token must exercise both alphabets"
    for name, form in forms.items():
        shown = redact(f"out: {form} end")
        assert _leaked(shown, SERVICE_TOKEN) == [], (name, shown)
        assert "[redacted:MY_SERVICE_TOKEN]" in shown, (name, shown)
        assert shown.startswith("out: ") and shown.endswith(" end"), (name, shown)
    # ``base64`` wraps at 76 columns: the encoding of a long token spans two lines.
    wrapped = subprocess.run(
        ["base64"], input=LONG_TOKEN.encode() + b"\n", capture_output=True, check=True
    ).stdout.decode()
    assert wrapped.count("\n") == 2
    shown = redact(f"$ echo $LONG_TOKEN | base64\n{wrapped}$ echo done\ndone")
    assert _leaked(shown, LONG_TOKEN) == [], shown
    assert shown.startswith("$ echo $LONG_TOKEN | base64\n") and shown.endswith("\ndone")
    # Ordinary base64 and hex are left alone.
    ordinary = f"{_b64(b'hello world, nothing secret here')} {'ab' * 20} /root"
    assert redact(ordinary) == ordinary


def test_json_escaped_secrets_are_redacted() -> None:
    """``json.dumps`` writes non-ASCII as ``\\u00e4`` and escapes ``"`` and ``\\``."""
    secrets = {"DB_PASS": "pässwörd-ünïcode", "X_TOKEN": 'quo"te\\back-slash-1'}
    redact = Redactor.from_environ(secrets)
    for name, secret in secrets.items():
        for ensure_ascii in (True, False):
            text = json.dumps({"command": f"echo {secret}"}, ensure_ascii=ensure_ascii)
            shown = redact(text)
            assert shown == f'{{"command": "echo [redacted:{name}]"}}', (ensure_ascii, shown)


def test_short_values_of_password_named_variables_are_redacted_as_words() -> None:
    redact = Redactor.from_environ(
        {"PGPASSWORD": "hunter2", "APP_SECRET": "k9z!", "FEATURE_KEY_ON": "true", "TOKEN": "abc"}
    )
    assert redact("PGPASSWORD=hunter2 psql; password hunter2.") == (
        "PGPASSWORD=[redacted:PGPASSWORD] psql; password [redacted:PGPASSWORD]."
    )
    assert redact("secret 'k9z!' used") == "secret '[redacted:APP_SECRET]' used"
    # Inside a longer word it is ordinary text; so are flags and values under 4 characters.
    kept = "xhunter2 hunter22 k9z!x true abc"
    assert redact(kept) == kept


def test_secret_key_value_pairs_and_authorization_headers_are_redacted() -> None:
    redact = Redactor({})
    cases = {
        "host=db user=grove password=s3cr3tPassw0rd dbname=grove": (
            "host=db user=grove password=[redacted] dbname=grove"
        ),
        "PGPASSWORD=hunter2 psql -h db": "PGPASSWORD=[redacted] psql -h db",
        "pwd=abc123 passwd=def456 secret=ghi789": (
            "pwd=[redacted] passwd=[redacted] secret=[redacted]"
        ),
        "token=tk-1 api_key=ak-2 API-KEY=ak-3": (
            "token=[redacted] api_key=[redacted] API-KEY=[redacted]"
        ),
        "db:\n  password: hunter2\n  user: grove": "db:\n  password: [redacted]\n  user: grove",
        '{"api_key": "ak-\\"quoted\\"", "name": "x"}': ('{"api_key": "[redacted]", "name": "x"}'),
        "client_secret = 'cs-value' and token: \"tv\"": (
            "client_secret = '[redacted]' and token: \"[redacted]\""
        ),
        "curl -H 'Authorization: Bearer eyJhbGciOi.payload.sig' https://h": (
            "curl -H 'Authorization: Bearer [redacted]' https://h"
        ),
        "Authorization: Basic dXNlcjpwYXNz\r\nHost: h": (
            "Authorization: Basic [redacted]\r\nHost: h"
        ),
        "proxy-authorization: token ghp_abc": "proxy-authorization: token [redacted]",
    }
    for text, expected in cases.items():
        assert redact(text) == expected, text
    # Code and placeholders that name a secret without holding one stay readable.
    kept = [
        "def connect(password: str, token: str | None = None) -> None:",
        "max_tokens=100 tokens: 5 keyboard=us PWD=/work/main OLDPWD=~/src",
        'PGPASSWORD=$PGPASSWORD psql; token="${TOKEN}"; password=<your password>',
        "api_key: null, secret: true, password=None, token=[redacted]",
    ]
    for text in kept:
        assert redact(text) == text, text
    # In structured data (a tool's JSON input), the key names the secret.
    assert redact(
        {"api_key": "ak-1", "password": "None", "x": [{"db_password": "pw"}], "tokens": "5"}
    ) == {
        "api_key": "[redacted]",
        "password": "None",
        "x": [{"db_password": "[redacted]"}],
        "tokens": "5",
    }


def test_tool_events_are_redacted_before_they_are_serialised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runtime's tool events: a secret ``json.dumps`` would escape, or the 300-character
    cut would split, is redacted first; non-ASCII text stays readable."""
    from agentgrove.runtime.claude import _short

    monkeypatch.setenv("DB_PASS", "pässwörd-ünïcode")
    monkeypatch.setenv("X_TOKEN", 'quo"te\\back-slash-1')
    monkeypatch.setenv("LONG_TOKEN", LONG_TOKEN)
    shown = _short({"command": 'echo pässwörd-ünïcode quo"te\\back-slash-1 — café'})
    assert shown == ('{"command": "echo [redacted:DB_PASS] [redacted:X_TOKEN] — café"}'), shown
    # The token straddles the cut: none of it may survive.
    cut = _short({"command": "x" * 250 + LONG_TOKEN})
    assert len(cut) <= 300 and "lt-9f8e" not in cut and LONG_TOKEN[:20] not in cut, cut


@pytest.mark.e2e
def test_an_agent_that_encodes_a_secret_from_its_environment_stores_no_form_of_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real CLI agent is allowed to see ``MY_SERVICE_TOKEN`` and prints it in base64
    (wrapped, URL-safe, shifted in a stream), hex and reversed, and the model API key too:
    no form of either is in ``grove.db`` or in what ``grove`` shows."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("LONG_TOKEN", LONG_TOKEN)
    (repo / "grove.toml").write_text(
        '[runtime]\nsandbox = "off"\nenv_allow = ["MY_SERVICE_TOKEN", "LONG_TOKEN"]\n'
    )
    t, k = '"$MY_SERVICE_TOKEN"', '"$ANTHROPIC_API_KEY"'
    command = "; ".join(
        [
            f"echo {t} | base64",
            f"printf %s {t} | base64 -w0 | tr '+/' '-_'; echo",
            f"echo {t} | rev",
            f"printf %s {t} | od -An -tx1 | tr -d ' \\n'; echo",
            f"echo x{t} | base64",
            'echo "$LONG_TOKEN" | base64',
            f"echo {k} | base64",
            f"echo {k} | rev",
        ]
    )
    steps, seen = _recording([bash(command)])
    assert run_cli("init", cwd=repo).returncode == 0
    with ModelServer(Script().on(role="tester", turns=steps)) as server:
        env = server.env()
        ran = run_cli("run", "tester", "encode it", "--json", cwd=repo, env=env)
        server.assert_done()
    assert ran.returncode == 0, ran.stderr
    agent = json.loads(ran.stdout)
    assert agent["status"] == "completed"
    # The agent did see the token and print its forms.
    printed = "\n".join(seen)
    assert _b64(SERVICE_TOKEN.encode() + b"\n") in printed
    assert SERVICE_TOKEN[::-1] in printed
    assert SERVICE_TOKEN.encode().hex() in printed
    outputs = [ran.stdout, ran.stderr]
    for args in (("logs", agent["id"]), ("logs", agent["id"], "--json"), ("show", agent["id"])):
        shown = run_cli(*args, cwd=repo, env={"COLUMNS": "400"})
        assert shown.returncode == 0, shown.stderr
        outputs.append(shown.stdout + shown.stderr)
    db = sqlite3.connect(repo / ".grove" / "grove.db")
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert "base64" in dump, "the transcript was recorded"
    for where, text in [("grove.db", dump), *(("output", o) for o in outputs)]:
        for secret in (SERVICE_TOKEN, LONG_TOKEN, env["ANTHROPIC_API_KEY"]):
            assert _leaked(text, secret) == [], (where, secret, _leaked(text, secret))
    assert "[redacted:MY_SERVICE_TOKEN]" in dump and "[redacted:LONG_TOKEN]" in dump
