"""``grove stats``: cost per passing work, per role or model (see :mod:`agentgrove.stats`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentgrove.cli._app import app, console, open_grove, print_json
from agentgrove.cli._live import format_elapsed
from agentgrove.stats import PASSING, StatsReport, StatsRow, parse_by, parse_since
from agentgrove.text import plain


@app.command()
def stats(
    by: Annotated[
        str | None, typer.Option("--by", help="Group by role or model (default: all agents).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only agents that finished at or after this ISO date or datetime (UTC).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the stable JSON object (docs/json.md).")
    ] = False,
) -> None:
    """Cost per passing work: agents, passed checks, pass rate, cost and tokens per passing
    agent, median duration."""
    # Checked before the grove is opened: bad input touches nothing.
    grouping, start = parse_by(by), parse_since(since)
    with open_grove() as grove:
        report = grove.stats(by=grouping, since=start)
    if json_out:
        print_json(report.to_json())
        return
    console.print(stats_table(report))
    console.print(plain(PASSING, "dim"))


def stats_table(report: StatsReport) -> Table:
    """The report as a table: one row per group, then the total."""
    since = f" since {report.since.isoformat()}" if report.since else ""
    title = f"Cost per passing work{since}" + (f", by {report.by}" if report.by else "")
    table = Table(
        report.by or "",
        "agents",
        "passed",
        "check failed",
        "unchecked",
        "pass rate",
        "cost",
        "cost/pass",
        "tokens/pass",
        "median duration",
        title=title,
        title_justify="left",
        box=None,
    )
    for row in report.groups:
        table.add_row(*_cells(row))
    if report.groups:
        table.add_section()
    table.add_row(*_cells(report.total), style="bold" if report.groups else "")
    return table


def _cells(row: StatsRow) -> tuple[str | Text, ...]:
    rate = "-" if row.pass_rate is None else f"{row.pass_rate:.0%}"
    per_pass = "-" if row.cost_per_pass_usd is None else f"${row.cost_per_pass_usd:.4f}"
    tokens = "-" if row.tokens_per_pass is None else f"{row.tokens_per_pass:,.0f}"
    median = row.median_duration_ms
    return (
        plain("total" if row.group is None else row.group, newlines=False),
        str(row.agents),
        str(row.passed),
        str(row.check_failed),
        str(row.unchecked),
        rate,
        f"${row.cost_usd:.4f}",
        per_pass,
        tokens,
        _duration(median),
    )


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else format_elapsed(ms / 1000)
