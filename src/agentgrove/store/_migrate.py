"""Alembic, driven from code: the store upgrades its own schema; no alembic.ini is needed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default; idempotent)."""
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (for tests of the migrations themselves)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    cfg = _config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table (copy, drop, rename). With foreign keys
            # enforced, dropping a table other rows reference fails on a database that holds
            # data, so enforcement is off while migrating (the pragma only takes effect outside
            # a transaction) and the references are checked once it is done.
            _raw(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                known = set(_broken_references(conn)) if sqlite else set()
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite:
                    # Only what the migration broke: a database that already held a dangling
                    # reference must still open.
                    broken = [r for r in _broken_references(conn) if r not in known]
                    if broken:
                        raise RuntimeError(f"migration left broken references: {broken[:5]}")
        finally:
            if sqlite:
                with contextlib.suppress(Exception):  # never hide the migration's own error
                    _raw(conn, "PRAGMA foreign_keys=ON")


def _broken_references(conn: Connection) -> list[tuple[object, ...]]:
    return [tuple(row) for row in conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()]


def _raw(conn: Connection, sql: str) -> None:
    """Run ``sql`` on the DBAPI connection, outside any transaction SQLAlchemy would begin."""
    conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def is_current(engine: Engine) -> bool:
    """Whether the database carries the newest revision."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current == ScriptDirectory.from_config(_config()).get_current_head()


def autogenerate(engine: Engine, message: str) -> None:
    """Developer aid: write a new revision from the difference between the tables and the DB."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
