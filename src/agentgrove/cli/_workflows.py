"""`grove workflow ...`: validate, run, ls, show, merge, cancel, rerun, templates."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentgrove.cli._app import (
    app,
    console,
    err_console,
    is_tty,
    open_grove,
    print_error,
    print_json,
)
from agentgrove.cli._live import STATUS_STYLE, LiveProgress, Mode, run_source
from agentgrove.config import load_config
from agentgrove.errors import BadInput, MissingInputs
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, RunRecord, RunStatus
from agentgrove.run_branches import RunBranch, existing_results, with_result
from agentgrove.text import markup, plain, visible
from agentgrove.workflows import builtin_templates, find_workflow

# The workflow format (agentgrove.workflows.spec: WorkflowError, load_workflow, ...) is
# imported by the commands that read a workflow file: its pydantic models cost `workflow ls`
# and `show` ~40 ms they do not need (issue 13).

workflow_app = typer.Typer(
    help="Workflows: DAGs of agents described in YAML.", no_args_is_help=True
)
app.add_typer(workflow_app, name="workflow")

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (docs/json.md).")
]


@workflow_app.command("validate")
def validate(file: str) -> None:
    """Check a workflow file (or built-in name) without running anything; every problem
    found is listed, one per line (exit 2)."""
    from agentgrove.workflows.spec import WorkflowError, load_workflow

    try:
        spec = load_workflow(find_workflow(file), roles=list(load_config().roles))
    except WorkflowError as exc:
        for problem in exc.problems:
            print_error(problem)  # one line each, as agentgrove.cli.main prints an error
        raise typer.Exit(2) from None
    inputs = ", ".join(spec.inputs) or "-"
    print(visible(f"{spec.name}: valid ({len(spec.nodes)} nodes, inputs: {inputs})"))


@workflow_app.command("templates")
def templates(
    show: Annotated[
        str | None, typer.Option(help="Print this built-in workflow's YAML, to copy and edit.")
    ] = None,
) -> None:
    """List the built-in workflows (--show NAME prints one's YAML)."""
    if show is not None:
        found = builtin_templates().get(show)
        if found is None:
            known = ", ".join(builtin_templates())
            raise BadInput(f"no built-in workflow {show!r}; the built-ins are: {known}")
        sys.stdout.write(found.read_text(encoding="utf-8"))
        return
    from agentgrove.workflows.spec import load_workflow

    roles = list(load_config().roles)
    table = Table("name", "nodes", "inputs", "description", box=None)
    for name, path in builtin_templates().items():
        spec = load_workflow(path, roles=roles)
        table.add_row(
            plain(name),
            plain(" → ".join(n.key for n in spec.nodes)),
            plain(", ".join(spec.inputs)),
            plain(spec.description),
        )
    console.print(table)


@workflow_app.command("run")
def run(
    file: str,
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="NAME=VALUE",
            help="An input of the workflow (repeat for each).",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Execute here with live progress until done.")] = False,
    base: Annotated[str | None, typer.Option(help="Git ref the first nodes start from.")] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(metavar="USD", help="Hard limit on the run's spend, in US dollars."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a workflow run (workers execute it; --wait runs it here). Prints the run id."""
    from agentgrove.workflows.spec import parse_input_args

    inputs = parse_input_args(input_pairs or [])
    with open_grove() as grove:
        try:
            run_record = grove.start_workflow(
                find_workflow(file), inputs, base=base, budget_usd=budget_usd
            )
        except MissingInputs as exc:  # said the command line's way
            flags = " ".join(f"--input {name}=VALUE" for name in exc.names)
            raise BadInput(f"{exc.lead()}; pass {flags}") from None
        if not wait:
            if json_out:
                print_json(run_record.to_json())
            else:
                print(run_record.id)
            return
        if not json_out:
            err_console.print(f"workflow run [bold]{run_record.id}[/] ({markup(run_record.name)})")
        final = _execute_with_progress(grove, run_record.id, mode=_mode(json_out=json_out))
        final, made = _with_result(grove, final)
    if json_out:
        print_json(final.to_json())
    else:
        console.print(_run_table(final))
        console.print(_result_line(final, made), highlight=False)
    raise typer.Exit(0 if final.status is RunStatus.COMPLETED else 1)


@workflow_app.command("ls")
def list_runs(json_out: JsonOpt = False) -> None:
    """List workflow runs."""
    with open_grove() as grove:
        # The config's repo, not the service's: building the agent service (and importing it)
        # cost a listing ~30 ms (issue 13).
        runs = existing_results(grove.config.repo, grove.store.list_runs())
    if json_out:
        print_json([r.to_json() for r in runs])
        return
    if not runs:
        console.print("no workflow runs: start one with `grove workflow run TEMPLATE|FILE`")
        return
    table = Table("id", "name", "status", "nodes", "cost", "created", box=None)
    for r in runs:
        done = sum(1 for n in r.nodes if n.state == "completed")
        table.add_row(
            r.id,
            plain(r.name, newlines=False),
            _state(r.status.value),
            f"{done}/{len(r.nodes)}",
            f"${r.to_json()['cost_usd']:.4f}",
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@workflow_app.command("show")
def show(run_id: str, json_out: JsonOpt = False) -> None:
    """Show a run: each node's state, agent, base → result commit, tokens and cost, and the
    run's result branch grove/run/RUN (made here if it is missing)."""
    with open_grove() as grove:
        record, made = _with_result(grove, grove.workflows.get(run_id))
    if json_out:
        print_json(record.to_json())
    else:
        console.print(_run_table(record))
        for line in _run_notes(record):
            console.print(line)
        console.print(_result_line(record, made), highlight=False)


def _run_notes(record: RunRecord) -> list[Text]:
    """What the table has no room for: why a node's agent waits (budget, a slot, its
    children) while it is unfinished, and the run's error."""
    notes = [
        plain(f"{n.key}: {n.agent.wait_reason}", "dim", newlines=False)
        for n in record.nodes
        if n.agent is not None and n.agent.wait_reason and not n.agent.status.finished
    ]
    if record.error:
        notes.append(plain(f"error: {record.error}", "red"))
    return notes


@workflow_app.command("merge")
def merge(run_id: str) -> None:
    """Merge a completed run's result branch (grove/run/RUN: its sink nodes' work) into your
    checked-out branch, like `grove merge`: a merge commit; a conflict changes nothing and
    names the files; a branch already merged changes nothing."""
    from agentgrove.workspaces import checkout_merge_message, merge_branch_into_checkout

    with open_grove() as grove:
        repo = grove.service.workspaces.repo
        record, made = _with_result(grove, grove.workflows.get(run_id))
        if record.status is not RunStatus.COMPLETED:
            raise BadInput(
                f"run {record.id} is {record.status.value}, not completed: only a completed "
                f"run has a result to merge (`grove workflow show {record.id}` shows its nodes)"
            )
        if repo is None or made.branch is None:
            raise BadInput(f"run {record.id} has no result branch: {made.problem}")
        merged = merge_branch_into_checkout(repo, made.branch)
    console.print(markup(checkout_merge_message(made.branch, merged)), highlight=False)


@workflow_app.command("cancel")
def cancel(run_id: str) -> None:
    """Cancel a run: its pending and executing agents are cancelled."""
    with open_grove() as grove:
        record = grove.workflows.get(run_id)
        cancelled = grove.workflows.cancel(record.id)
    print(f"{record.id} cancelled ({len(cancelled)} agents stopped)")


@workflow_app.command("rerun")
def rerun(
    run_id: str,
    from_node: Annotated[str, typer.Option("--from", help="The node to run again.")],
    wait: Annotated[bool, typer.Option(help="Execute here until done.")] = False,
) -> None:
    """Run a node and everything downstream again, keeping upstream results."""
    with open_grove() as grove:
        record = grove.workflows.get(run_id)
        again = grove.workflows.rerun(record.id, from_node)
        print(visible(f"{record.id}: running again {', '.join(again)}"))
        if wait:
            final = _execute_with_progress(grove, record.id, mode=_mode())
            console.print(_run_table(final))
            raise typer.Exit(0 if final.status is RunStatus.COMPLETED else 1)


def _execute_with_progress(grove: Grove, run_id: str, *, mode: Mode) -> RunRecord:
    """Run the workflow's nodes here, showing their progress (see :class:`LiveProgress`)."""
    progress = LiveProgress(run_source(grove.store, run_id), console=err_console, mode=mode)
    grove.service.observer = progress.observe
    progress.run(lambda: grove.execute_run_async(run_id))
    return grove.store.get_run(run_id)


def _mode(*, json_out: bool = False) -> Mode:
    if json_out:
        return "quiet"
    return "live" if is_tty() else "plain"


def _run_table(record: RunRecord) -> Table:
    table = Table(
        "node",
        "role",
        "state",
        "agent",
        "base → result",
        "tokens",
        "cost",
        title=plain(f"{record.name} {record.id}: {record.status.value}", newlines=False),
        box=None,
    )
    for node in record.nodes:
        view = node.to_json()
        commits = ""
        if view["base_commit"]:
            commits = f"{view['base_commit'][:8]} → {(view['result_commit'] or '…')[:8]}"
        table.add_row(
            plain(node.key, newlines=False),
            plain(node.role, newlines=False),
            _state(node.state),
            view["agent_id"] or "-",
            commits,
            f"{view['tokens_in']}/{view['tokens_out']}",
            f"${view['cost_usd']:.4f}",
        )
    return table


def _state(state: str) -> Text:
    """A run's or node's state, styled where it has a style; never markup (a state without a
    style would otherwise render as ``[]running[/]``, which rich refuses)."""
    return Text(state, style=STATUS_STYLE.get(state, ""))


def _with_result(grove: Grove, run: RunRecord) -> tuple[RunRecord, RunBranch]:
    """:func:`with_result` here; with ``[git] remote``, fetched and pushed (one push attempt:
    a command does not wait out an outage, the worker retries)."""
    workspaces = grove.service.workspaces
    return with_result(workspaces.repo, run, remote=workspaces.remote)


def _result_line(record: RunRecord, made: RunBranch) -> str:
    """The run's result as one line of grove's markup (the problem may name agents' paths)."""
    if made.branch is not None and made.commit is not None:
        merge = f"`grove workflow merge {record.id}` brings it into your branch"
        line = f"result: [bold]{markup(made.branch)}[/] @ {made.commit[:10]} ({merge})"
        if made.push_error is not None:
            line += f"; not on the remote: {markup(made.push_error)}"
        return line
    if record.status is RunStatus.RUNNING:
        asking = [
            n.agent
            for n in record.nodes
            if n.agent is not None and n.agent.status is AgentStatus.AWAITING_INPUT
        ]
        if asking:
            answers = "; ".join(f"`grove answer {a.id} TEXT`" for a in asking)
            return f"result: none yet (waiting for a person's answer: {answers})"
        return "result: none yet (the run is still running)"
    return f"result: no branch: {markup(made.problem)}"
