"""What the dashboard can change: cancel an agent, retry an agent, answer an agent's question,
approve or reject a workflow node held at its approval gate.

Every action needs the token the dashboard was started with, as ``Authorization: Bearer
TOKEN`` or as a ``token`` form field (the pages' buttons send the field). Without a configured
token they answer 403, whatever is sent.

Retry means: for a workflow node, re-run the run from that node (the engine's rerun-from-node,
keeping upstream results); for any other finished agent, spawn a fresh agent with the same role,
task, model, parent and base commit. The old agent is left as it was, so its history stays.

Approve and reject (``POST /runs/RUN/nodes/NODE/approve|reject``, form field ``comment``,
required to reject) are :meth:`Grove.approve` / :meth:`Grove.reject`, decided by the token's
name (``app.state.token_name``: ``GROVE_DASHBOARD_TOKEN_NAME``, else ``dashboard``). Bad input
answers 400 with one line and changes nothing.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import SpawnRequest

router = APIRouter()


@router.post("/agents/{agent_id}/cancel")
async def cancel(request: Request, agent_id: str) -> Response:
    form = await _form(request)
    refused = _refused(request, form)
    if refused is not None:
        return refused
    grove: Grove = request.app.state.grove
    tree = form.get("tree") in ("1", "on", "true")
    full_id = await anyio.to_thread.run_sync(grove.store.resolve_id, agent_id)
    cancelled = await anyio.to_thread.run_sync(lambda: grove.service.cancel(full_id, tree=tree))
    return _done(form, f"/agents/{full_id}", cancelled=cancelled)


@router.post("/agents/{agent_id}/retry")
async def retry(request: Request, agent_id: str) -> Response:
    form = await _form(request)
    refused = _refused(request, form)
    if refused is not None:
        return refused
    grove: Grove = request.app.state.grove
    where, result = await anyio.to_thread.run_sync(_retry, grove, agent_id)
    return _done(form, where, **result)


@router.post("/agents/{agent_id}/answer")
async def answer(request: Request, agent_id: str) -> Response:
    """Answer the question the agent awaits (form field or JSON-less API call's ``answer``):
    it goes back to pending and resumes its session with the answer. Answered by the token's
    name (``GROVE_DASHBOARD_TOKEN_NAME``, else ``dashboard``), like an approval."""
    form = await _form(request)
    refused = _refused(request, form)
    if refused is not None:
        return refused
    grove: Grove = request.app.state.grove
    text = form.get("answer", "")
    by: str = request.app.state.token_name  # as for approvals: the token's holder
    answered = await anyio.to_thread.run_sync(lambda: grove.answer(agent_id, text, by=by))
    return _done(form, f"/agents/{answered.agent_id}", question_id=answered.id)


def _retry(grove: Grove, agent_id: str) -> tuple[str, dict[str, object]]:
    """Where to look next, and what was started."""
    old = grove.get(agent_id)
    if not old.status.finished:
        raise BadInput(f"agent {old.id} is still {old.status.value}: cancel it before a retry")
    if old.node_key is not None and old.workflow_run_id is not None:
        nodes = grove.workflows.rerun(old.workflow_run_id, old.node_key)
        return f"/runs/{old.workflow_run_id}", {"rerun": nodes}
    new = grove.service.spawn(
        SpawnRequest(
            old.role,
            old.task,
            parent_id=old.parent_id,
            model=old.model,
            base=old.base_ref,
            budget_usd=old.budget_usd,
        )
    )
    return f"/agents/{new.id}", {"agent_id": new.id}


@router.post("/runs/{run_id}/nodes/{node}/approve")
async def approve(request: Request, run_id: str, node: str) -> Response:
    return await _decide(request, run_id, node, approve=True)


@router.post("/runs/{run_id}/nodes/{node}/reject")
async def reject(request: Request, run_id: str, node: str) -> Response:
    return await _decide(request, run_id, node, approve=False)


async def _decide(request: Request, run_id: str, node: str, *, approve: bool) -> Response:
    form = await _form(request)
    refused = _refused(request, form)
    if refused is not None:
        return refused
    grove: Grove = request.app.state.grove
    by: str = request.app.state.token_name
    comment = form.get("comment")
    decision = await anyio.to_thread.run_sync(
        lambda: grove.workflows.decide(run_id, node, approve=approve, by=by, comment=comment)
    )
    where = f"/runs/{decision.run_id}"
    if "token" in form:  # a page's form: back to the run (or to the page it names)
        return RedirectResponse(_next(form, where), status_code=303)
    return JSONResponse({"location": where, **decision.to_json()})


def _next(form: dict[str, str], where: str) -> str:
    """Where a form asked to go back to (``next``: the inbox's forms), if it is one of this
    dashboard's own pages; else ``where``. Never another site: ``//evil`` and ``https:`` are
    not paths of ours."""
    wanted = form.get("next", "")
    plain = all(0x21 <= ord(c) < 0x7F and c not in "\\%" for c in wanted)
    if plain and wanted.startswith("/") and not wanted.startswith("//"):
        return wanted
    return where


async def _form(request: Request) -> dict[str, str]:
    """URL-encoded form fields (the only kind the pages send), first value of each."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def _refused(request: Request, form: dict[str, str]) -> Response | None:
    """``None`` when the request carries the configured token; else the 403 to answer with."""
    token: str | None = request.app.state.token
    if token is None:
        return PlainTextResponse(
            "the dashboard is read-only: start it with --token (or GROVE_DASHBOARD_TOKEN) "
            "to allow cancel, retry, answer, approve and reject",
            status_code=403,
        )
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else form.get("token", "")
    if not secrets.compare_digest(given.encode(), token.encode()):
        return PlainTextResponse("wrong or missing token", status_code=403)
    return None


def _done(form: dict[str, str], where: str, **result: object) -> Response:
    """Back to a page for a form post (the browser follows), the result as JSON for an API call."""
    if form:
        return RedirectResponse(_next(form, where), status_code=303)
    return JSONResponse({"location": where, **result})
