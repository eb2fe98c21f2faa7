"""Agent commands: spawn, run, ls, show, logs, wait, cancel, answer, diff, gc."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from agentgrove.admission import limits_concurrency, slot_reason
from agentgrove.cli._app import (
    app,
    console,
    err_console,
    is_tty,
    open_grove,
    print_json,
    print_table,
)
from agentgrove.cli._checks import check_cell, check_rows
from agentgrove.cli._live import (
    LiveProgress,
    agent_source,
    format_elapsed,
    totals_line,
)
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import (
    AgentRecord,
    AgentStatus,
    CheckStatus,
    Event,
    QuestionRecord,
    QuestionState,
    SpawnRequest,
    elapsed_s,
)
from agentgrove.store import Store
from agentgrove.store._core import utcnow
from agentgrove.text import markup, one_line, plain, tool_input, visible

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the stable JSON object (docs/json.md).")
]

CheckOpt = Annotated[
    str | None,
    typer.Option(
        "--check",
        help="Shell command run in the agent's worktree after it ends (exit 0 passes; "
        "a failure gets the role's fix_rounds), instead of the role's check.",
    ),
]

_STYLE = {
    AgentStatus.PENDING: "yellow",
    AgentStatus.EXECUTING: "cyan",
    AgentStatus.AWAITING_INPUT: "bright_magenta",
    AgentStatus.COMPLETED: "green",
    AgentStatus.FAILED: "red",
    AgentStatus.CANCELLED: "magenta",
    AgentStatus.AWAITING_APPROVAL: "bold yellow",
}


@app.command()
def spawn(
    role: str,
    task: str,
    parent: Annotated[
        str | None,
        typer.Option(help="Parent agent id: start after it completed, from its branch."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model instead of the role's.")] = None,
    base: Annotated[str | None, typer.Option(help="Git ref to branch from (default HEAD).")] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(
            metavar="USD", help="Hard limit on this agent and all its descendants, in US dollars."
        ),
    ] = None,
    check: CheckOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a pending agent for a worker to run; prints its id."""
    with open_grove() as grove:
        agent = grove.spawn(
            role,
            task,
            parent_id=parent,
            model=model,
            base=base,
            budget_usd=budget_usd,
            check=check,
        )
    if json_out:
        print_json(agent.to_json())
    else:
        print(agent.id)


@app.command()
def run(
    role: str,
    task: str,
    model: Annotated[str | None, typer.Option(help="Model instead of the role's.")] = None,
    base: Annotated[str | None, typer.Option(help="Git ref to branch from (default HEAD).")] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(
            metavar="USD", help="Hard limit on this agent and all its descendants, in US dollars."
        ),
    ] = None,
    check: CheckOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Spawn an agent and run it here with live progress. Exit 0 completed, 1 otherwise (failed,
    or awaiting input: it says how to answer)."""
    from agentgrove.runtime._endpoint import check_endpoint

    with open_grove() as grove:
        new = grove.service.prepare(
            SpawnRequest(role, task, model=model, base=base, budget_usd=budget_usd, check=check)
        )
        if grove.config.runtime.kind != "scripted":  # the scripted stand-in needs no model
            check_endpoint()  # the model answers and takes the key: only now write anything
        agent = grove.service.insert(new)
        if not json_out:
            err_console.print(f"[bold]{agent.id}[/] {markup(agent.role)} on {markup(agent.model)}")
        # Tool calls still go to stderr as plain lines under --json: stdout stays one object.
        progress = LiveProgress(
            agent_source(grove.store, agent.id),
            console=err_console,
            mode="live" if is_tty() and not json_out else "plain",
        )
        grove.service.observer = progress.observe
        finished = progress.run(lambda: grove.execute_async([agent.id]))
        final = grove.store.get_agent(agent.id)
    if json_out:
        print_json(final.to_json())
    else:
        _print_summary(final)
        if len(finished.agents) > 1:
            console.print(totals_line(finished.agents), highlight=False)
    raise typer.Exit(0 if final.status is AgentStatus.COMPLETED else 1)


@app.command("ls")
def list_agents(
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS", help="Only agents with this status: " + ", ".join(AgentStatus) + "."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List agents, oldest first."""
    wanted = _parse_status(status)
    with open_grove() as grove:
        agents = grove.store.list_agents(status=wanted)
        agents = _with_slot_reasons(grove, agents)
    if json_out:
        print_json([a.to_json() for a in agents])
        return
    if not agents:
        console.print("no agents" + (f" with status {wanted.value}" if wanted else ""))
        return
    # The check column only where some agent has a check: a narrow terminal keeps whole ids.
    checks = any(a.check.command is not None for a in agents)
    names = ["id", "role", "status", "host", *(["check"] if checks else []), "tokens", "cost"]
    # One line per agent whatever the width: every column keeps its text whole but the task
    # and a status's wait reason, which give way, cut with an ellipsis.
    status_width = max(len(s.value) for s in AgentStatus)  # the status itself stays whole
    columns = [
        Column(name, no_wrap=True, overflow="ellipsis")
        if name != "status"
        else Column(name, overflow="ellipsis", min_width=status_width)
        for name in [*names, "duration"]
    ]
    table = Table(*columns, Column("task", overflow="ellipsis"), box=None)
    for a in agents:
        state = Text(a.status.value, style=_STYLE[a.status], no_wrap=True, overflow="ellipsis")
        if a.wait_reason:
            state.append(f" ({visible(a.wait_reason, newlines=False)})", style="dim")
        table.add_row(
            a.id,
            plain(a.role, newlines=False),
            state,
            plain(a.host or "-", newlines=False),  # the machine that last claimed it
            *([check_cell(a.check)] if checks else []),
            f"{a.tokens_in}/{a.tokens_out}",
            f"${a.cost_usd:.4f}",
            _elapsed(a),
            Text(one_line(a.task, 50), no_wrap=True, overflow="ellipsis"),
        )
    print_table(table)


@app.command()
def show(agent_id: str, json_out: JsonOpt = False) -> None:
    """Show one agent: status, result, tokens, cost, workspace, and its tree's totals."""
    with open_grove() as grove:
        [agent] = _with_slot_reasons(grove, [grove.get(agent_id)])  # as ls says it waits
        totals = grove.tree_totals(agent.id)
        children = grove.store.list_agents(parent_id=agent.id)
        asked = grove.questions(agent.id)
        # Where this clone has the branch, fetched when another machine ran the agent (not
        # for --json, whose record is the database's and is polled by scripts).
        ws = agent.workspace
        ref = grove.service.workspaces.branch_ref(ws) if ws and not json_out else None
    if json_out:
        print_json(
            agent.to_json()
            | {
                "tree": totals.to_json(),
                "children": [c.id for c in children],
                "questions": [q.to_json() for q in asked],
            }
        )
        return
    # Values are Text, never markup: most of them come from the agent or the user.
    rows: list[tuple[str, Any]] = [
        ("id", agent.id),
        ("role", plain(agent.role)),
        ("status", Text(agent.status.value, style=_STYLE[agent.status])),
        ("parent", agent.parent_id or "-"),
        ("host", plain(agent.host or "-")),
        ("model", plain(agent.model)),
        ("attempt", f"{agent.attempt} of {agent.max_attempts}"),
        ("tokens", f"{agent.tokens_in} in / {agent.tokens_out} out"),
        ("cost", f"${agent.cost_usd:.6f}"),
        ("duration", f"{_elapsed(agent)} (in the CLI: {agent.duration_ms} ms, all attempts)"),
        ("task", plain(agent.task)),
    ]
    if agent.wait_reason and agent.status is not AgentStatus.AWAITING_INPUT:
        rows.append(("waiting", plain(agent.wait_reason, "dim")))
    rows += _question_rows(agent, asked)
    if agent.error:
        rows.append(("error", plain(f"{agent.error_kind}: {agent.error}", "red")))
    if children:
        rows.append(("children", ", ".join(f"{c.id} ({c.status.value})" for c in children)))
        rows.append(
            (
                "tree total",
                f"{totals.agents} agents, {totals.tokens_in} in / {totals.tokens_out} out, "
                f"${totals.cost_usd:.6f}",
            )
        )
    rows += check_rows(agent.check)
    if agent.workspace:
        ws = agent.workspace
        rows += [
            ("worktree", plain(f"{ws.worktree_path} ({_worktree_state(agent, ws.state)})")),
            ("branch", plain(_branch_where(ws.branch, ref))),
            ("head", plain(ws.head_commit or "-")),
        ]
        if ws.diffstat:
            rows.append(("changes", plain(ws.diffstat)))
    if agent.output:
        rows.append(("output", plain(agent.output)))
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(Text(key, style="bold"), value if isinstance(value, Text) else plain(value))
    print_table(table)


@app.command()
def logs(
    agent_id: str,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Stream until it finishes.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print an agent's events (tool calls, results, texts, transitions); with -f, stream them
    as they happen until the agent finishes (Ctrl-C stops following)."""
    with open_grove() as grove:
        full_id = grove.store.resolve_id(agent_id)
        try:
            _print_events(grove.store, full_id, follow=follow, json_out=json_out)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def _print_events(store: Store, agent_id: str, *, follow: bool, json_out: bool) -> None:
    last = 0
    while True:
        batch = store.events(agent_id=agent_id, after_id=last)
        for event in batch:
            if json_out:
                record = {
                    "id": event.id,
                    "at": event.at.isoformat(),
                    "kind": event.kind,
                    "data": event.data,
                }
                sys.stdout.write(json.dumps(record) + "\n")
            else:
                console.print(_format_event(event), soft_wrap=True, highlight=False)
            last = event.id
        # Piped output is block-buffered: flush so a reader sees each event as it happens.
        sys.stdout.flush()
        # The final transition and its event commit together, so an empty batch read after
        # the agent finished means nothing more will come.
        if not follow or (not batch and store.get_agent(agent_id).status.finished):
            return
        if not batch:
            time.sleep(0.1)


@app.command()
def wait(
    agent_ids: list[str],
    timeout: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Give up after this many seconds.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Wait until the agents finish. Exit 0 if all completed, 1 otherwise."""
    with open_grove() as grove:
        try:
            records = grove.wait(agent_ids, timeout_s=timeout)
        except TimeoutError as exc:
            err_console.print(f"grove: {exc}")
            raise typer.Exit(1) from None
    if json_out:
        print_json([r.to_json() for r in records])
    else:
        for r in records:
            console.print(f"{r.id} [{_STYLE[r.status]}]{r.status.value}[/]")
    ok = all(r.status is AgentStatus.COMPLETED for r in records)
    raise typer.Exit(0 if ok else 1)


@app.command()
def cancel(
    agent_id: str,
    tree: Annotated[bool, typer.Option(help="Also cancel all its descendants.")] = False,
) -> None:
    """Cancel a pending, executing or awaiting_input agent (a running one stops within one
    heartbeat; a question it awaits the answer to is closed)."""
    with open_grove() as grove:
        full = grove.store.resolve_id(agent_id)
        cancelled = grove.service.cancel(full, tree=tree)
        if full in cancelled:
            others = len(cancelled) - 1
            print(f"{full} cancelled" + (f" (and {others} descendants)" if others else ""))
        else:
            status = grove.store.get_agent(full).status.value
            print(f"{full} already {status}; nothing to cancel")


@app.command()
def answer(agent_id: str, reply: str) -> None:
    """Answer the question an agent awaiting input asked (`grove show ID` shows it): the agent
    goes back to pending, and its next attempt resumes the same session with REPLY as its next
    message."""
    with open_grove() as grove:
        answered = grove.answer(agent_id, reply)
    print(f"{answered.agent_id} answered; it goes on with the answer (pending)")


def _question_rows(agent: AgentRecord, asked: list[QuestionRecord]) -> list[tuple[str, Any]]:
    """``show``'s lines for the latest question: what the agent asks, the choices, until when
    it waits and how to answer; or, once answered, the answer and who gave it."""
    if not asked:
        return []
    last = asked[-1]
    rows: list[tuple[str, Any]] = [("question", plain(last.question, "bright_magenta"))]
    if last.choices:
        rows.append(("choices", plain(" | ".join(last.choices))))
    if last.state is QuestionState.OPEN:
        until = last.deadline_at.isoformat(timespec="seconds") if last.deadline_at else "forever"
        rows.append(("waits until", until))
        rows.append(("answer with", f"grove answer {agent.id} TEXT"))
    elif last.answer is not None:
        rows.append(("answer", plain(f"{last.answer} (by {last.answered_by})")))
    else:
        rows.append(("answer", plain(f"none ({last.state.value})", "dim")))
    return rows


@app.command()
def diff(
    agent_id: str, stat: Annotated[bool, typer.Option(help="Only the diffstat.")] = False
) -> None:
    """Show what an agent committed on its branch (head commit and diff)."""
    with open_grove() as grove:
        agent = grove.get(agent_id)
        ws = agent.workspace
        if ws is None or ws.branch is None:
            raise BadInput(f"agent {agent.id} has no git workspace (not run yet, or not in git)")
        # Read first: a branch no clone has is one line (BadInput), not a header and then
        # git's error.
        patch = None if stat else grove.service.workspaces.diff(ws)
        # On a terminal the agent's text is made visible; piped, the diff stays a patch.
        shown = visible if is_tty() else str
        print(shown(f"branch {ws.branch}  head {ws.head_commit}  base {ws.base_ref}"))
        print(shown(ws.diffstat or "(no changes)"))
        if patch is not None:
            print(shown(patch))


@app.command()
def merge(
    agent_ids: Annotated[list[str] | None, typer.Argument(help="Completed agents' ids.")] = None,
    run_id: Annotated[
        str | None, typer.Option("--run", help="Queue a workflow run's completed nodes too.")
    ] = None,
    into: Annotated[
        str | None, typer.Option(help="The branch to merge onto (default: the current one).")
    ] = None,
    check: Annotated[
        str | None, typer.Option(help="Shell command run (confined) after each merge.")
    ] = None,
    resolve: Annotated[
        bool, typer.Option("--resolve", help="Hand conflicts and red checks to an integrator.")
    ] = False,
) -> None:
    """Merge a completed agent's branch into your checked-out branch (a merge commit, so its
    work stays one unit). A conflict changes nothing and names the files.

    Several ids, --run, --into, --check or --resolve make a merge queue: each entry is merged
    in turn in a scratch worktree and checked; one that conflicts or fails the check is
    skipped and reported (or, with --resolve, given to an integrator agent); the branch then
    moves once to the result, your checkout only by a fast-forward. Exit 0 when every entry
    landed, 1 when one was skipped or the branch could not move."""
    ids = agent_ids or []
    if len(ids) != 1 or run_id is not None or into is not None or check is not None or resolve:
        _merge_queue(ids, run_id=run_id, into=into, check=check, resolve=resolve)
        return
    agent_id = ids[0]
    with open_grove() as grove:
        agent = grove.get(agent_id)
        ws = agent.workspace
        if ws is None or ws.branch is None:
            raise BadInput(f"agent {agent.id} has no git workspace (not run yet, or not in git)")
        if agent.status is not AgentStatus.COMPLETED:
            raise BadInput(
                f"agent {agent.id} is {agent.status.value}, not completed: its branch may hold "
                f"partial work; `grove diff {agent.id}` shows it, `git merge {ws.branch}` "
                "takes it anyway"
            )
        merged = grove.service.workspaces.merge_into_checkout(ws)
    from agentgrove.workspaces import checkout_merge_message

    console.print(markup(checkout_merge_message(ws.branch, merged)), highlight=False)


def _merge_queue(
    ids: list[str], *, run_id: str | None, into: str | None, check: str | None, resolve: bool
) -> None:
    from agentgrove.merge_queue import report_lines
    from agentgrove.merge_scratch import plan_queue, run_queue

    with open_grove() as grove:
        plan = plan_queue(grove, ids, run_id=run_id, into=into, check=check, resolve=resolve)
        if resolve and grove.config.runtime.kind != "scripted":
            from agentgrove.runtime._endpoint import check_endpoint

            check_endpoint()  # an integrator may be needed: know the model answers first
        count = len(plan.entries)
        err_console.print(
            f"merging {count} entr{'y' if count == 1 else 'ies'} onto {markup(plan.branch)} "
            "in a scratch worktree",
            highlight=False,
        )
        report = run_queue(grove, plan)
    # Branch names, paths and check output are the agents' text: shown plain, never markup.
    for line in report_lines(report):
        console.print(plain(line), highlight=False)
    raise typer.Exit(report.exit_code)


@app.command()
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; remove nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also delete finished agents' branches that are not merged."),
    ] = False,
) -> None:
    """Remove finished agents' worktrees, orphaned worktrees, finished agents' branches whose
    work is merged into HEAD (or that never moved from their base), and processes left by
    agents that are not running. Branches no agent of this grove owns are never deleted."""
    from agentgrove.cleanup import collect

    with open_grove() as grove:
        report = collect(
            grove.store,
            grove.service.workspaces,
            finished_worktrees=True,
            force=force,
            dry_run=dry_run,
        )
    for line in report.lines():
        print(line)


@app.command()
def budget(json_out: JsonOpt = False) -> None:
    """Each budget scope (daily, agent trees, workflow runs): limit, reserved and spent."""
    with open_grove() as grove:
        rows = grove.store.budget_report(utcnow())
    if json_out:
        print_json(
            [
                {"scope": n, "limit_usd": lim, "reserved_usd": r, "spent_usd": sp}
                for n, lim, r, sp in rows
            ]
        )
        return
    if not rows:
        print("no budgets set: [budget] daily_usd in grove.toml, --budget-usd on spawn/run")
        return
    table = Table("scope", "limit", "reserved", "spent", "left", box=None)
    for name, limit, reserved, spent in rows:
        table.add_row(
            plain(name, newlines=False),
            f"${limit:.4f}",
            f"${reserved:.4f}",
            f"${spent:.4f}",
            f"${max(0.0, limit - reserved - spent):.4f}",
        )
    console.print(table)


def _with_slot_reasons(grove: Grove, agents: list[AgentRecord]) -> list[AgentRecord]:
    """Pending agents that admission holds back say so (``[admission]`` limits)."""
    waiting = {a.id for a in agents if a.status is AgentStatus.PENDING and not a.wait_reason}
    # Without an [admission] table nothing limits slots (and its defaults would load pydantic).
    if not waiting or not grove.config.has_table("admission"):
        return agents
    settings = grove.config.admission
    if not limits_concurrency(settings):
        return agents
    running = grove.store.running_counts()
    shown = []
    for agent in agents:
        reason = None
        if agent.id in waiting:
            reason = slot_reason(settings, running, agent.role, agent.model)
        shown.append(replace(agent, wait_reason=reason) if reason else agent)
    return shown


def _branch_where(branch: str | None, ref: str | None) -> str:
    """The branch, and where this clone has it: ``grove/x``, or ``grove/x (from the remote:
    refs/remotes/grove-remote/grove/x)``, or ``grove/x (not in this clone nor on the remote)``."""
    if branch is None:
        return "-"
    if ref is None:
        return f"{branch} (not in this clone nor on the remote)"
    return branch if ref == f"refs/heads/{branch}" else f"{branch} (from the remote: {ref})"


def _worktree_state(agent: AgentRecord, state: str) -> str:
    """What the worktree is to the user: in use, kept for inspection, or removed."""
    if state == "active" and agent.status.finished:
        return "kept for inspection; `grove gc` removes it"
    if state == "active":
        return "in use" if agent.status is AgentStatus.EXECUTING else "ready"
    return state


def _elapsed(agent: AgentRecord) -> str:
    """Wall time of the agent's run (claim to end, or so far), as the live view shows it."""
    seconds = elapsed_s(agent, utcnow())
    return "-" if seconds is None else format_elapsed(seconds)


def _parse_status(value: str | None) -> AgentStatus | None:
    if value is None:
        return None
    try:
        return AgentStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in AgentStatus)
        raise BadInput(f"unknown status {value!r}: use one of {known}") from None


def _format_event(event: Event) -> Text:
    data = event.data
    # A tool call or result is one line (tabs and newlines shown as \t and \n, so a tab
    # cannot wrap it); an agent's text keeps its lines.
    if event.kind == "agent.tool_use":
        detail = f"{visible(data.get('tool'), newlines=False)} {tool_input(data.get('input'))}"
    elif event.kind == "agent.tool_result":
        content = ("ERROR " if data.get("is_error") else "") + str(data.get("content"))
        detail = visible(content, newlines=False)
    elif event.kind == "agent.text":
        detail = visible(str(data.get("text")).expandtabs(4))
    else:
        detail = visible(" ".join(f"{k}={v}" for k, v in data.items() if v is not None))
    style = _EVENT_STYLE.get(event.kind, "")
    if event.kind == "agent.tool_result" and data.get("is_error"):
        style = "red"
    return Text.assemble(
        (event.at.strftime("%H:%M:%S"), "dim"), " ", (f"{event.kind:<18}", style), " ", detail
    )


_EVENT_STYLE = {
    "agent.tool_use": "cyan",
    "agent.completed": "green",
    "agent.failed": "red",
    "agent.cancelled": "magenta",
    "agent.warning": "yellow",
    "agent.retry": "yellow",
}


def _print_summary(agent: AgentRecord) -> None:
    style = _STYLE[agent.status]
    console.print(
        f"[{style}]{agent.status.value}[/] {agent.id} {markup(agent.role)}: "
        f"{agent.tokens_in} in / {agent.tokens_out} out tokens, ${agent.cost_usd:.4f}, "
        f"{_elapsed(agent)}"
    )
    if agent.workspace and agent.workspace.branch:
        files = ", ".join(agent.workspace.files_changed) or "no files changed"
        console.print(
            f"branch {markup(agent.workspace.branch)} @ "
            f"{(agent.workspace.head_commit or '')[:10]}: {markup(files)}"
        )
    if agent.check.status is not CheckStatus.NONE:
        console.print(Text("check ").append(check_cell(agent.check)))
    if agent.error:
        console.print(plain(f"{agent.error_kind}: {agent.error}", "red"))
    elif agent.status is AgentStatus.AWAITING_INPUT:
        # Its attempt is over; whichever worker runs next continues it once answered.
        console.print(plain(agent.wait_reason or "asks a question", "bright_magenta"))
        console.print(
            f"answer with: grove answer {agent.id} TEXT (then grove worker, or grove up, "
            "continues it)"
        )
    elif agent.output:
        console.print(plain(agent.output))
