"""Configuration: grove home resolution, grove.toml roles and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgrove.config import load_config
from agentgrove.errors import ConfigError
from agentgrove.grove import Grove
from agentgrove.roles import BUILTIN_ROLES, HAIKU, SONNET


def test_builtin_roles_and_their_model_classes() -> None:
    assert set(BUILTIN_ROLES) == {
        "spec-writer",
        "planner",
        "implementer",
        "tester",
        "reviewer",
        "file-writer",
        "integrator",
    }
    assert BUILTIN_ROLES["file-writer"].model == HAIKU
    assert all(r.model == SONNET for n, r in BUILTIN_ROLES.items() if n != "file-writer")
    assert "Write" not in BUILTIN_ROLES["reviewer"].tools


def test_home_is_dot_grove_at_the_repository_root(repo: Path) -> None:
    sub = repo / "a" / "b"
    sub.mkdir(parents=True)
    config = load_config(sub)
    assert config.root == repo.resolve() and config.is_git
    assert config.home == repo.resolve() / ".grove"
    assert config.db_url == f"sqlite:///{repo.resolve() / '.grove' / 'grove.db'}"


def test_environment_overrides_home_and_db(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GROVE_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GROVE_DB_URL", "postgresql+psycopg://localhost/test")
    config = load_config(repo)
    assert config.home == (tmp_path / "elsewhere").resolve()
    assert config.db_url == "postgresql+psycopg://localhost/test"


def test_grove_toml_overrides_and_adds_roles(repo: Path) -> None:
    (repo / "grove.toml").write_text(
        """
[roles.tester]
max_turns = 3

[roles.doc-writer]
description = "Writes docs"
model = "claude-haiku-4-5"
system_prompt = "You write documentation."
tools = ["Read", "Write"]

[worker]
heartbeat_s = 2.5
"""
    )
    config = load_config(repo)
    assert config.roles["tester"].max_turns == 3
    assert config.roles["tester"].model == BUILTIN_ROLES["tester"].model
    assert config.roles["doc-writer"].tools == ("Read", "Write")
    assert config.worker.heartbeat_s == 2.5


def test_sweep_interval_is_configurable_and_defaults_to_a_quarter_lease(repo: Path) -> None:
    assert load_config(repo).worker.sweep_interval_s == 15.0  # lease 60 s
    (repo / "grove.toml").write_text("[worker]\nlease_s = 8\n")
    assert load_config(repo).worker.sweep_interval_s == 2.0
    (repo / "grove.toml").write_text("[worker]\nlease_s = 8\nsweep_s = 0.5\n")
    assert load_config(repo).worker.sweep_interval_s == 0.5


def test_listening_for_work_is_on_unless_turned_off(repo: Path) -> None:
    assert load_config(repo).worker.listen is True
    (repo / "grove.toml").write_text("[worker]\nlisten = false\n")
    assert load_config(repo).worker.listen is False


@pytest.mark.parametrize(
    "text, message",
    [
        ("[roles.tester\n", "not valid TOML"),
        ("[roles.tester]\nmax_turns = 'many'\n", "roles.tester.max_turns"),
        ("[roles.tester]\ncolour = 'red'\n", "roles.tester.colour"),
        ("[roles.new]\ndescription = 'x'\n", "roles.new.model"),
        ("[worker]\nconcurrency = 0\n", "worker.concurrency"),
        ("[worker]\nsweep_s = 0\n", "worker.sweep_s"),
        ("[surprise]\n", "surprise"),
    ],
)
def test_invalid_grove_toml_names_the_key(repo: Path, text: str, message: str) -> None:
    (repo / "grove.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as info:
        load_config(repo)
    assert "\n" not in str(info.value)


def test_configure_worker_changes_an_open_grove_and_validates(grove: Grove) -> None:
    grove.configure_worker(poll_s=0.2, lease_s=5)
    assert grove.config.worker.poll_s == grove.service.config.worker.poll_s == 0.2
    assert grove.config.worker.lease_s == 5 and grove.config.worker.sweep_interval_s == 1.25
    with pytest.raises(ConfigError, match=r"worker\.poll_s: Input should be greater than 0"):
        grove.configure_worker(poll_s=0)
    with pytest.raises(ConfigError, match=r"worker\.nonsense: Extra inputs"):
        grove.configure_worker(nonsense=1)
    assert grove.config.worker.poll_s == 0.2  # a refused change changes nothing


def test_a_table_grove_toml_lacks_is_its_defaults(repo: Path) -> None:
    from agentgrove.settings import AdmissionSettings, BudgetSettings, WorkerSettings

    config = load_config(repo)  # no grove.toml
    assert not config.tables and not config.has_table("worker")
    assert config.worker == WorkerSettings() and config.budget == BudgetSettings()
    assert config.notify is None and config.roles == BUILTIN_ROLES
    (repo / "grove.toml").write_text("# nothing set yet\n")
    assert not load_config(repo).tables
    (repo / "grove.toml").write_text("[budget]\ndaily_usd = 5\n")
    config = load_config(repo)
    assert list(config.tables) == ["budget"] and config.budget.daily_usd == 5
    assert config.admission == AdmissionSettings() and config.roles == BUILTIN_ROLES


def test_the_store_takes_the_budget_table_or_its_defaults(repo: Path) -> None:
    from agentgrove.grove import _store_for
    from agentgrove.settings import BudgetSettings

    defaults = BudgetSettings()
    store = _store_for(load_config(repo))
    assert store.daily_limit_usd == defaults.daily_usd
    assert store.fail_when_exhausted == (defaults.on_exhausted == "fail")
    store.close()
    (repo / "grove.toml").write_text('[budget]\ndaily_usd = 5\non_exhausted = "fail"\n')
    store = _store_for(load_config(repo))
    assert store.daily_limit_usd == 5 and store.fail_when_exhausted
    store.close()


def test_configure_worker_keeps_the_other_tables(repo: Path) -> None:
    from agentgrove.config import with_worker

    (repo / "grove.toml").write_text("[budget]\ndaily_usd = 5\n")
    changed = with_worker(load_config(repo), poll_s=0.3)
    assert changed.worker.poll_s == 0.3 and changed.budget.daily_usd == 5
