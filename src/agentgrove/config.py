"""Where grove keeps its state and what a project configured: home, database URL, roles, worker.

Resolution order: ``GROVE_HOME`` / ``GROVE_DB_URL`` from the environment win; otherwise the grove
home is ``.grove/`` at the root of the git repository that contains the working directory (or the
working directory itself outside git), and the database is SQLite in that home. ``grove.toml`` at
the same root overrides and adds roles and worker settings. Invalid configuration raises
:class:`~agentgrove.errors.ConfigError` with one line naming the bad key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agentgrove.errors import BadInput, ConfigError

if TYPE_CHECKING:
    # Annotations only: the models load when a table is validated or its defaults first read.
    from agentgrove.roles import Role
    from agentgrove.settings import (
        AdmissionSettings,
        BudgetSettings,
        GitSettings,
        NotifySettings,
        RuntimeSettings,
        TelemetrySettings,
        WorkerSettings,
        WorkspaceSettings,
    )

CONFIG_FILE = "grove.toml"
HOME_DIR = ".grove"


def _env(name: str) -> str | None:
    """``GROVE_<NAME>`` from the environment; unset and empty are the same (no setting).

    Two plain variables do not need pydantic-settings, whose import alone cost every ``grove``
    command ~60 ms (issue 13: read commands within 1.3x of their floor)."""
    value = os.environ.get(f"GROVE_{name}", "")
    return value or None


_T = TypeVar("_T")


@dataclass(frozen=True)
class GroveConfig:
    """Everything a grove process needs to know about where it runs.

    ``tables``: the tables grove.toml has, each validated at :func:`load_config` (a bad one
    is its :class:`ConfigError`). A table it lacks is its settings model's defaults, built
    when first read: a command that never reads ``[worker]`` never loads pydantic for it
    (issue 13); :meth:`has_table` lets a reader skip what defaults would not change."""

    root: Path
    home: Path
    db_url: str
    is_git: bool
    tables: Mapping[str, object] = field(default_factory=dict, repr=False)

    def has_table(self, name: str) -> bool:
        """grove.toml has the table ``name`` (else its settings are the defaults)."""
        return name in self.tables

    def _table(self, name: str, default: Callable[[], _T]) -> _T:
        given = self.tables.get(name)
        if given is None:
            return default()
        return given  # type: ignore[return-value] # validated as this table by load_config

    @cached_property
    def roles(self) -> dict[str, Role]:
        """Every role: the built-ins, with grove.toml's ``[roles.NAME]`` merged in."""
        from agentgrove.roles import BUILTIN_ROLES

        return self._table("roles", lambda: dict(BUILTIN_ROLES))

    @cached_property
    def worker(self) -> WorkerSettings:
        from agentgrove.settings import WorkerSettings

        return self._table("worker", WorkerSettings)

    @cached_property
    def runtime(self) -> RuntimeSettings:
        from agentgrove.settings import RuntimeSettings

        return self._table("runtime", RuntimeSettings)

    @cached_property
    def budget(self) -> BudgetSettings:
        from agentgrove.settings import BudgetSettings

        return self._table("budget", BudgetSettings)

    @cached_property
    def telemetry(self) -> TelemetrySettings:
        from agentgrove.settings import TelemetrySettings

        return self._table("telemetry", TelemetrySettings)

    @cached_property
    def admission(self) -> AdmissionSettings:
        from agentgrove.settings import AdmissionSettings

        return self._table("admission", AdmissionSettings)

    @cached_property
    def git(self) -> GitSettings:
        from agentgrove.settings import GitSettings

        return self._table("git", GitSettings)

    @cached_property
    def workspace(self) -> WorkspaceSettings:
        from agentgrove.settings import WorkspaceSettings

        return self._table("workspace", WorkspaceSettings)

    @property
    def notify(self) -> NotifySettings | None:
        """``None``: no ``[notify]`` table, nobody is notified."""
        return self._table("notify", lambda: None)

    @property
    def repo(self) -> Path | None:
        """The git repository agents branch from (the service's workspaces'), ``None``
        outside git."""
        return self.root if self.is_git else None

    @property
    def worktrees_dir(self) -> Path:
        return self.home / "worktrees"

    @property
    def uses_default_db(self) -> bool:
        return self.db_url == sqlite_url(self.home)


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'grove.db'}"


def find_root(start: Path) -> tuple[Path, bool]:
    """The repository root containing ``start`` (walking up to a ``.git``), else ``start``."""
    start = start.resolve()
    for candidate in [start, *start.parents]:
        if (candidate / ".git").exists():
            return candidate, True
        if _is_git_dir(candidate):
            # A bare repository (or a .git directory) has no work tree: an agent "run in the
            # directory itself" would write over HEAD, refs and objects.
            raise BadInput(
                f"{candidate} is a git directory without a work tree (a bare repository): "
                f"clone it (git clone {candidate} DIR) and run grove in DIR"
            )
    return start, False


def _is_git_dir(path: Path) -> bool:
    """``path`` looks like a git directory, by git's own test (HEAD, objects/, refs/)."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def load_config(start: Path | None = None) -> GroveConfig:
    """Resolve home, database and roles for a process started in ``start`` (default: cwd);
    raises :class:`ConfigError` for a grove.toml that is not valid."""
    root, is_git = find_root(start or Path.cwd())
    home_setting = _env("HOME")
    home = (Path(home_setting) if home_setting else root / HOME_DIR).resolve()
    return GroveConfig(
        root=root,
        home=home,
        db_url=_env("DB_URL") or sqlite_url(home),
        is_git=is_git,
        tables=_read_file(root / CONFIG_FILE),
    )


def read_budget(root: Path) -> BudgetSettings:
    """The ``[budget]`` table of ``root``'s grove.toml as it is now (a long-lived view such as
    the dashboard re-reads it, so a limit added since its start shows), or :class:`ConfigError`."""
    from agentgrove.settings import BudgetSettings

    budget = _read_file(root / CONFIG_FILE).get("budget")
    return budget if isinstance(budget, BudgetSettings) else BudgetSettings()


def _read_file(path: Path) -> dict[str, object]:
    """grove.toml's tables, validated (see :func:`agentgrove.settings.validate_tables`); none
    when there is no file or it has no table, without loading pydantic."""
    if not path.exists():
        return {}
    import tomllib

    try:
        data = path.read_bytes()
        raw: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8 and retry"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file and retry") from exc
    if not raw:
        return {}
    from agentgrove.settings import validate_tables

    return validate_tables(path, raw)


def with_worker(config: GroveConfig, **changes: Any) -> GroveConfig:
    """``config`` with these ``[worker]`` settings changed, validated as grove.toml's are."""
    from agentgrove.settings import changed_worker

    worker = changed_worker(config.worker, changes)
    return replace(config, tables={**config.tables, "worker": worker})
