"""Questions agents ask a person (``ask_human``): the writes that move an agent into and out of
``awaiting_input``, and the reads that show what it asked.

Contracts:

* :meth:`QuestionQueries.await_answer` ends an attempt that asked: in one fenced transaction
  the question row is written (``open``), the agent goes ``executing -> awaiting_input`` (lease
  and reservation cleared, the attempt's usage added as a retry's would be, the question's first
  line as its ``wait_reason``), and the ``agent.question`` event (``{question, choices}``: what
  the ``question_asked`` notification reads) is logged. Nothing of the attempt is left running.
* :meth:`QuestionQueries.answer` is the only way back: ``awaiting_input -> pending`` and the
  question ``open -> answered``, in one guarded transaction, with ``max_attempts`` raised by
  one (asking a question never uses up an agent's retries). A second answer, or one to an agent
  that asked nothing, changes nothing.
* :meth:`QuestionQueries.expire_questions` (called by every worker's sweep) applies deadlines:
  a question past its ``deadline_at`` is answered with its default, or its agent fails
  ``no_answer`` (dependents and waiting children follow, as for any failure).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, update

from agentgrove.models import AgentStatus, ErrorKind, QuestionRecord, QuestionState
from agentgrove.store import _leases
from agentgrove.store._core import StoreCore, utcnow
from agentgrove.store._schema import agents, questions
from agentgrove.text import one_line
from agentgrove.workflows.dag import NodeState

if TYPE_CHECKING:
    from agentgrove.store._records import RunOutcome

_UNFINISHED = [s.value for s in AgentStatus if not s.finished]

DEFAULT_BY = "default"
"""``answered_by`` of a question answered with the role's ``question_default`` at its deadline."""


class QuestionQueries(StoreCore):
    """Mixed into :class:`agentgrove.store.Store`."""

    if TYPE_CHECKING:

        def node_finished(
            self, conn: Connection, run_id: str, key: str, state: NodeState, now: datetime
        ) -> None: ...
        def _fail_waiting_children(
            self, conn: Connection, parent_id: str, now: datetime
        ) -> None: ...

    def await_answer(
        self,
        agent_id: str,
        owner: str,
        attempt: int,
        *,
        question: str,
        choices: tuple[str, ...],
        deadline_at: datetime | None,
        default: str | None,
        spent: RunOutcome,
    ) -> bool:
        """``executing -> awaiting_input`` with the question recorded (see the module doc);
        ``False``: the lease is no longer ours, and nothing was written."""
        now = utcnow()
        with self._write(wake=True) as conn:
            moved = conn.execute(
                update(agents)
                .where(_leases.fence(agent_id, owner, attempt))
                .values(
                    status=AgentStatus.AWAITING_INPUT.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    reserved_usd=0.0,
                    not_before=None,
                    wait_reason=f"asks: {one_line(question, 200)}",
                    **_leases.usage_values(spent),
                )
            )
            if moved.rowcount != 1:
                return False
            self._deadline_written()
            question_id = uuid.uuid4().hex[:12]
            conn.execute(
                questions.insert().values(
                    id=question_id,
                    agent_id=agent_id,
                    attempt=attempt,
                    question=question,
                    choices=list(choices),
                    state=QuestionState.OPEN.value,
                    asked_at=now,
                    deadline_at=deadline_at,
                    default_answer=default,
                )
            )
            self._event(
                conn,
                agent_id,
                "agent.question",
                {
                    "question_id": question_id,
                    "question": question,
                    "choices": list(choices),
                    "attempt": attempt,
                    "deadline_at": deadline_at.isoformat() if deadline_at else None,
                    **_leases.usage_data(spent),
                },
                now,
            )
        return True

    def answer(self, agent_id: str, text: str, *, by: str) -> QuestionRecord | None:
        """Answer the question ``agent_id`` awaits: it goes back to ``pending`` and its next
        attempt resumes its session with ``text``. The question answered, or ``None`` when the
        agent awaits no answer (nothing changed)."""
        now = utcnow()
        with self._write(wake=True) as conn:
            return self._answer(conn, agent_id, text, by, now)

    def _answer(
        self, conn: Connection, agent_id: str, text: str, by: str, now: datetime
    ) -> QuestionRecord | None:
        open_id = conn.execute(
            select(questions.c.id).where(
                questions.c.agent_id == agent_id,
                questions.c.state == QuestionState.OPEN.value,
            )
        ).scalar_one_or_none()
        if open_id is None:
            return None
        moved = conn.execute(
            update(agents)
            .where(agents.c.id == agent_id, agents.c.status == AgentStatus.AWAITING_INPUT.value)
            .values(
                status=AgentStatus.PENDING.value,
                wait_reason=None,
                max_attempts=agents.c.max_attempts + 1,
            )
        )
        if moved.rowcount != 1:
            return None
        conn.execute(
            update(questions)
            .where(questions.c.id == open_id, questions.c.state == QuestionState.OPEN.value)
            .values(
                state=QuestionState.ANSWERED.value, answer=text, answered_by=by, answered_at=now
            )
        )
        self._event(
            conn,
            agent_id,
            "agent.answered",
            {"question_id": open_id, "answer": one_line(text, 500), "by": by},
            now,
        )
        row = conn.execute(select(questions).where(questions.c.id == open_id)).one()
        return _question(row)

    def take_answer(self, agent_id: str, attempt: int) -> QuestionRecord | None:
        """The answered question the next attempt of ``agent_id`` (``attempt``) resumes with,
        marked ``delivered`` as it is taken; ``None`` when there is none."""
        with self._write() as conn:
            row = conn.execute(
                select(questions)
                .where(
                    questions.c.agent_id == agent_id,
                    questions.c.state == QuestionState.ANSWERED.value,
                )
                .order_by(questions.c.asked_at.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            conn.execute(
                update(questions)
                .where(questions.c.id == row.id)
                .values(state=QuestionState.DELIVERED.value)
            )
            self._event(conn, agent_id, "agent.answer_delivered", {"question_id": row.id}, None)
        return _question(row)

    def only_people_wait(self, *, run_id: str) -> bool:
        """Whether the run's agents that are not finished all await input (and some do)."""
        with self._read() as conn:
            statuses = set(
                conn.execute(
                    select(agents.c.status)
                    .where(
                        agents.c.workflow_run_id == run_id,
                        agents.c.status.in_(_UNFINISHED),
                    )
                    .distinct()
                ).scalars()
            )
        return statuses == {AgentStatus.AWAITING_INPUT.value}

    def questions_of(self, agent_id: str) -> list[QuestionRecord]:
        """Every question ``agent_id`` asked, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(questions)
                .where(questions.c.agent_id == agent_id)
                .order_by(questions.c.asked_at, questions.c.id)
            )
            return [_question(r) for r in rows]

    def open_questions(self) -> list[QuestionRecord]:
        """Every question that waits for an answer, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(questions)
                .where(questions.c.state == QuestionState.OPEN.value)
                .order_by(questions.c.asked_at, questions.c.id)
            )
            return [_question(r) for r in rows]

    def close_questions(self, conn: Connection, agent_ids: list[str]) -> None:
        """The open questions of agents that were cancelled: nobody needs to answer them."""
        if agent_ids:
            conn.execute(
                update(questions)
                .where(
                    questions.c.agent_id.in_(agent_ids),
                    questions.c.state == QuestionState.OPEN.value,
                )
                .values(state=QuestionState.CANCELLED.value)
            )

    def next_question_deadline(self, after: datetime) -> datetime | None:
        """The earliest deadline later than ``after`` of an open question; ``None`` when there
        is none (a worker sweeps then, see :mod:`agentgrove.worker`)."""
        with self._read() as conn:
            found: datetime | None = conn.execute(
                select(func.min(questions.c.deadline_at)).where(
                    questions.c.state == QuestionState.OPEN.value, questions.c.deadline_at > after
                )
            ).scalar()
        return found

    def expire_questions(self, *, at: datetime | None = None) -> list[str]:
        """Apply the deadlines of open questions due by ``at`` (default now): answered with
        their default, or their agent failed ``no_answer``. The agents concerned."""
        now = at or utcnow()
        done: list[str] = []
        with self._write(wake=True) as conn:
            due = conn.execute(
                select(questions).where(
                    questions.c.state == QuestionState.OPEN.value,
                    questions.c.deadline_at.is_not(None),
                    questions.c.deadline_at <= now,
                )
            ).all()
            for row in due:
                if row.default_answer is not None:
                    if self._answer(conn, row.agent_id, row.default_answer, DEFAULT_BY, now):
                        done.append(row.agent_id)
                    continue
                if self._fail_unanswered(conn, row, now):
                    done.append(row.agent_id)
        return done

    def _fail_unanswered(self, conn: Connection, row: Any, now: datetime) -> bool:
        waited = (row.deadline_at - row.asked_at).total_seconds()
        error = f"nobody answered its question within {waited:g} s: {one_line(row.question, 200)}"
        failed = conn.execute(
            update(agents)
            .where(
                agents.c.id == row.agent_id,
                agents.c.status == AgentStatus.AWAITING_INPUT.value,
            )
            .values(
                status=AgentStatus.FAILED.value,
                error_kind=ErrorKind.NO_ANSWER.value,
                error=error,
                wait_reason=None,
                finished_at=now,
            )
            .returning(agents.c.workflow_run_id, agents.c.node_key)
        ).first()
        if failed is None:
            return False
        conn.execute(
            update(questions)
            .where(questions.c.id == row.id)
            .values(state=QuestionState.EXPIRED.value)
        )
        self._event(
            conn,
            row.agent_id,
            "agent.failed",
            {"error_kind": ErrorKind.NO_ANSWER.value, "error": error, "question_id": row.id},
            now,
        )
        self._fail_waiting_children(conn, row.agent_id, now)
        if failed.node_key is not None:
            self.node_finished(conn, failed.workflow_run_id, failed.node_key, NodeState.FAILED, now)
        return True


def _question(row: Any) -> QuestionRecord:
    return QuestionRecord(
        id=row.id,
        agent_id=row.agent_id,
        attempt=row.attempt,
        question=row.question,
        asked_at=row.asked_at,
        state=QuestionState(row.state),
        choices=tuple(row.choices or ()),
        deadline_at=row.deadline_at,
        default=row.default_answer,
        answer=row.answer,
        answered_by=row.answered_by,
        answered_at=row.answered_at,
    )


__all__ = ["DEFAULT_BY", "QuestionQueries"]
