"""``Store.deadline_version`` tells a worker to read the earliest gate or question deadline
again (agentgrove.worker's claim loop). The worker reads that deadline on its own connection as
soon as it sees the version change, and never again for the same version: so the version may
change only once the write that brought the deadline has committed. Changed any earlier, a
worker reading in between finds nothing, and the deadline waits for the regular sweep
(``sweep_interval_s``, 15 s at the defaults) instead of being honoured on time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy

from agentgrove.grove import Grove
from agentgrove.models import AgentStatus
from agentgrove.store._records import RunOutcome
from tests.conftest import wait_until


def _waiting_for_a_table_lock(engine: sqlalchemy.Engine, table: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted"
                f" AND relation = '{table}'::regclass"
            ).scalar_one()
        )


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
@pytest.mark.usefixtures("database")
def test_the_version_changes_only_once_the_question_is_committed(repo: Path) -> None:
    with Grove.init(repo) as grove:
        store = grove.store
        agent = grove.spawn("tester", "asks a person")
        claimed = store.claim("host:1:x:y", 60, agent_id=agent.id)
        assert claimed is not None
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        swept_at = datetime.now(UTC)
        before = store.deadline_version
        asked: list[bool] = []

        def ask() -> None:
            asked.append(
                store.await_answer(
                    agent.id,
                    claimed.lease_owner or "",
                    claimed.attempt,
                    question="Which colour?",
                    choices=(),
                    deadline_at=deadline,
                    default=None,
                    spent=RunOutcome(status=AgentStatus.AWAITING_INPUT),
                )
            )

        # Another session holds the questions table: the asking transaction moves the agent
        # to awaiting_input, then waits (seen in pg_locks) to insert its question.
        holder = sqlalchemy.create_engine(store.engine.url)
        try:
            with holder.connect() as conn:
                conn.exec_driver_sql("LOCK TABLE questions IN EXCLUSIVE MODE")
                thread = threading.Thread(target=ask, daemon=True)
                thread.start()
                try:
                    wait_until(lambda: _waiting_for_a_table_lock(holder, "questions"), 30)
                    # What a worker's claim loop does: a new version means read the deadline.
                    if store.deadline_version != before:
                        assert store.next_question_deadline(swept_at) is not None, (
                            "the version changed before its question was committed"
                        )
                finally:
                    conn.rollback()  # the lock goes; the question is written
                thread.join(timeout=30)
        finally:
            holder.dispose()
        assert asked == [True]
        # Committed: the version has changed, and the deadline it announces is there.
        assert store.deadline_version != before
        assert store.next_question_deadline(swept_at) == deadline
