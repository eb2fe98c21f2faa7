"""What the store's query mixins (:mod:`._runs`, :mod:`._budgets`, :mod:`._log`, ...) may call
on the Store they are mixed into, declared once for the type checker
(:class:`agentgrove.store.Store` defines them); and :func:`utcnow`, the clock the store and its
callers stamp times with.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

if TYPE_CHECKING:
    from agentgrove.notify._kinds import NotificationKind
    from agentgrove.store._faults import CrashPoint


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreCore:
    deadline_version: int = 0
    """Changes (never back to a value it had) whenever a transaction of this Store that wrote
    an approval gate or a question, which may bring a deadline, has committed: a worker reads
    the earliest deadline again only then, not after every ending. Never before the commit:
    the worker reads at once, on a connection of its own, and would find nothing. Writes of
    other processes are found by the regular sweep."""

    _deadline_marks: itertools.count[int]
    _deadline_tx: threading.local
    """``pending``: the current write transaction of this thread wrote a deadline."""

    def _deadline_written(self) -> None:
        """Called inside the transaction of a write that holds an agent at a gate or records
        a question: :meth:`_deadline_committed` changes the version once it has committed (a
        rollback changes nothing)."""
        self._deadline_tx.pending = True

    def _deadline_committed(self) -> None:
        """Called by the write transaction once committed."""
        if getattr(self._deadline_tx, "pending", False):
            self._deadline_tx.pending = False
            self.deadline_version = next(self._deadline_marks)  # atomic under the GIL

    if TYPE_CHECKING:
        _crash_point: CrashPoint

        def _write(self, *, wake: bool = False) -> AbstractContextManager[Connection]: ...
        def _read(self) -> AbstractContextManager[Connection]: ...
        def _event(
            self,
            conn: Connection,
            agent_id: str | None,
            kind: str,
            data: dict[str, Any],
            at: datetime | None,
            run_id: str | None = None,
        ) -> None: ...
        def _insert_agent_row(self, conn: Connection, values: dict[str, Any]) -> str: ...
        def _notifies(self, kind: str, data: dict[str, Any]) -> NotificationKind | None: ...
        def _outbox(
            self, conn: Connection, event_id: int, kind: NotificationKind, at: datetime
        ) -> None: ...
        def _first_exhaustion(self, conn: Connection, scope: str, now: datetime) -> bool: ...
        def close_questions(self, conn: Connection, agent_ids: list[str]) -> None: ...
