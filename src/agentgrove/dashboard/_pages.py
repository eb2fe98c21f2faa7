"""The HTML pages. Each handler reads what it shows from the store and renders one template;
none writes anything."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from agentgrove.config import read_budget
from agentgrove.dashboard._charts import usage_chart
from agentgrove.dashboard._layout import NODE_H, NODE_W, layout
from agentgrove.dashboard._transcript import entries
from agentgrove.errors import BadInput, ConfigError, GroveError
from agentgrove.grove import Grove
from agentgrove.models import AgentRecord, AgentStatus, NodeView, elapsed_s
from agentgrove.run_branches import existing_results
from agentgrove.stats import PASSING
from agentgrove.store._core import utcnow

router = APIRouter()


class NotFound(BadInput):
    """A page about something that does not exist (answered with 404)."""


DIFF_LIMIT = 300_000
"""Characters of a branch diff shown; a bigger diff is cut (``grove diff`` shows all of it)."""
MAX_DRAWN_NODES = 400
"""Past this many nodes a run is listed, not drawn: an SVG that size helps nobody."""


def _grove(request: Request) -> Grove:
    grove: Grove = request.app.state.grove
    return grove


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    context.setdefault("after", _grove(request).store.last_event_id())
    context["can_act"] = request.app.state.token is not None
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, context)
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    store = _grove(request).store
    after = store.last_event_id()
    recent = store.events_after(max(after - 40, 0))
    return _render(
        request,
        "overview.html",
        after=after,
        counts={s.value: n for s, n in store.count_by_status().items()},
        statuses=[s.value for s in AgentStatus],
        runs=store.run_summaries(limit=10),
        feed=list(reversed(recent)),
    )


@router.get("/agents", response_class=HTMLResponse)
def agents(request: Request, status: str = "", role: str = "", run: str = "") -> HTMLResponse:
    store = _grove(request).store
    if status and status not in AgentStatus.__members__.values():
        raise BadInput(f"unknown status {status!r}: use one of {', '.join(AgentStatus)}")
    found = store.find_agents(
        status=AgentStatus(status) if status else None,
        role=role or None,
        run_id=run or None,
    )
    return _render(
        request,
        "agents.html",
        agents=found,
        filters={"status": status, "role": role, "run": run},
        statuses=[s.value for s in AgentStatus],
        roles=store.agent_roles(),
        runs=store.run_summaries(),
    )


@router.get("/agents/{agent_id}", response_class=HTMLResponse)
def agent(request: Request, agent_id: str) -> HTMLResponse:
    grove = _grove(request)
    record = grove.get(agent_id)
    return _render(
        request,
        "agent.html",
        agent=record,
        children=grove.store.list_agents(parent_id=record.id),
        transcript=entries(grove.store.transcript(record.id)),
        diff=_diff(grove, record),
        wall_ms=_wall_ms(record),
    )


@router.get("/agents/{agent_id}/tree", response_class=HTMLResponse)
def tree(request: Request, agent_id: str) -> HTMLResponse:
    grove = _grove(request)
    root = grove.get(agent_id)
    members = grove.store.tree(root.id)
    return _render(
        request,
        "tree.html",
        root=root,
        rows=_depth_first(root, members),
        totals={
            "tokens_in": sum(a.tokens_in for a in members),
            "tokens_out": sum(a.tokens_out for a in members),
            "cost_usd": sum(a.cost_usd for a in members),
        },
    )


@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request) -> HTMLResponse:
    return _render(request, "runs.html", runs=_grove(request).store.run_summaries())


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(request: Request, run_id: str) -> Response:
    grove = _grove(request)
    try:
        record = grove.store.get_run(run_id)
    except BadInput as exc:
        raise NotFound(str(exc)) from exc
    if record.id != run_id:  # a prefix: one canonical address per run
        return RedirectResponse(f"/runs/{record.id}", status_code=303)
    # The result branch if it exists; the page writes nothing (`grove workflow show` makes it).
    (record,) = existing_results(grove.service.workspaces.repo, [record])
    drawn = len(record.nodes) <= MAX_DRAWN_NODES
    dag = layout({n.key: n.depends_on for n in record.nodes}) if drawn else None
    return _render(
        request,
        "run.html",
        run=record,
        nodes={n.key: n for n in record.nodes},
        dag=dag,
        node_w=NODE_W,
        node_h=NODE_H,
        cost=record.cost_usd,
        tokens=record.tokens_in + record.tokens_out,
        # What superseded agents spent: the live totals add it to the current nodes' sums.
        earlier_cost=record.cost_usd - sum(n.agent.cost_usd for n in record.nodes if n.agent),
        earlier_tokens=record.tokens_in
        + record.tokens_out
        - sum(n.agent.tokens_in + n.agent.tokens_out for n in record.nodes if n.agent),
        node_href=_node_href,
    )


@router.get("/budgets", response_class=HTMLResponse)
def budgets(request: Request) -> HTMLResponse:
    grove = _grove(request)
    note = None
    try:  # grove.toml as it is now: a daily limit set since the dashboard started shows
        daily: float | Literal["configured"] | None = read_budget(grove.config.root).daily_usd
    except ConfigError as exc:
        daily, note = "configured", f"{exc} (showing the limits read at start)"
    rows = grove.store.budget_report(utcnow(), daily_limit_usd=daily)
    return _render(
        request,
        "budgets.html",
        note=note,
        rows=[
            {"name": name, "limit": limit, "reserved": reserved, "spent": spent}
            | meter(limit, spent, reserved)
            for name, limit, reserved, spent in rows
        ],
    )


def meter(limit: float, spent: float, reserved: float) -> dict[str, Any]:
    """How a scope's bar is drawn: widths in % of the bar, which add up to at most 100.
    Within the limit, the bar is the limit; over it, the bar is what was spent and reserved,
    with the limit marked at ``limit_pct`` and ``over`` set, so an overspent scope looks
    overspent (two capped 100 % widths used to squeeze into half a bar each)."""
    if limit <= 0:
        return {
            "spent_pct": 0.0,
            "reserved_pct": 0.0,
            "limit_pct": 100.0,
            "over": False,
            "used_pct": 0.0,
        }
    scale = max(limit, spent + reserved)
    return {
        "spent_pct": spent / scale * 100,
        "reserved_pct": reserved / scale * 100,
        "limit_pct": limit / scale * 100,
        "over": spent + reserved > limit,
        "used_pct": (spent + reserved) / limit * 100,
    }


@router.get("/usage", response_class=HTMLResponse)
def usage(request: Request, group: str = "role") -> HTMLResponse:
    if group not in ("role", "model"):
        raise BadInput(f"unknown grouping {group!r}: use role or model")
    rows = _grove(request).store.usage_rows()
    by: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        cell = by.setdefault((row.role, row.model), {"agents": 0, "tokens": 0, "cost": 0.0})
        cell["agents"] += 1
        cell["tokens"] += row.tokens_in + row.tokens_out
        cell["cost"] += row.cost_usd
    return _render(
        request,
        "usage.html",
        group=group,
        charts=[
            usage_chart(rows, "role" if group == "role" else "model", "cost"),
            usage_chart(rows, "role" if group == "role" else "model", "tokens"),
        ],
        table=sorted(by.items(), key=lambda item: -item[1]["cost"]),
        stats=_grove(request).stats(by=group),
        passing=PASSING,
    )


def _node_href(node: NodeView) -> str:
    return f"/agents/{node.agent.id}" if node.agent else "#"


def _diff(grove: Grove, record: AgentRecord) -> str | None:
    """The agent's committed work as a patch; ``None`` when there is no branch to diff."""
    ws = record.workspace
    if ws is None or ws.branch is None:
        return None
    try:
        text = grove.service.workspaces.diff(ws)
    except GroveError as exc:  # e.g. the branch was removed by `grove gc`
        return f"(no diff: {exc})"
    if len(text) > DIFF_LIMIT:
        return text[:DIFF_LIMIT] + "\n… (cut here: `grove diff` shows all of it)"
    return text


def _wall_ms(record: AgentRecord) -> int | None:
    seconds = elapsed_s(record, utcnow())
    return None if seconds is None else int(seconds * 1000)


def _depth_first(root: AgentRecord, members: list[AgentRecord]) -> list[tuple[AgentRecord, int]]:
    """Each member with its indentation, every child right under its parent (iterative)."""
    children: dict[str | None, list[AgentRecord]] = {}
    for member in members:
        children.setdefault(member.parent_id, []).append(member)
    rows: list[tuple[AgentRecord, int]] = []
    todo = [(root, 0)]
    while todo:
        node, level = todo.pop()
        rows.append((node, level))
        todo.extend((c, level + 1) for c in reversed(children.get(node.id, [])))
    return rows
