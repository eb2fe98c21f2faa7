"""The seam between the store and a particular database.

SQLite (the embedded default): WAL journal, a busy timeout, and every write transaction opened
with ``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock; the claim is one
guarded ``UPDATE ... RETURNING``. PostgreSQL: the claim's subquery takes ``FOR UPDATE SKIP
LOCKED`` so concurrent claimers pass over each other's rows instead of queueing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    and_,
    bindparam,
    event,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from agentgrove.errors import ConfigError, DiskFull, StoreUnavailable
from agentgrove.models import AgentStatus
from agentgrove.store._schema import agents, workspaces

READ_ONLY = "grove_read_only"
BUSY_TIMEOUT_MS = 30_000
BUSY_TIMEOUT_ENV = "GROVE_SQLITE_BUSY_TIMEOUT_MS"
"""Overrides :data:`BUSY_TIMEOUT_MS` (milliseconds): how long a SQLite write waits for another
connection's lock before the store reports the database unavailable."""


def busy_timeout_ms() -> int:
    raw = os.environ.get(BUSY_TIMEOUT_ENV)
    if raw is None:
        return BUSY_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{BUSY_TIMEOUT_ENV}={raw!r}: give a whole number of milliseconds")
    return value


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # pool_pre_ping: a connection the server dropped (a restart) is replaced before use
    # instead of failing the next transaction. A short connect timeout: while the server is
    # down, each attempt fails in seconds and the worker's back-off decides when to try again.
    connect_args = {"connect_timeout": 5} if "psycopg" in url.split("://", 1)[0] else {}
    return sqlalchemy.create_engine(url, pool_pre_ping=True, future=True, connect_args=connect_args)


_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o error")


def disk_full(exc: BaseException) -> bool:
    """Whether a driver error says the database's disk (or file system quota) is full."""
    cause = getattr(exc, "orig", None) or exc
    if getattr(cause, "sqlstate", None) == "53100":  # PostgreSQL's disk_full
        return True
    text = str(cause).lower()
    return "database or disk is full" in text or "no space left on device" in text


def unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the database cannot be used *right now* (try again later),
    rather than that the statement is wrong: a dropped or refused connection (any
    ``OperationalError`` on PostgreSQL, a disconnect SQLAlchemy noticed), or SQLite's "database
    is locked" past the busy timeout. SQLite's other ``OperationalError`` errors (no such table, a
    syntax error) are bugs, not outages."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.orig
    if isinstance(cause, ConnectionError):  # the fault seam's stand-in for a dropped connection
        return True
    if type(cause).__module__.startswith("sqlite3"):
        return any(word in str(cause).lower() for word in _SQLITE_UNAVAILABLE)
    return True


@contextmanager
def mapped_errors(where: str = "the database") -> Iterator[None]:
    """Raise :class:`StoreUnavailable` in place of a driver error that means the database is
    unavailable (:func:`unavailable`), :class:`DiskFull` (naming ``where``) for a full disk;
    other errors pass through unchanged."""
    try:
        yield
    except DBAPIError as exc:
        if disk_full(exc):
            raise DiskFull(exc, where) from exc
        if unavailable(exc):
            raise StoreUnavailable(exc) from exc
        raise


def unusable_url(url: str, exc: Exception) -> str:
    """One line for a database URL that cannot be used, its password hidden."""
    try:
        shown = repr(make_url(url).render_as_string(hide_password=True))
    except ArgumentError:
        shown = "(not a URL)"  # not echoed: it may hold a password
    reason = " ".join(str(exc).split())
    return (
        f"database URL {shown} cannot be used: {reason}; set GROVE_DB_URL to "
        "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


def _sqlite_engine(url: str) -> Engine:
    # NullPool for file databases would reopen the file (and re-run pragmas) per transaction;
    # the default QueuePool keeps connections, one per thread in use.
    busy_ms = busy_timeout_ms()
    engine = sqlalchemy.create_engine(
        url,
        connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
        poolclass=NullPool if url.endswith(":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # 64 MB of page cache: a grove with tens of thousands of agents and their events
        # otherwise rereads its indexes from the OS on every step.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sqlalchemy.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


_parent = agents.alias("parent")  # built once: aliasing a wide table is costly


def claimable(now: Any) -> ColumnElement[bool]:
    """Pending agents past their backoff whose parent, if they wait for it, has completed."""
    parent_done = exists().where(
        _parent.c.id == agents.c.parent_id, _parent.c.status == AgentStatus.COMPLETED.value
    )
    return and_(
        agents.c.status == AgentStatus.PENDING.value,
        or_(agents.c.not_before.is_(None), agents.c.not_before <= now),
        or_(agents.c.after_parent.is_(False), parent_done),
    )


def claim_statements(engine: Engine, *, gated: bool = False, roles: bool = False) -> dict[str, Any]:
    """The claim as one guarded ``UPDATE ... RETURNING`` per way of choosing the agents, built
    once and run with parameters ``p_now``, ``p_owner``, ``p_host``, ``p_expires`` and, by
    kind, ``p_id``, ``p_parents`` (a list) or ``p_run``. Kinds: ``next``, ``id``, ``parents``,
    ``run``; all but ``id`` claim up to ``p_limit`` agents at once (the first ``p_limit`` in
    claim order, on PostgreSQL passing over rows other claimers hold). ``gated``: also pass
    over the roles in ``p_skip_roles`` and the models in ``p_skip_models`` (non-empty lists:
    admission). ``roles``: only agents of the roles in ``p_roles`` (a non-empty list:
    ``grove worker --roles``). Each returned row carries ``id``, ``attempt``, ``role``,
    ``model``, ``priority`` and ``created_at`` (for the claim order, which RETURNING does not
    keep), and ``parent_id``, ``workflow_run_id``, ``budget_usd``, ``max_budget_usd`` (for
    the reservation)."""
    now = bindparam("p_now", type_=agents.c.created_at.type)
    skip_locked = engine.dialect.name == "postgresql"
    gate: list[ColumnElement[bool]] = []
    if gated:
        gate = [
            agents.c.role.not_in(bindparam("p_skip_roles", expanding=True)),
            agents.c.model.not_in(bindparam("p_skip_models", expanding=True)),
        ]
    if roles:
        gate.append(agents.c.role.in_(bindparam("p_roles", expanding=True)))

    def next_of(*conditions: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        query = (
            select(agents.c.id)
            .where(claimable(now), *gate, *conditions)
            .order_by(agents.c.priority, agents.c.created_at, agents.c.id)
            .limit(bindparam("p_limit", type_=Integer))
        )
        if not skip_locked:
            # SQLite: one writer at a time, the subquery evaluated once.
            return [agents.c.id.in_(query), claimable(now), *gate]
        # Concurrent claimers pass over each other's rows instead of queueing on them. The
        # pick is a MATERIALIZED CTE, evaluated once: as a plain IN (subquery) the planner may
        # run it again per row of the UPDATE, claiming more than p_limit. The UPDATE joins
        # the picked ids (UPDATE ... FROM picked) and checks nothing again: the rows are
        # locked, and FOR UPDATE has already checked them on their newest version. Checked
        # again, the planner (misled by stale statistics) scanned every pending row once per
        # picked one.
        picked = query.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        return [agents.c.id == picked.c.id]

    targets: dict[str, list[ColumnElement[bool]]] = {
        "next": next_of(),
        "id": [agents.c.id == bindparam("p_id"), claimable(now), *gate],
        "parents": next_of(agents.c.parent_id.in_(bindparam("p_parents", expanding=True))),
        "run": next_of(agents.c.workflow_run_id == bindparam("p_run")),
    }
    return {
        kind: update(agents)
        .where(*target)
        .values(
            status=AgentStatus.EXECUTING.value,
            lease_owner=bindparam("p_owner"),
            lease_expires_at=bindparam("p_expires", type_=agents.c.created_at.type),
            host=bindparam("p_host"),
            attempt=agents.c.attempt + 1,
            started_at=func.coalesce(agents.c.started_at, now),
            wait_reason=None,  # a refusal of this claim (budget, admission) sets it again
        )
        .returning(
            agents.c.id,
            agents.c.attempt,
            agents.c.role,
            agents.c.model,
            agents.c.priority,
            agents.c.created_at,
            agents.c.parent_id,
            agents.c.workflow_run_id,
            agents.c.budget_usd,
            agents.c.max_budget_usd,
        )
        for kind, target in targets.items()
    }


def workspace_upsert(engine: Engine) -> Any | None:
    """``INSERT INTO workspaces ... ON CONFLICT (agent_id) DO UPDATE`` (every column from the
    parameters), one statement where an UPDATE then an INSERT took two; ``None`` for a database
    without it (the store then does the two)."""
    insert: Any
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    statement = insert(workspaces)
    return statement.on_conflict_do_update(
        index_elements=[workspaces.c.agent_id],
        set_={c.name: statement.excluded[c.name] for c in workspaces.c if c.name != "agent_id"},
    )
