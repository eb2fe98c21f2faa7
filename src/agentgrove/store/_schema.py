"""The database schema as SQLAlchemy Core tables. Alembic migrations must produce exactly this
(``tests/test_store.py`` compares them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)


def _redact(value: Any) -> Any:
    """:func:`agentgrove.secrets.redact`, imported on the first write: compiling its patterns
    cost every command that only reads ~4 ms (issue 13)."""
    from agentgrove.secrets import redact

    return redact(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; naive UTC in the column, so SQLite compares them as text."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


class RedactedText(TypeDecorator[str]):
    """Text that may hold what an agent or a user wrote: secrets are redacted on the way in
    (``agentgrove.secrets``), whichever code path writes it."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(_redact(value))


class RedactedString(TypeDecorator[str]):
    """A bounded string column redacted like :class:`RedactedText`."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(_redact(value))


class RedactedJSON(TypeDecorator[Any]):
    """JSON whose strings (keys too) are redacted on the way in, like :class:`RedactedText`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _redact(value)


metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("parent_id", String(32), ForeignKey("agents.id"), nullable=True, index=True),
    Column(
        "workflow_run_id", String(32), ForeignKey("workflow_runs.id"), nullable=True, index=True
    ),
    Column("node_key", String(200), nullable=True),
    Column("role", String(100), nullable=False),
    Column("task", RedactedText, nullable=False),
    Column("model", String(200), nullable=False),
    Column("base_ref", String(200), nullable=True),
    Column("status", String(20), nullable=False),
    Column("error_kind", String(40), nullable=True),
    Column("error", RedactedText, nullable=True),
    Column("output", RedactedText, nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("timeout_s", Float, nullable=True),
    Column("budget_usd", Float, nullable=True),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("duration_ms", Integer, nullable=False, default=0),
    Column("session_id", String(100), nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("not_before", UTCDateTime, nullable=True),
    Column("priority", Integer, nullable=False, default=0),
    # Delegation: depth below the root agent; ``after_parent``: not claimable until the parent
    # completed (CLI ``--parent``); ``merge_refs``: branches merged into the worktree first.
    Column("depth", Integer, nullable=False, default=0, server_default="0"),
    Column("after_parent", Boolean, nullable=False, default=False, server_default=false()),
    Column("merge_refs", JSON, nullable=True),
    # A workflow node re-run from a checkpoint supersedes the rows it replaces.
    Column("superseded", Boolean, nullable=False, default=False, server_default=false()),
    # Budgets: the most this agent may spend per attempt (its role's cap), what its current
    # attempt reserved at claim time, and why a pending agent is held back.
    Column("max_budget_usd", Float, nullable=True),
    Column("reserved_usd", Float, nullable=False, default=0.0, server_default="0"),
    Column("wait_reason", Text, nullable=True),
    # The agent's check (migration 0006): the command resolved at spawn (--check, the node's
    # check: or the role's), and what its last run did.
    Column("check_command", RedactedText, nullable=True),
    Column("check_status", String(20), nullable=False, default="none", server_default="none"),
    Column("check_rounds", Integer, nullable=False, default=0, server_default="0"),
    Column("check_exit_code", Integer, nullable=True),
    Column("check_duration_ms", Integer, nullable=True),
    Column("check_output", RedactedText, nullable=True),
    # The host whose worker claimed the latest attempt (migration 0007).
    Column("host", String(255), nullable=True),
    # A workflow node held at its approval gate (migration 0009): which gate (before / after)
    # while it is awaiting_approval, and when the gate decides by itself (none: never).
    Column("approval_gate", String(10), nullable=True),
    Column("approval_deadline", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # Serves the claim's ORDER BY exactly (priority: lower runs first, like nice values), so a
    # claim reads one index entry however long the queue is.
    Index("ix_agents_claim", "status", "priority", "created_at", "id"),
    Index("ix_agents_run_node", "workflow_run_id", "node_key"),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id"), primary_key=True),
    Column("repo_path", Text, nullable=True),
    Column("worktree_path", Text, nullable=False),
    Column("branch", String(200), nullable=True),
    Column("base_ref", String(200), nullable=True),
    Column("head_commit", String(64), nullable=True),
    Column("diffstat", RedactedText, nullable=True),
    Column("files_changed", RedactedJSON, nullable=False, default=list),
    Column("state", String(20), nullable=False),
    # The branch head last pushed to [git] remote (migration 0007).
    Column("pushed_commit", String(64), nullable=True),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", RedactedString(200), nullable=False),
    Column("inputs", RedactedJSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("budget_usd", Float, nullable=True),
    Column("base_ref", String(64), nullable=True),
    Column("error", RedactedText, nullable=True),
    # Node counters, kept in the transactions that change nodes, so that moving a run forward
    # costs the same at 10 nodes and at 10,000.
    Column("nodes_total", Integer, nullable=False, default=0, server_default="0"),
    Column("nodes_completed", Integer, nullable=False, default=0, server_default="0"),
    Column("nodes_active", Integer, nullable=False, default=0, server_default="0"),
    Column("nodes_failed", Integer, nullable=False, default=0, server_default="0"),
    Column("nodes_cancelled", Integer, nullable=False, default=0, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
)

workflow_specs = Table(
    "workflow_specs",
    metadata,
    # A run's workflow and plan, written once. Kept out of ``workflow_runs`` because SQLite
    # rewrites a whole row on every UPDATE: with the spec inline (2.4 MB at 10,000 nodes), each
    # completion's counter update cost 2 ms, growing with the size of the run.
    Column("run_id", String(32), ForeignKey("workflow_runs.id"), primary_key=True),
    Column("spec", RedactedJSON, nullable=False),
)

workflow_nodes = Table(
    "workflow_nodes",
    metadata,
    # How many of each node's dependencies have not completed yet: a completion decrements its
    # dependents' counters, and a counter reaching zero makes that node ready, so readiness costs
    # O(dependents) per completion even for a node with thousands of dependencies.
    Column("run_id", String(32), ForeignKey("workflow_runs.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("deps_remaining", Integer, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("agent_id", String(32), nullable=True, index=True),
    Column("run_id", String(32), nullable=True, index=True),
    Column("kind", String(60), nullable=False),
    Column("data", RedactedJSON, nullable=False),
)

transcripts = Table(
    "transcripts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(32), ForeignKey("agents.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(60), nullable=False),
    Column("message", RedactedJSON, nullable=False),
)

model_pace = Table(
    "model_pace",
    metadata,
    # The per-model start pace (agentgrove.admission.ModelPacer's buckets), shared by every
    # worker: a 429 seen by one slows them all. Times are Unix seconds (a clock every process
    # and machine agrees on).
    Column("model", String(200), primary_key=True),
    Column("rpm", Float, nullable=False),
    Column("ceiling", Float, nullable=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("held_until", Float, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    # The outbox (migration 0008): one row per event that makes a notification, written in
    # the event's own transaction. A worker claims a row with a conditional UPDATE (SKIP
    # LOCKED on PostgreSQL) and a lease, so one worker sends it however many share the
    # database, and a dead worker's claim is taken over when its lease runs out.
    Column("event_id", Integer, ForeignKey("events.id"), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # pending | sending | sent | failed
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("not_before", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("error", RedactedText, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_notifications_state", "state", "event_id"),
)

budget_exhaustions = Table(
    "budget_exhaustions",
    metadata,
    # Each budget scope that has refused an agent ("run <id>", "tree <id>", "daily <date>"),
    # so its ``budget.exhausted`` event is written once, at the first refusal.
    Column("scope", String(100), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

questions = Table(
    "questions",
    metadata,
    # What agents asked a person (``ask_human``, migration 0009). The agent's row says only
    # that it awaits input (status ``awaiting_input``, the question's first line as its
    # ``wait_reason``); the question, its deadline, default and answer live here.
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("question", RedactedText, nullable=False),
    Column("choices", RedactedJSON, nullable=False),
    Column("state", String(20), nullable=False),  # open | answered | delivered | expired...
    Column("asked_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=True),
    Column("default_answer", RedactedText, nullable=True),
    Column("answer", RedactedText, nullable=True),
    Column("answered_by", RedactedString(200), nullable=True),
    Column("answered_at", UTCDateTime, nullable=True),
    Index("ix_questions_state", "state", "deadline_at"),
)
