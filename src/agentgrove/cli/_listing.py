"""The top-level listing of ``grove --help`` (and of a bare ``grove``), kept as data.

Building it from the commands meant importing every command module and turning all ~35
typer commands into click ones (~50 ms, the most of what ``grove --help`` cost above its
floor in issue 13). :data:`LISTING` holds what the listing shows of each top-level command or
group, in order: its name and the first paragraph of its help. :func:`placeholders` are
commands that carry just that, which the help renders as it renders the real ones (the root
group holds them when a process names no command: see :mod:`agentgrove.cli._registry`).
``tests/test_cli_registry.py`` fails when this table differs from the commands (printing the
table to paste here), and compares the two helps as printed.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

from agentgrove.cli._help import set_help

__all__ = ["LISTING", "placeholders", "source"]

LISTING: tuple[tuple[str, str], ...] = (
    ("spawn", "Create a pending agent for a worker to run; prints its id."),
    (
        "run",
        "Spawn an agent and run it here with live progress. Exit 0 completed, 1 otherwise "
        "(failed, or awaiting input: it says how to answer).",
    ),
    ("ls", "List agents, oldest first."),
    ("show", "Show one agent: status, result, tokens, cost, workspace, and its tree's totals."),
    (
        "logs",
        "Print an agent's events (tool calls, results, texts, transitions); with -f, stream "
        "them as they happen until the agent finishes (Ctrl-C stops following).",
    ),
    ("wait", "Wait until the agents finish. Exit 0 if all completed, 1 otherwise."),
    (
        "cancel",
        "Cancel a pending, executing or awaiting_input agent (a running one stops within one "
        "heartbeat; a question it awaits the answer to is closed).",
    ),
    (
        "answer",
        "Answer the question an agent awaiting input asked (`grove show ID` shows it): the "
        "agent goes back to pending, and its next attempt resumes the same session with REPLY "
        "as its next message.",
    ),
    ("diff", "Show what an agent committed on its branch (head commit and diff)."),
    (
        "merge",
        "Merge a completed agent's branch into your checked-out branch (a merge commit, so its "
        "work stays one unit). A conflict changes nothing and names the files.",
    ),
    (
        "gc",
        "Remove finished agents' worktrees, orphaned worktrees, finished agents' branches whose"
        " work is merged into HEAD (or that never moved from their base), and processes left by"
        " agents that are not running. Branches no agent of this grove owns are never deleted.",
    ),
    ("budget", "Each budget scope (daily, agent trees, workflow runs): limit, reserved and spent."),
    (
        "approve",
        "Approve a workflow node waiting at its approval gate: a `before` node starts, an "
        "`after` node's result counts and its dependents may start.",
    ),
    (
        "reject",
        "Reject a workflow node waiting at its approval gate: an `after` node with attempts "
        "left runs again with the comment added to its task; otherwise the run fails "
        "`rejected`.",
    ),
    (
        "dashboard",
        "Serve the web dashboard: agents, transcripts, workflow runs live, budgets, cost.",
    ),
    (
        "inbox",
        "List what waits for a person, oldest first: workflow nodes at their approval gates and"
        " agents' questions, each with the command that acts on it.",
    ),
    ("init", "Create the grove home (.grove/ at the repository root) and its database."),
    ("roles", "List the roles (built in, and from grove.toml)."),
    (
        "doctor",
        "Check what agents need here: the Bash sandbox, the Claude CLI, git. Exit 1 if any is "
        "missing.",
    ),
    ("worker", "Claim and run pending agents until SIGINT/SIGTERM (or, with --drain, until idle)."),
    (
        "demo",
        "spec-writer -> implementer -> tester on a tiny task, in a fresh temporary repository.",
    ),
    ("shell", "Interactive prompt: grove commands with history, Tab completion and a status line."),
    (
        "stats",
        "Cost per passing work: agents, passed checks, pass rate, cost and tokens per passing "
        "agent, median duration.",
    ),
    ("up", "Start everything: database, worker, dashboard, shell. Ctrl-D or SIGTERM stops it."),
    ("dev", "Developer tools: the scripted model server, recording and replaying conversations."),
    ("workflow", "Workflows: DAGs of agents described in YAML."),
)
"""Each top-level command and group, in registration order: name, first paragraph of help."""


def placeholders() -> list[Any]:
    """A command per :data:`LISTING` entry, with its name and help as the listing shows them
    (escaped for rich, as :class:`~agentgrove.cli._help.GroveGroup` leaves every help); none
    of them runs anything."""
    out = []
    for name, text in LISTING:
        command = TyperCommand(name, callback=None)
        set_help(command, text)
        out.append(command)
    return out


def source(listing: tuple[tuple[str, str], ...]) -> str:
    """``listing`` as this module's source spells :data:`LISTING` (for the test's message)."""
    import textwrap

    lines = ["LISTING: tuple[tuple[str, str], ...] = ("]
    for name, text in listing:
        chunks = textwrap.wrap(text, 86, drop_whitespace=False, break_on_hyphens=False)
        lines += ["    (", f"        {name!r},", *(f"        {c!r}" for c in chunks), "    ),"]
    return "\n".join([*lines, ")"])
