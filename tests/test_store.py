"""The store: schema = migrations, guarded transitions, fencing, atomic claims."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from agentgrove.errors import BadInput, UnknownAgent
from agentgrove.models import AgentStatus, ErrorKind, WorkspaceRecord
from agentgrove.store import NewAgent, RunOutcome, Store
from agentgrove.store._core import utcnow
from agentgrove.store._migrate import downgrade, is_current, upgrade
from agentgrove.store._records import Ending, WorkspaceSave
from agentgrove.store._schema import metadata

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same promises on both databases; each Postgres test gets a schema of its own."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'grove.db'}")
        upgrade(s.engine)
        yield s
        s.close()
        return
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    s = Store(f"{PG_URL}?options=-csearch_path%3D{schema}")
    upgrade(s.engine)
    yield s
    s.close()
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def _new(store: Store, **kw: object) -> str:
    return store.insert_agent(NewAgent(role="r", task="t", model="m", **kw)).id  # type: ignore[arg-type]


def test_migrations_produce_exactly_the_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert is_current(store.engine)


def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_insert_writes_agent_and_spawn_event_together(store: Store) -> None:
    agent_id = _new(store)
    agent = store.get_agent(agent_id)
    assert agent.status is AgentStatus.PENDING and agent.attempt == 0
    assert [e.kind for e in store.events(agent_id=agent_id)] == ["agent.spawned"]


def test_unknown_parent_writes_nothing(store: Store) -> None:
    with pytest.raises(UnknownAgent):
        _new(store, parent_id="nope")
    assert store.list_agents() == [] and store.events() == []


def test_claim_takes_oldest_pending_and_counts_the_attempt(store: Store) -> None:
    first, second = _new(store), _new(store)
    claimed = store.claim("w1", 60)
    assert claimed is not None and claimed.id == first
    assert claimed.status is AgentStatus.EXECUTING and claimed.attempt == 1
    assert claimed.lease_owner == "w1" and claimed.lease_expires_at is not None
    again = store.claim("w2", 60)
    assert again is not None and again.id == second
    assert store.claim("w3", 60) is None


def test_claim_respects_not_before(store: Store) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    later = utcnow() + timedelta(seconds=60)
    assert store.release(agent_id, "w", 1, refund_attempt=False, reason="retry", not_before=later)
    assert store.claim("w", 60) is None
    assert store.claim("w", 60, at=utcnow() + timedelta(seconds=61)) is not None


def test_concurrent_claims_never_hand_out_an_agent_twice(store: Store) -> None:
    ids = {_new(store) for _ in range(200)}
    got: list[str] = []
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        while (agent := store.claim(owner, 60)) is not None:
            with lock:
                got.append(agent.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


def test_fenced_writes_of_a_stale_owner_change_nothing(store: Store) -> None:
    agent_id = _new(store)
    agent = store.claim("w1", 60)
    assert agent is not None
    # Lease expires and the sweep returns it; another worker claims attempt 2.
    assert store.sweep_expired(at=utcnow() + timedelta(seconds=61)) == [agent_id]
    taken = store.claim("w2", 60)
    assert taken is not None and taken.attempt == 2
    stale = RunOutcome(status=AgentStatus.COMPLETED, output="stale")
    assert not store.heartbeat(agent_id, "w1", 1, 60)
    assert not store.record_message(agent_id, "w1", 1, 0, "x", {"stale": True})
    assert not store.finish(agent_id, "w1", 1, stale)
    assert store.get_agent(agent_id).status is AgentStatus.EXECUTING
    assert store.transcript(agent_id) == []
    assert store.finish(agent_id, "w2", 2, RunOutcome(status=AgentStatus.COMPLETED, output="ok"))
    final = store.get_agent(agent_id)
    assert final.status is AgentStatus.COMPLETED and final.output == "ok"


def test_finish_is_one_transition(store: Store) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    outcome = RunOutcome(
        status=AgentStatus.FAILED, error="boom", error_kind=ErrorKind.PERMANENT, tokens_in=5
    )
    assert store.finish(agent_id, "w", 1, outcome)
    assert not store.finish(agent_id, "w", 1, outcome)
    agent = store.get_agent(agent_id)
    assert agent.error_kind is ErrorKind.PERMANENT and agent.tokens_in == 5
    assert [e.kind for e in store.events(agent_id=agent_id)][-1] == "agent.failed"


def test_release_refunds_the_attempt_only_when_asked(store: Store) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    assert store.release(agent_id, "w", 1, refund_attempt=True, reason="shutdown")
    assert store.get_agent(agent_id).attempt == 0
    store.claim("w", 60)
    assert store.release(agent_id, "w", 1, refund_attempt=False, reason="retry")
    agent = store.get_agent(agent_id)
    assert agent.status is AgentStatus.PENDING and agent.attempt == 1


def test_cancel_stops_heartbeats_and_finished_agents_stay(store: Store) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    assert store.cancel(agent_id)
    assert not store.heartbeat(agent_id, "w", 1, 60)
    assert not store.cancel(agent_id)
    assert store.get_agent(agent_id).status is AgentStatus.CANCELLED


def test_sweep_fails_agents_past_max_attempts(store: Store) -> None:
    agent_id = _new(store, max_attempts=1)
    store.claim("w", 60)
    store.sweep_expired(at=utcnow() + timedelta(seconds=61))
    agent = store.get_agent(agent_id)
    assert agent.status is AgentStatus.FAILED and agent.error_kind is ErrorKind.TIMEOUT


def test_resolve_id_prefixes(store: Store) -> None:
    agent_id = _new(store)
    assert store.resolve_id(agent_id[:6]) == agent_id
    with pytest.raises(BadInput, match="too short"):
        store.resolve_id(agent_id[:2])
    with pytest.raises(UnknownAgent):
        store.resolve_id("zzzzzz")


def test_claim_by_id_also_waits_for_not_before(store: Store) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    later = utcnow() + timedelta(seconds=60)
    store.release(agent_id, "w", 1, refund_attempt=False, reason="retry", not_before=later)
    assert store.claim("w", 60, agent_id=agent_id) is None
    assert store.claim("w", 60, agent_id=agent_id, at=later) is not None


def test_a_database_holding_agents_upgrades_from_the_first_revision(store: Store) -> None:
    # Later revisions rebuild tables other rows reference (SQLite batch mode): with data in
    # them, foreign keys must not stop the migration, nor be left broken by it.
    downgrade(store.engine, "base")
    upgrade(store.engine, "0001")
    columns = "role, task, model, attempt, max_attempts, timeout_s, tokens_in, tokens_out"
    columns += ", cost_usd, duration_ms, priority, created_at"
    values = "'r', 't', 'm', 1, 3, 60, 0, 0, 0, 0, 0, '2026-01-01 00:00:00+00'"
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO agents (id, status, {columns}) VALUES ('a1', 'completed', {values})"
        )
        conn.exec_driver_sql(
            f"INSERT INTO agents (id, parent_id, status, {columns}) "
            f"VALUES ('a2', 'a1', 'pending', {values})"
        )
        conn.exec_driver_sql(
            "INSERT INTO events (at, agent_id, kind, data) "
            "VALUES ('2026-01-01 00:00:00+00', 'a1', 'agent.spawned', '{}')"
        )
    upgrade(store.engine)
    assert is_current(store.engine)
    child = store.get_agent("a2")
    assert child.parent_id == "a1" and child.status is AgentStatus.PENDING
    assert [e.kind for e in store.events(agent_id="a1")] == ["agent.spawned"]
    with pytest.raises(UnknownAgent):  # references are enforced again afterwards
        _new(store, parent_id="nope")


def test_a_swept_parent_does_not_keep_waiting_for_its_children(store: Store) -> None:
    agent_id = _new(store)
    claimed = store.claim("w", 30, agent_id=agent_id)
    assert claimed is not None
    assert store.mark_waiting_for_children(agent_id, "w", 1, True)
    assert store.get_agent(agent_id).wait_reason == "waiting for its children"
    assert not store.mark_waiting_for_children(agent_id, "stale", 1, False)  # fenced
    assert store.sweep_expired(at=utcnow() + timedelta(seconds=60)) == [agent_id]
    assert store.get_agent(agent_id).wait_reason is None


def test_a_workspace_row_is_inserted_then_replaced_and_fenced_with_its_events(
    store: Store,
) -> None:
    agent_id = _new(store)
    store.claim("w", 60)
    first = WorkspaceRecord(agent_id, "/repo", "/repo/wt", "grove/x", "abc", state="active")
    assert store.save_workspace(first, lease=("w", 1), events=[("agent.warning", {"m": 1})])
    later = replace(first, head_commit="def", diffstat="1 file", files_changed=("a.txt",))
    assert store.save_workspace(later, lease=("w", 1))
    assert store.get_agent(agent_id).workspace == later
    # Not the lease holder: neither the row nor the events change.
    assert not store.save_workspace(first, lease=("other", 1), events=[("agent.warning", {})])
    assert store.get_agent(agent_id).workspace == later
    kinds = [e.kind for e in store.events(agent_id=agent_id)]
    assert kinds == ["agent.spawned", "agent.claimed", "agent.warning"]


def test_endings_in_one_transaction_each_pass_their_own_fence(store: Store) -> None:
    ids = [_new(store) for _ in range(4)]
    claimed = store.claim_many("w", 60, 4)
    assert sorted(a.id for a in claimed) == sorted(ids)
    done = RunOutcome(status=AgentStatus.COMPLETED, output="ok", tokens_in=3, cost_usd=0.5)
    failed = RunOutcome(status=AgentStatus.FAILED, error="boom", error_kind=ErrorKind.PERMANENT)
    tail = [(0, "ScriptedResult", {"n": 1}, ("agent.result", {"success": True}), utcnow())]
    made = store.finish_many(
        [
            Ending(ids[0], "w", 1, done, tail),
            Ending(ids[1], "someone-else", 1, done),  # not its lease
            Ending(ids[2], "w", 1, failed),
            Ending(ids[0], "w", 1, failed),  # a second ending of one agent never passes
            Ending(ids[3], "w", 2, done),  # not its attempt
        ]
    )
    assert made == [True, False, True, False, False]
    rows = {i: store.get_agent(i) for i in ids}
    assert rows[ids[0]].status is AgentStatus.COMPLETED and rows[ids[0]].tokens_in == 3
    assert rows[ids[0]].cost_usd == 0.5 and rows[ids[0]].lease_owner is None
    assert rows[ids[2]].status is AgentStatus.FAILED and rows[ids[2]].error == "boom"
    assert {rows[i].status for i in ids[1::2]} == {AgentStatus.EXECUTING}
    assert [m["message"] for m in store.transcript(ids[0])] == [{"n": 1}]
    kinds = [e.kind for e in store.events(agent_id=ids[0])]
    assert kinds == ["agent.spawned", "agent.claimed", "agent.result", "agent.completed"]
    assert [e.kind for e in store.events(agent_id=ids[1])] == ["agent.spawned", "agent.claimed"]


def test_workspace_rows_in_one_transaction_each_pass_their_own_fence(store: Store) -> None:
    a, b = _new(store), _new(store)
    store.claim_many("w", 60, 2)
    ws_a = WorkspaceRecord(a, "/repo", "/repo/a", "grove/a", "abc", state="active")
    ws_b = WorkspaceRecord(b, "/repo", "/repo/b", "grove/b", "abc", state="active")
    later_a = replace(ws_a, head_commit="def")
    written = store.save_workspaces(
        [
            WorkspaceSave(ws_a, ("w", 1), [("agent.warning", {"m": "a"})]),
            WorkspaceSave(ws_b, ("other", 1), [("agent.warning", {"m": "b"})]),
            WorkspaceSave(later_a, ("w", 1)),  # the same row again: the later one stays
        ]
    )
    assert written == [True, False, True]
    assert store.get_agent(a).workspace == later_a
    assert store.get_agent(b).workspace is None
    assert [e.data for e in store.events(agent_id=a) if e.kind == "agent.warning"] == [{"m": "a"}]
    assert [e.kind for e in store.events(agent_id=b)] == ["agent.spawned", "agent.claimed"]


def test_children_of_many_parents_in_one_read(store: Store) -> None:
    p1, p2, lone = _new(store), _new(store), _new(store)
    kids = [_new(store, parent_id=p) for p in (p1, p2, p1)]
    assert [[c.id for c in cs] for cs in store.children_of([p1, lone, p2])] == [
        [kids[0], kids[2]],
        [],
        [kids[1]],
    ]
    assert store.children_of([]) == []


def test_one_query_tells_a_current_schema_from_a_missing_or_outdated_one(tmp_path: Path) -> None:
    """What ``Grove.open`` checks before every command (issue 13: one connection, one query)."""
    from agentgrove.store._migrate import opened_current

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'grove.db'}")
    try:
        assert not opened_current(engine)  # no tables at all: never migrated
        upgrade(engine)
        assert opened_current(engine)
        downgrade(engine, "0009")
        assert not opened_current(engine)
    finally:
        engine.dispose()
