"""Alembic, driven from code: the store upgrades its own schema; no alembic.ini is needed.

Alembic loads only to migrate: whether a database is current is one query against
``alembic_version`` (commands that only read never import it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from agentgrove.errors import ConfigError, DiskFull, StoreUnavailable
from agentgrove.store import _dialect

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

HEAD = "0010"
"""The newest revision in ``migrations/versions`` (a test checks it is alembic's head)."""


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default; idempotent)."""
    from alembic import command

    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (for tests of the migrations themselves)."""
    from alembic import command

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


def check_usable(engine: Engine) -> None:
    """Connect once. A database that cannot be used at all raises :class:`ConfigError`, one
    line naming the URL (password hidden), what is wrong and what to do: nothing answers at
    the address (the connect timeout is 5 s), the server refuses, the database does not exist,
    the file is not SQLite. A SQLite database locked past the busy timeout is
    :class:`StoreUnavailable` (try again)."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
    except DBAPIError as exc:
        raise _unusable(engine, exc) from None


def _unusable(engine: Engine, exc: DBAPIError) -> Exception:
    reason = " ".join(str(exc.orig).split())
    lowered = reason.lower()
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite":
        if "locked" in lowered or "busy" in lowered:
            return StoreUnavailable(exc)
        if _dialect.disk_full(exc) or ("disk i/o error" in lowered and _no_space(database)):
            # (SQLite says "disk I/O error" when it cannot create its -wal/-shm files)
            return DiskFull(exc, database)
        if "not a database" in lowered:
            reason = f"{database} is not a SQLite database"
            advice = "move the file away, or point GROVE_DB_URL at another file"
        else:
            advice = "check that the directory exists and is writable, or fix GROVE_DB_URL"
    elif "timeout expired" in lowered:
        reason = "no answer within 5 s (is a PostgreSQL server listening there?)"
        advice = "check the host and port in GROVE_DB_URL"
    elif "does not exist" in lowered and database:
        advice = f"create it (createdb {database}) or fix GROVE_DB_URL"
    else:
        advice = "check that the server runs and GROVE_DB_URL is right"
    shown = engine.url.render_as_string(hide_password=True)
    return ConfigError(f"database URL {shown!r} cannot be used: {reason}; {advice}")


def _no_space(database: str) -> bool:
    """Whether the file system holding the SQLite file ``database`` has (almost) no room."""
    try:
        found = os.statvfs(os.path.dirname(os.path.abspath(database)))
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < 256 * 1024


def is_current(engine: Engine) -> bool:
    """Whether the database carries the newest revision."""
    try:
        with engine.connect() as conn:
            current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except (OperationalError, ProgrammingError):  # no such table: never migrated
        return False
    return [tuple(row) for row in current] == [(HEAD,)]


def opened_current(engine: Engine) -> bool:
    """:func:`check_usable` and :func:`is_current` in one connection and one query (what
    ``Grove.open`` checks before every command): the revision the database carries is the
    newest. Raises what :func:`check_usable` raises for a database that cannot be used."""
    try:
        with engine.connect() as conn:
            try:
                current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            except (OperationalError, ProgrammingError) as exc:
                if conn.dialect.name == "sqlite" and "no such table" not in str(exc.orig):
                    raise  # locked, busy, I/O: the database itself cannot be used
                return False  # no such table: never migrated
    except DBAPIError as exc:
        raise _unusable(engine, exc) from None
    return [tuple(row) for row in current] == [(HEAD,)]


def autogenerate(engine: Engine, message: str) -> None:
    """Developer aid: write a new revision from the difference between the tables and the DB."""
    from alembic import command

    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
