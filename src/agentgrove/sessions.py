"""Which Claude session a retried attempt runs in. Pure: no I/O; the caller says whether the
earlier session is available on this machine.

A retry resumes the earlier attempt's session only where the CLI can find it. The CLI keeps a
session as a file in the config directory of the machine that ran it (``~/.claude/projects``);
asked to resume a session it does not have, it exits at once with "No conversation found with
session ID" (seen with the CLI bundled with claude-agent-sdk 0.2.184), and every further retry
on such a machine would fail the same way. So when the session is not here (another machine ran
the earlier attempt, or it ended before the CLI named its session), the attempt starts a fresh
session, and its prompt says what the earlier attempts left: the work committed on the agent's
branch (already in the worktree) and the children already spawned, so that the model neither
redoes the work nor spawns the same children again.

An agent that asked a person a question (``ask_human``) ended its attempt right after the
question; the attempt after the answer resumes the same session with the answer as its next
user message (:func:`answer_message`), where the session is here, and otherwise starts fresh
with the task, the continuation and the question and answer.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FILES_NAMED = 50
"""Files of the earlier work named in a continuation prompt, at most (the rest are counted)."""


@dataclass(frozen=True)
class Child:
    """A child an earlier attempt spawned, as the continuation prompt names it."""

    id: str
    role: str
    status: str


@dataclass(frozen=True)
class EarlierWork:
    """What earlier attempts of the agent left: its branch, the branch's head commit (always on
    the remote when one is configured), the files it changed since its base, its children."""

    branch: str | None
    head_commit: str | None
    files: tuple[str, ...] = ()
    children: tuple[Child, ...] = ()


@dataclass(frozen=True)
class SessionPlan:
    """How an attempt starts: ``resume`` names the session to resume (``None``: a fresh
    session), ``prompt`` is its first message, ``reason`` says why, for the event log."""

    resume: str | None
    prompt: str
    reason: str


def answer_message(question: str, answer: str, *, by_default: bool = False) -> str:
    """The user message that gives an agent the answer to the question it asked."""
    if by_default:
        return (
            f"Nobody answered your question in time, so go on with the default answer.\n"
            f"Your question: {question}\nThe answer: {answer}"
        )
    return f"A person answered your question.\nYour question: {question}\nThe answer: {answer}"


def plan_session(
    prompt: str,
    *,
    attempt: int,
    session_id: str | None,
    session_here: bool,
    earlier: EarlierWork | None,
    answer: str | None = None,
) -> SessionPlan:
    """The session attempt ``attempt`` of an agent whose task prompt is ``prompt`` runs in.

    * A first attempt, or a retry of one that never got a workspace (nothing ran), starts
      fresh with ``prompt``.
    * A retry whose earlier session ``session_id`` is ``session_here`` (the CLI on this
      machine has it) resumes it, with ``prompt``.
    * Any other retry starts fresh, with ``prompt`` followed by :func:`continuation`.
    * ``answer`` (an :func:`answer_message`: the attempt after a question was answered): the
      session resumed gets it instead of ``prompt``; a fresh one gets it after the rest.
    """
    if attempt <= 1 or earlier is None:
        return SessionPlan(None, prompt, "first run")
    if session_id and session_here:
        if answer is not None:
            return SessionPlan(session_id, answer, f"resuming session {session_id} with the answer")
        return SessionPlan(session_id, prompt, f"resuming session {session_id}")
    why = (
        f"session {session_id} is not on this machine"
        if session_id
        else "the earlier attempt named no session"
    )
    fresh = f"{prompt}\n\n---\n{continuation(attempt, earlier)}"
    if answer is not None:
        fresh += f"\n\nYou had asked a person a question.\n{answer}"
    return SessionPlan(None, fresh, f"a new session: {why}")


def continuation(attempt: int, earlier: EarlierWork) -> str:
    """What a fresh session of a retried agent is told about the earlier attempts' work."""
    lines = [
        f"This is attempt {attempt} of this task. An earlier attempt was interrupted; its "
        "conversation is not available here, so you start a new one and continue earlier "
        "work that is already committed."
    ]
    if earlier.head_commit and earlier.files:
        named = ", ".join(earlier.files[:MAX_FILES_NAMED])
        more = len(earlier.files) - MAX_FILES_NAMED
        if more > 0:
            named += f" and {more} more"
        lines.append(
            f"Its work is committed on your branch {earlier.branch} (commit "
            f"{earlier.head_commit[:12]}) and is already in your worktree: {named}. Read it "
            "and continue from there; do not redo what is done."
        )
    else:
        lines.append("It committed no changes: start the task from the beginning.")
    if earlier.children:
        lines.append(
            "It already started these agents (do not spawn them again; wait for them with "
            "wait_agents, or read them with agent_result):"
        )
        lines += [f"- {c.id} ({c.role}): {c.status}" for c in earlier.children]
    return "\n".join(lines)


__all__ = [
    "Child",
    "EarlierWork",
    "SessionPlan",
    "answer_message",
    "continuation",
    "plan_session",
]
