"""The notification outbox (table ``notifications``): written with its event, claimed by one
worker at a time, and settled by that worker.

Contracts:

* :meth:`NotificationQueries._outbox` runs inside the transaction that writes the event (see
  :meth:`LogQueries._event`): a notification exists exactly when its event committed.
* :meth:`claim_notifications` is one conditional ``UPDATE ... RETURNING`` (its subquery takes
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL): a row due now, or whose lease ran out, becomes
  ``sending`` under ``owner`` with ``attempts + 1``. Two workers never hold the same row.
* Every later write is fenced by ``(owner, attempts)``, like an agent's lease: a worker whose
  lease was taken over changes nothing, and ``False`` says so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update

from agentgrove.notify._kinds import Notice, NotificationKind, notification_kind
from agentgrove.store._core import StoreCore, utcnow
from agentgrove.store._schema import (
    agents,
    budget_exhaustions,
    events,
    notifications,
    workflow_runs,
)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"


class NotificationQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    notify_kinds: frozenset[NotificationKind] = frozenset()
    """The notifications this process's ``[notify] events`` asks for: an event of another
    kind (or with no ``[notify]``) writes no outbox row, so nothing piles up unsent."""

    def _outbox(
        self, conn: Connection, event_id: int, kind: NotificationKind, at: datetime
    ) -> None:
        conn.execute(
            _INSERT,
            {
                "event_id": event_id,
                "kind": kind.value,
                "state": PENDING,
                "attempts": 0,
                "created_at": at,
            },
        )

    def _notifies(self, kind: str, data: Mapping[str, Any]) -> NotificationKind | None:
        if not self.notify_kinds:
            return None
        return notification_kind(kind, data, self.notify_kinds)

    def claim_notifications(self, owner: str, limit: int, lease_s: float) -> list[Notice]:
        """Claim up to ``limit`` notifications that are due, oldest first (see module doc)."""
        now = utcnow()
        with self._write() as conn:
            claimed = conn.execute(
                self._claim_statement(conn),
                {
                    "p_now": now,
                    "p_owner": owner,
                    "p_expires": now + timedelta(seconds=lease_s),
                    "p_limit": limit,
                },
            ).all()
            if not claimed:
                return []
            attempts = {row.event_id: row.attempts for row in claimed}
            rows = conn.execute(_DETAILS, {"p_ids": sorted(attempts)}).all()
        return [
            Notice(
                id=row.id,
                kind=NotificationKind(row.notification),
                event=row.kind,
                at=row.at,
                agent_id=row.agent_id,
                run_id=row.run_id,
                data=row.data or {},
                attempt=attempts[row.id],
                role=row.role,
                node=row.node_key,
                workflow=row.workflow,
            )
            for row in rows
        ]

    def _claim_statement(self, conn: Connection) -> Any:
        due = (
            select(notifications.c.event_id)
            .where(_CLAIMABLE)
            .order_by(notifications.c.event_id)
            .limit(bindparam("p_limit"))
        )
        if conn.dialect.name == "postgresql":
            # Concurrent workers pass over each other's rows instead of queueing on them.
            due = due.with_for_update(skip_locked=True)
        return (
            update(notifications)
            .where(notifications.c.event_id.in_(due.scalar_subquery()), _CLAIMABLE)
            .values(
                state=SENDING,
                lease_owner=bindparam("p_owner"),
                lease_expires_at=bindparam("p_expires", type_=notifications.c.created_at.type),
                attempts=notifications.c.attempts + 1,
            )
            .returning(notifications.c.event_id, notifications.c.attempts)
        )

    def notification_sent(self, event_id: int, owner: str, attempt: int) -> bool:
        return self._settle_notification(
            event_id, owner, attempt, state=SENT, finished_at=utcnow(), error=None
        )

    def notification_failed(
        self, event_id: int, owner: str, attempt: int, error: str, *, retry_at: datetime | None
    ) -> bool:
        """Record a failed delivery: due again at ``retry_at``, or given up (``None``)."""
        if retry_at is None:
            return self._settle_notification(
                event_id, owner, attempt, state=FAILED, finished_at=utcnow(), error=error
            )
        return self._settle_notification(
            event_id, owner, attempt, state=PENDING, not_before=retry_at, error=error
        )

    def release_notifications(self, claims: Collection[tuple[int, int]], owner: str) -> None:
        """Give back claimed notifications ``(event id, attempt)`` that were never tried (a
        worker stopping): due at once for any worker, the attempt not counted."""
        if not claims:
            return
        with self._write() as conn:
            for event_id, attempt in claims:
                conn.execute(
                    update(notifications)
                    .where(_fence(event_id, owner, attempt))
                    .values(
                        state=PENDING,
                        lease_owner=None,
                        lease_expires_at=None,
                        attempts=notifications.c.attempts - 1,
                    )
                )

    def _settle_notification(self, event_id: int, owner: str, attempt: int, **values: Any) -> bool:
        with self._write() as conn:
            result = conn.execute(
                update(notifications)
                .where(_fence(event_id, owner, attempt))
                .values(lease_owner=None, lease_expires_at=None, **values)
            )
        return result.rowcount == 1

    def notification_counts(self) -> list[tuple[str, str, int]]:
        """``(kind, state, count)`` for every kind and state that has rows."""
        with self._read() as conn:
            rows = conn.execute(
                select(notifications.c.kind, notifications.c.state, func.count()).group_by(
                    notifications.c.kind, notifications.c.state
                )
            ).all()
        return [(kind, state, int(n)) for kind, state, n in rows]

    def notification_states(self) -> dict[int, tuple[str, int, str | None]]:
        """Each notification's ``(state, attempts, error)`` by event id (tests, tools)."""
        with self._read() as conn:
            rows = conn.execute(
                select(
                    notifications.c.event_id,
                    notifications.c.state,
                    notifications.c.attempts,
                    notifications.c.error,
                )
            ).all()
        return {r.event_id: (r.state, r.attempts, r.error) for r in rows}

    def _first_exhaustion(self, conn: Connection, scope: str, now: datetime) -> bool:
        """Whether budget ``scope`` refuses an agent for the first time (the day's first, for
        the daily limit): recorded now. Inside the claim's transaction, which PostgreSQL
        serialises for every claim under a shared limit (the admission advisory lock)."""
        key = f"daily {now.date().isoformat()}" if scope == "daily" else scope
        seen = conn.execute(_EXHAUSTED, {"p_scope": key}).first()
        if seen is not None:
            return False
        conn.execute(insert(budget_exhaustions).values(scope=key, at=now))
        return True


def _fence(event_id: int, owner: str, attempt: int) -> Any:
    return and_(
        notifications.c.event_id == event_id,
        notifications.c.state == SENDING,
        notifications.c.lease_owner == owner,
        notifications.c.attempts == attempt,
    )


_NOW = bindparam("p_now", type_=notifications.c.created_at.type)
_CLAIMABLE = or_(
    and_(
        notifications.c.state == PENDING,
        or_(notifications.c.not_before.is_(None), notifications.c.not_before <= _NOW),
    ),
    and_(notifications.c.state == SENDING, notifications.c.lease_expires_at < _NOW),
)
_INSERT = insert(notifications)
_DETAILS = (
    select(
        events.c.id,
        events.c.kind,
        events.c.at,
        events.c.agent_id,
        func.coalesce(events.c.run_id, agents.c.workflow_run_id).label("run_id"),
        events.c.data,
        notifications.c.kind.label("notification"),
        agents.c.role,
        agents.c.node_key,
        workflow_runs.c.name.label("workflow"),
    )
    .join(notifications, notifications.c.event_id == events.c.id)
    .outerjoin(agents, agents.c.id == events.c.agent_id)
    .outerjoin(
        workflow_runs,
        workflow_runs.c.id == func.coalesce(events.c.run_id, agents.c.workflow_run_id),
    )
    .where(events.c.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(events.c.id)
)
_EXHAUSTED = select(budget_exhaustions.c.scope).where(
    budget_exhaustions.c.scope == bindparam("p_scope")
)
