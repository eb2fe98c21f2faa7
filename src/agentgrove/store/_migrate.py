"""Alembic, driven from code: the store upgrades its own schema; no alembic.ini is needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


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
