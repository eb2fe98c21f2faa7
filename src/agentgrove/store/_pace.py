"""The per-model start pace in the database, so every worker shares it: the claim loads the
buckets before asking the gate and stores them after a start; a 429 is recorded the same way.
The buckets' logic stays in :class:`agentgrove.admission.ModelPacer`; this module only moves
its state in and out of the ``model_pace`` table, inside the caller's transaction (serialised
on PostgreSQL by the admission advisory lock)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select

from agentgrove.store._core import StoreCore
from agentgrove.store._schema import model_pace

if TYPE_CHECKING:
    from agentgrove.admission import BucketState, ModelPacer

_SELECT = select(model_pace)
_DELETE = delete(model_pace)
_INSERT = insert(model_pace)

PaceState = dict[str, "BucketState"]


def load_pace(conn: Connection, pacer: ModelPacer) -> PaceState:
    """Give ``pacer`` the shared buckets; what it was given (to compare with afterwards)."""
    state: PaceState = {
        r.model: (r.rpm, r.ceiling, r.tokens, r.updated, r.held_until)
        for r in conn.execute(_SELECT)
    }
    pacer.load(state)
    return state


def save_pace(conn: Connection, pacer: ModelPacer, before: PaceState) -> None:
    """Store ``pacer``'s buckets if they changed since :func:`load_pace`."""
    after = pacer.state()
    if after == before:
        return
    rows: list[dict[str, Any]] = [
        {
            "model": model,
            "rpm": rpm,
            "ceiling": ceiling,
            "tokens": tokens,
            "updated": updated,
            "held_until": held_until,
        }
        for model, (rpm, ceiling, tokens, updated, held_until) in after.items()
    ]
    # Few rows (one per paced model), all rewritten: simpler than an upsert per dialect.
    conn.execute(_DELETE)
    if rows:
        conn.execute(_INSERT, rows)


class PaceQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    def record_rate_limit(
        self, pacer: ModelPacer, model: str, now: float, retry_after_s: float | None
    ) -> None:
        """The API rate-limited ``model``: slow every worker's starts on it (see
        :meth:`ModelPacer.rate_limited`); ``pacer`` is left holding the shared state."""
        from agentgrove.store._admission import ADVISORY_LOCK

        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(ADVISORY_LOCK)
            before = load_pace(conn, pacer)
            pacer.rate_limited(model, now, retry_after_s)
            save_pace(conn, pacer, before)
