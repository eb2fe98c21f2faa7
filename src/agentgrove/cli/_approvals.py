"""`grove approve` and `grove reject`: a person's decision at a workflow node's approval gate.

Who decided is the OS user (``getpass.getuser()``); the decision, its time and the comment are
the ``approval.approved`` / ``approval.rejected`` event of the node's agent (``grove logs``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from agentgrove.approvals import Approval, ApprovalOutcome, check_comment
from agentgrove.cli._app import app, open_grove, print_json
from agentgrove.text import visible

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")]


@app.command()
def approve(
    run_id: str,
    node: str,
    comment: Annotated[str | None, typer.Option(help="Why (recorded with the decision).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Approve a workflow node waiting at its approval gate: a `before` node starts, an
    `after` node's result counts and its dependents may start."""
    text = check_comment(comment, approve=True)
    with open_grove() as grove:
        decision = grove.approve(run_id, node, comment=text)
    _report(decision, json_out=json_out)


@app.command()
def reject(
    run_id: str,
    node: str,
    comment: Annotated[
        str | None, typer.Option(help="Why (required): an `after` node's rerun gets it.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Reject a workflow node waiting at its approval gate: an `after` node with attempts
    left runs again with the comment added to its task; otherwise the run fails `rejected`."""
    text = check_comment(comment, approve=False)
    assert text is not None
    with open_grove() as grove:
        decision = grove.reject(run_id, node, text)
    _report(decision, json_out=json_out)


_SAID = {
    ApprovalOutcome.START: "it starts now",
    ApprovalOutcome.COMPLETE: "its result counts; its dependents may start",
    ApprovalOutcome.RERUN: "it runs again with the comment added to its task",
    ApprovalOutcome.FAIL: "the node failed (rejected), and so does the run",
}


def _report(decision: Approval, *, json_out: bool) -> None:
    if json_out:
        print_json(decision.to_json())
        return
    verb = "approved" if decision.approved else "rejected"
    print(
        visible(
            f"{decision.run_id}: {verb} node {decision.node} as {decision.by}: "
            f"{_SAID[decision.outcome]}",
            newlines=False,
        )
    )
