"""The budget lock on PostgreSQL: a claim takes the database-wide reservation lock only when
the agent belongs to a limited scope, so claims of unlimited agents do not queue behind it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy

from agentgrove.grove import Grove
from agentgrove.models import AgentRecord
from agentgrove.store._admission import ADVISORY_LOCK_KEY
from tests.conftest import PG_URL, wait_until


def _claim_in_thread(grove: Grove, agent_id: str) -> tuple[threading.Thread, list[AgentRecord]]:
    got: list[AgentRecord] = []

    def claim() -> None:
        record = grove.store.claim("bench:1:x:y", 60, agent_id=agent_id)
        if record is not None:
            got.append(record)

    thread = threading.Thread(target=claim, daemon=True)
    thread.start()
    return thread, got


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
@pytest.mark.usefixtures("database")
def test_only_a_budgeted_claim_waits_for_the_budget_lock(repo: Path) -> None:
    with Grove.init(repo) as grove:
        free = grove.spawn("tester", "no budget anywhere")
        budgeted = grove.spawn("tester", "under a tree budget", budget_usd=1.0)
        holder = sqlalchemy.create_engine(PG_URL)
        with holder.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
            try:
                # Another session holds the lock: the unlimited agent is claimed all the same.
                thread, got = _claim_in_thread(grove, free.id)
                thread.join(timeout=30)
                assert [r.id for r in got] == [free.id]
                # The budgeted one waits for the lock (seen waiting in pg_locks) ...
                thread, got = _claim_in_thread(grove, budgeted.id)
                wait_until(lambda: holder_sees_a_waiter(holder, ADVISORY_LOCK_KEY), timeout_s=30)
                assert thread.is_alive() and not got
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})")
                conn.commit()
            # ... and is claimed, its grant reserved, once the lock is free.
            thread.join(timeout=30)
        holder.dispose()
        assert [r.id for r in got] == [budgeted.id]
        assert grove.get(budgeted.id).reserved_usd > 0


def holder_sees_a_waiter(engine: sqlalchemy.Engine, key: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                f" AND objid = {key}"
            ).scalar_one()
        )
