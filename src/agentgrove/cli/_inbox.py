"""`grove inbox`: what waits for a person (approval gates, questions), as the dashboard's inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentgrove.cli._app import app, console, open_grove, print_json, print_table
from agentgrove.cli._live import format_elapsed
from agentgrove.inbox import InboxItem
from agentgrove.store._core import utcnow
from agentgrove.text import one_line, plain


@app.command()
def inbox(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the items as JSON (docs/json.md).")
    ] = False,
) -> None:
    """List what waits for a person, oldest first: workflow nodes at their approval gates and
    agents' questions, each with the command that acts on it."""
    with open_grove() as grove:
        items = grove.inbox()
    if json_out:
        print_json([item.to_json() for item in items])
        return
    if not items:
        console.print("nothing waits for a person", highlight=False)
        return
    print_table(inbox_table(items, utcnow()))


def inbox_table(items: list[InboxItem], now: datetime) -> Table:
    """One row per item: what, whose, waiting how long (and until when), and the command."""
    table = Table("what", "agent", "run / node", "waiting", "asks", "act with", box=None)
    for item in items:
        where = f"{item.run_id[:8]} / {item.node}" if item.run_id else "-"
        waited = format_elapsed(max(0.0, (now - item.since).total_seconds()))
        if item.deadline is not None:
            left = max(0.0, (item.deadline - now).total_seconds())
            waited += f" ({format_elapsed(left)} left)"
        what = "question" if item.kind == "question" else f"approval ({item.gate})"
        asks = item.asks
        if item.question is not None and item.question.choices:
            asks += " [" + " | ".join(item.question.choices) + "]"
        table.add_row(
            Text(what, style="bright_magenta" if item.kind == "question" else "bold yellow"),
            plain(f"{item.agent.id} ({item.agent.role})", newlines=False),
            plain(where, newlines=False),
            waited,
            Text(one_line(asks, 80), no_wrap=True, overflow="ellipsis"),
            plain(item.command, newlines=False),
        )
    return table
