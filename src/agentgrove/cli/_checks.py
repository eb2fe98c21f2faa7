"""How an agent's check is shown: the ``ls`` cell and the ``show`` section. Everything here
renders text the agent controls (the check's output), so values are ``Text``, never markup."""

from __future__ import annotations

from rich.text import Text

from agentgrove.models import CheckRecord, CheckStatus
from agentgrove.text import plain

_STYLE = {CheckStatus.PASSED: "green", CheckStatus.FAILED: "red", CheckStatus.NONE: "dim"}


def check_cell(check: CheckRecord) -> Text:
    """``passed`` / ``failed`` (with ``(N rounds)`` when it took more than one) or ``-``."""
    if check.status is CheckStatus.NONE:
        return Text("-", style="dim")
    cell = Text(check.status.value, style=_STYLE[check.status])
    if check.rounds > 1:
        cell.append(f" ({check.rounds} rounds)", style="dim")
    return cell


def check_rows(check: CheckRecord) -> list[tuple[str, Text]]:
    """``grove show``'s rows for the check: none without a command."""
    if check.command is None:
        return []
    rows = [("check", plain(check.command))]
    if check.status is CheckStatus.NONE:
        rows.append(("check status", Text("not run", style="dim")))
        return rows
    code = "-" if check.exit_code is None else str(check.exit_code)
    rows.append(
        (
            "check status",
            check_cell(check).append(f", exit {code}, {check.duration_ms or 0} ms", style=""),
        )
    )
    if check.output_tail:
        rows.append(("check output", plain(check.output_tail.rstrip())))
    return rows
