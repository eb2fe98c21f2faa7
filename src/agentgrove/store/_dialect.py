"""The seam between the store and a particular database.

SQLite (the embedded default): WAL journal, a busy timeout, and every write transaction opened
with ``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock; the claim is one
guarded ``UPDATE ... RETURNING``. PostgreSQL: the claim's subquery takes ``FOR UPDATE SKIP
LOCKED`` so concurrent claimers pass over each other's rows instead of queueing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import ColumnElement, Engine, Select, and_, event, exists, or_, select
from sqlalchemy.pool import NullPool

from agentgrove.models import AgentStatus
from agentgrove.store._schema import agents

READ_ONLY = "grove_read_only"
BUSY_TIMEOUT_MS = 30_000


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sqlalchemy.create_engine(url, pool_pre_ping=True, future=True)


def _sqlite_engine(url: str) -> Engine:
    # NullPool for file databases would reopen the file (and re-run pragmas) per transaction;
    # the default QueuePool keeps connections, one per thread in use.
    engine = sqlalchemy.create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=NullPool if url.endswith(":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sqlalchemy.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


_parent = agents.alias("parent")  # built once: aliasing a wide table is costly


def claimable(now: datetime) -> ColumnElement[bool]:
    """Pending agents past their backoff whose parent, if they wait for it, has completed."""
    parent = _parent
    parent_done = exists().where(
        parent.c.id == agents.c.parent_id, parent.c.status == AgentStatus.COMPLETED.value
    )
    return and_(
        agents.c.status == AgentStatus.PENDING.value,
        or_(agents.c.not_before.is_(None), agents.c.not_before <= now),
        or_(agents.c.after_parent.is_(False), parent_done),
    )


def claim_subquery(
    engine: Engine,
) -> Callable[[datetime, Collection[str] | None, str | None], Select[Any]]:
    """A function of *now* (and optional parent ids) giving the SELECT of the next claimable id."""
    skip_locked = engine.dialect.name == "postgresql"

    def next_claimable(
        now: datetime, parent_ids: Collection[str] | None = None, run_id: str | None = None
    ) -> Select[Any]:
        query = (
            select(agents.c.id)
            .where(claimable(now))
            .order_by(agents.c.priority.desc(), agents.c.created_at, agents.c.id)
            .limit(1)
        )
        if parent_ids is not None:
            query = query.where(agents.c.parent_id.in_(list(parent_ids)))
        if run_id is not None:
            query = query.where(agents.c.workflow_run_id == run_id)
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        return query

    return next_claimable
