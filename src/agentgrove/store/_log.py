"""The grove's record of what happened: the append-only event log, each agent's transcript of
SDK messages (a worker writes them in batches, :meth:`LogQueries.record_messages`), and each
agent's workspace row. A worker's writes here (transcript, workspace) are
fenced by its lease ``(owner, attempt)`` like its other writes, and :meth:`LogQueries._event`
writes inside the caller's transaction, so a transition and the event recording it commit
together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from agentgrove.models import AgentStatus, Event, WorkspaceRecord
from agentgrove.store import _leases
from agentgrove.store._core import StoreCore, utcnow
from agentgrove.store._records import WorkspaceSave
from agentgrove.store._rows import _workspace_from_row
from agentgrove.store._schema import agents, events, transcripts, workspaces

TranscriptMessage = tuple[int, str, dict[str, Any], tuple[str, dict[str, Any]] | None, datetime]
"""One SDK message for the transcript: ``(seq, kind, message, event, at)``; ``event``, if any,
is appended to the event log with it."""


class LogQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    _workspace_upsert: Any | None = None
    """The dialect's one-statement insert-or-update of a workspace row (the Store builds it
    on first use)."""

    # -- workspaces ------------------------------------------------------------------------

    def save_workspace(
        self,
        ws: WorkspaceRecord,
        *,
        lease: tuple[str, int] | None = None,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> bool:
        """Insert or replace the workspace row of ``ws.agent_id``, and append ``events``
        (``(kind, data)`` of that agent) in the same transaction.

        A worker passes its ``lease`` (owner, attempt): the write is fenced like every other
        write of a worker, and ``False`` means the lease is no longer its own (then nothing,
        events included, is written).
        """
        return self.save_workspaces([WorkspaceSave(ws, lease, events)])[0]

    def save_workspaces(self, saves: Sequence[WorkspaceSave]) -> list[bool]:
        """:meth:`save_workspace` for each of ``saves``, in order, in one transaction: the
        fences checked by one locking read, the rows and the plain events one statement each.
        ``[i]``: whether ``saves[i]`` was written."""
        with self._write() as conn:
            rows_now = _leases.executing_rows(
                conn, [s.workspace.agent_id for s in saves if s.lease is not None]
            )
            written = [
                s.lease is None or _leases.holds(rows_now.get(s.workspace.agent_id), *s.lease)
                for s in saves
            ]
            rows = [
                _workspace_values(s.workspace) for s, ok in zip(saves, written, strict=True) if ok
            ]
            if not rows:
                return written
            upsert = self._workspace_upsert
            if upsert is not None:
                conn.execute(upsert, rows)
            else:
                for values in rows:
                    agent_id = values.pop("agent_id")
                    updated = conn.execute(_UPDATE_WORKSPACE, {"p_agent_id": agent_id, **values})
                    if updated.rowcount == 0:
                        conn.execute(_INSERT_WORKSPACE, {"agent_id": agent_id, **values})
            self._events_at(
                conn,
                [
                    (s.workspace.agent_id, kind, data, utcnow())
                    for s, ok in zip(saves, written, strict=True)
                    if ok
                    for kind, data in s.events
                ],
            )
        return written

    def list_workspaces(
        self, *, state: str | None = None
    ) -> list[tuple[WorkspaceRecord, AgentStatus]]:
        query = select(workspaces, agents.c.status).join(
            agents, agents.c.id == workspaces.c.agent_id
        )
        if state is not None:
            query = query.where(workspaces.c.state == state)
        with self._read() as conn:
            return [(_workspace_from_row(r), AgentStatus(r.status)) for r in conn.execute(query)]

    # -- events and transcripts ------------------------------------------------------------

    def append_event(
        self, agent_id: str | None, kind: str, data: dict[str, Any], *, run_id: str | None = None
    ) -> None:
        with self._write() as conn:
            self._event(conn, agent_id, kind, data, None, run_id)

    def events(
        self, *, agent_id: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[Event]:
        query = select(events).where(events.c.id > after_id).order_by(events.c.id).limit(limit)
        if agent_id is not None:
            query = query.where(events.c.agent_id == agent_id)
        with self._read() as conn:
            return [
                Event(id=r.id, at=r.at, agent_id=r.agent_id, kind=r.kind, data=r.data)
                for r in conn.execute(query)
            ]

    def record_message(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        seq: int,
        kind: str,
        message: dict[str, Any],
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> bool:
        """Append one SDK message to the transcript (and an optional event), fenced by the lease."""
        return self.record_messages(
            agent_id, owner, attempt, [(seq, kind, message, event, utcnow())]
        )

    def record_messages(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        batch: Sequence[TranscriptMessage],
    ) -> bool:
        """Append SDK messages ``(seq, kind, message, event, at)`` to the transcript (and their
        events) in one transaction, fenced by the lease: ``False``, and nothing written, when
        the lease is no longer ours."""
        if not batch:
            return True
        with self._write() as conn:
            holder = conn.execute(
                _leases.HOLDS_LEASE, {"p_id": agent_id, "p_owner": owner, "p_attempt": attempt}
            )
            if holder.first() is None:
                return False
            self._messages(conn, agent_id, attempt, batch)
        return True

    def _messages(
        self, conn: Connection, agent_id: str, attempt: int, batch: Sequence[TranscriptMessage]
    ) -> None:
        """Insert ``batch`` into the transcript (and its events), in the caller's transaction,
        which has checked the lease."""
        self._messages_of(conn, [(agent_id, attempt, batch)])

    def _messages_of(
        self,
        conn: Connection,
        batches: Sequence[tuple[str, int, Sequence[TranscriptMessage]]],
    ) -> None:
        """:meth:`_messages` for each ``(agent_id, attempt, batch)``: every row in one
        statement, their plain events in another."""
        rows = [
            {
                "agent_id": agent_id,
                "attempt": attempt,
                "seq": seq,
                "at": at,
                "kind": kind,
                "message": message,
            }
            for agent_id, attempt, batch in batches
            for seq, kind, message, _, at in batch
        ]
        if not rows:
            return
        conn.execute(_INSERT_TRANSCRIPT, rows)
        self._events_at(
            conn,
            [
                (agent_id, event[0], event[1], at)
                for agent_id, _, batch in batches
                for _, _, _, event, at in batch
                if event is not None
            ],
        )

    def transcript(self, agent_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    transcripts.c.attempt,
                    transcripts.c.seq,
                    transcripts.c.kind,
                    transcripts.c.message,
                )
                .where(transcripts.c.agent_id == agent_id)
                .order_by(transcripts.c.id)
            ).all()
        return [
            {"attempt": r.attempt, "seq": r.seq, "kind": r.kind, "message": r.message} for r in rows
        ]

    def _events(
        self,
        conn: Connection,
        entries: Sequence[tuple[str, str, dict[str, Any]]],
        at: datetime,
    ) -> None:
        """:meth:`_event` for each ``(agent_id, kind, data)``, at ``at``: those that notify
        nobody in one statement."""
        self._events_at(conn, [(agent_id, kind, data, at) for agent_id, kind, data in entries])

    def _events_at(
        self, conn: Connection, entries: Sequence[tuple[str, str, dict[str, Any], datetime]]
    ) -> None:
        """:meth:`_event` for each ``(agent_id, kind, data, at)``, in order: those that notify
        nobody in one statement (after those that do: the order across kinds is not kept)."""
        plain = []
        for agent_id, kind, data, at in entries:
            if self._notifies(kind, data) is None:
                plain.append(
                    {"at": at, "agent_id": agent_id, "run_id": None, "kind": kind, "data": data}
                )
                self._crash_point.note(kind)
            else:
                self._event(conn, agent_id, kind, data, at)
        if plain:
            conn.execute(_INSERT_EVENT, plain)

    def _event(
        self,
        conn: Connection,
        agent_id: str | None,
        kind: str,
        data: dict[str, Any],
        at: datetime | None,
        run_id: str | None = None,
    ) -> None:
        when = at or utcnow()
        row = {"at": when, "agent_id": agent_id, "run_id": run_id, "kind": kind, "data": data}
        notification = self._notifies(kind, data)
        if notification is None:
            conn.execute(_INSERT_EVENT, row)
        else:
            # The outbox row commits with its event, or neither does (notifications module).
            event_id = conn.execute(_INSERT_EVENT_ID, row).scalar_one()
            self._outbox(conn, event_id, notification, when)
        self._crash_point.note(kind)


# Statements built once and executed with parameters: building SQLAlchemy expressions per call
# costs more CPU than SQLite spends running them.
_INSERT_EVENT = insert(events)
_INSERT_EVENT_ID = insert(events).returning(events.c.id)
_INSERT_TRANSCRIPT = insert(transcripts)
_INSERT_WORKSPACE = insert(workspaces)
# Without .values(), the SET clause is every column named in the parameters; the key is named
# p_agent_id because a bind parameter may not share a column's name in an UPDATE.
_UPDATE_WORKSPACE = update(workspaces).where(workspaces.c.agent_id == bindparam("p_agent_id"))


def _workspace_values(ws: WorkspaceRecord) -> dict[str, Any]:
    """The workspace row of ``ws``, every column."""
    return {
        "agent_id": ws.agent_id,
        "repo_path": ws.repo_path,
        "worktree_path": ws.worktree_path,
        "branch": ws.branch,
        "base_ref": ws.base_ref,
        "head_commit": ws.head_commit,
        "diffstat": ws.diffstat,
        "files_changed": list(ws.files_changed),
        "state": ws.state,
        "pushed_commit": ws.pushed_commit,
    }
