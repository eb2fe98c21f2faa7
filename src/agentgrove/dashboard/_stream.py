"""``GET /events/stream``: new events as server-sent events, each with the current state of the
agent and run it concerns, so a page can update itself without asking again.

Workers usually run in other processes, so the events table is the source of truth: the stream
polls it every :data:`POLL_S` seconds (one indexed range query) and sends what is new. The
client's ``Last-Event-ID`` (sent by ``EventSource`` when it reconnects) wins over ``?after=``,
so a reconnecting page misses nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from agentgrove.grove import Grove
from agentgrove.store import Store
from agentgrove.store._runs import node_state
from agentgrove.store._views import FeedEvent
from agentgrove.text import one_line

router = APIRouter()

POLL_S = 0.5
PING_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""


@router.get("/events/stream")
async def stream(
    request: Request,
    after: int | None = None,
    last_event_id: str | None = Header(default=None),
) -> StreamingResponse:
    grove: Grove = request.app.state.grove
    start = after
    if last_event_id is not None and last_event_id.isdigit():
        start = int(last_event_id)
    if start is None:
        start = await anyio.to_thread.run_sync(grove.store.last_event_id)
    return StreamingResponse(
        _events(grove.store, start, request.app.state.stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(store: Store, after: int, stopping: threading.Event) -> AsyncIterator[str]:
    """Until the server stops (or the client goes: Starlette then cancels this generator)."""
    yield "retry: 2000\n\n"
    quiet_s = 0.0
    while not stopping.is_set():
        batch = await anyio.to_thread.run_sync(store.events_after, after)
        if batch:
            for payload in await anyio.to_thread.run_sync(payloads, store, batch):
                yield f"id: {payload['id']}\ndata: {json.dumps(payload)}\n\n"
            after, quiet_s = batch[-1].event.id, 0.0
            continue  # a full batch may have more behind it
        quiet_s += POLL_S
        if quiet_s >= PING_S:
            quiet_s = 0.0
            yield ": ping\n\n"
        await anyio.sleep(POLL_S)


def payloads(store: Store, batch: list[FeedEvent]) -> list[dict[str, Any]]:
    """Each event as JSON, with its agent's and run's state now (two queries per batch)."""
    ids = {item.event.agent_id for item in batch if item.event.agent_id}
    records = {a.id: a for a in store.find_agents(ids=ids, limit=len(ids))} if ids else {}
    run_ids = {item.run_id for item in batch if item.run_id}
    run_ids |= {a.workflow_run_id for a in records.values() if a.workflow_run_id}
    runs = store.run_statuses(run_ids)
    out: list[dict[str, Any]] = []
    for item in batch:
        event = item.event
        agent = records.get(event.agent_id or "")
        run_id = item.run_id or (agent.workflow_run_id if agent else None)
        out.append(
            {
                "id": event.id,
                "at": event.at.isoformat(),
                "kind": event.kind,
                "agent_id": event.agent_id,
                "run_id": run_id,
                "data": event.data,
                "run_status": runs[run_id].value if run_id in runs else None,
                "agent": None
                if agent is None
                else {
                    "id": agent.id,
                    "role": agent.role,
                    "status": agent.status.value,
                    "node_key": agent.node_key,
                    "node_state": node_state(agent).value if agent.node_key else None,
                    "tokens": agent.tokens_in + agent.tokens_out,
                    "cost_usd": agent.cost_usd,
                    "output": _output(agent.error or agent.output),
                    "failed": agent.error is not None,
                },
            }
        )
    return out


def _output(text: str | None) -> str | None:
    """What a node row shows of an output or error (``None``: nothing yet)."""
    return None if text is None else one_line(text, 160)
