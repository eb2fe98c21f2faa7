"""The web dashboard on real data: a grove whose agents and workflow ran on an in-process
runtime in a real git repository, pages fetched through FastAPI's TestClient, the event stream
and the server through a real uvicorn on loopback."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

import agentgrove.dashboard
from agentgrove.dashboard import create_app, serve_dashboard
from agentgrove.dashboard._app import duration, wall
from agentgrove.dashboard._charts import bucket_size, usage_chart
from agentgrove.dashboard._layout import NODE_W, layers, layout
from agentgrove.dashboard._pages import meter
from agentgrove.dashboard._server import dashboard_url
from agentgrove.dashboard._transcript import entries
from agentgrove.errors import BadInput
from agentgrove.grove import Grove
from agentgrove.models import AgentStatus, RunStatus, SpawnRequest
from agentgrove.runtime import MessageSink, RunResult, RunSpec
from agentgrove.store._views import UsageRow
from tests.conftest import run_cli

DIAMOND = """
name: diamond
nodes:
  - {key: plan, role: planner, task: "plan it"}
  - {key: left, role: implementer, task: "left side", depends_on: [plan]}
  - {key: right, role: implementer, task: "right side", depends_on: [plan]}
  - {key: join, role: tester, task: "join both", depends_on: [left, right]}
"""

NASTY = "<script>alert('x')</script> & more"


class WritingRuntime:
    """Each agent 'calls' the Write tool through the sink, as the Claude runtime reports it,
    writes ``<agent>.txt`` in its worktree, and reports usage."""

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        name = f"{spec.agent_id}.txt"
        call = {"id": f"tu-{spec.agent_id}", "name": "Write", "input": {"file_path": name}}
        sink(
            "AssistantMessage",
            {"content": [{"text": f"Writing {name}"}, call], "model": spec.model},
            ("agent.tool_use", {"tool": "Write", "input": name}),
        )
        (spec.cwd / name).write_text(f"made by {spec.role.name}: {NASTY}\n")
        sink(
            "UserMessage",
            {"content": [{"tool_use_id": call["id"], "content": "File created", "is_error": None}]},
            ("agent.tool_result", {"is_error": False, "content": "File created"}),
        )
        sink("ResultMessage", {"subtype": "success", "is_error": False, "result": "done"}, None)
        return RunResult(
            success=True, output=f"wrote {name}", tokens_in=100, tokens_out=20, cost_usd=0.01
        )


@pytest.fixture
def grove(repo: Path) -> Iterator[Grove]:
    with Grove.init(repo, runtime=WritingRuntime()) as g:
        yield g


@pytest.fixture
def ran(grove: Grove) -> dict[str, str]:
    """A finished diamond workflow (with a budget), a finished agent with a child, and a
    pending agent whose task needs escaping; their ids."""
    run = grove.start_workflow(DIAMOND, budget_usd=5.0)
    anyio.run(grove.execute_run_async, run.id)
    parent = grove.run("file-writer", "write the parent file", budget_usd=2.0)
    child = grove.service.spawn(SpawnRequest("reviewer", "review it", parent_id=parent.id))
    anyio.run(grove.execute_async, [child.id])
    pending = grove.spawn("spec-writer", NASTY)
    return {"run": run.id, "parent": parent.id, "child": child.id, "pending": pending.id}


def client(grove: Grove, token: str | None = None) -> TestClient:
    return TestClient(create_app(grove, token=token))


def test_public_names() -> None:
    assert agentgrove.dashboard.__all__ == ["create_app", "serve_dashboard"]


def test_every_page_renders_real_data(grove: Grove, ran: dict[str, str]) -> None:
    web = client(grove)
    run = grove.store.get_run(ran["run"])
    assert run.status is RunStatus.COMPLETED

    home = web.get("/")
    assert home.status_code == 200
    assert ran["run"] in home.text and "agent.completed" in home.text

    listing = web.get("/agents")
    assert all(ran[k] in listing.text for k in ("parent", "child", "pending"))

    detail = web.get(f"/agents/{ran['parent']}")
    assert detail.status_code == 200
    assert '<b class="tool-name">Write</b>' in detail.text  # the tool call...
    assert "File created" in detail.text  # ...with its result
    assert '<span class="add">+made by file-writer: &lt;script&gt;alert(' in detail.text  # diff
    assert "100 in · 20 out" in detail.text and "$0.0100" in detail.text
    assert ran["child"] in detail.text  # children listed

    tree = web.get(f"/agents/{ran['parent'][:6]}/tree")
    assert tree.status_code == 200
    assert ran["child"] in tree.text and "2 agents" in tree.text

    dag = web.get(f"/runs/{ran['run']}")
    assert dag.text.count('class="node"') == 4
    assert dag.text.count('data-status="completed"') >= 5  # four nodes and the run
    assert dag.text.count('class="edge"') == 4

    assert ran["run"] in web.get("/runs").text

    budgets = web.get("/budgets").text
    assert f"run {ran['run']}" in budgets and f"tree {ran['parent']}" in budgets
    assert "$5.00" in budgets and "$0.0400" in budgets  # limit and spent of the run

    usage = web.get("/usage").text
    assert "planner" in usage and "<rect class=" in usage
    by_model = web.get("/usage?group=model").text
    assert grove.store.get_agent(ran["parent"]).model in by_model

    assert "grove_agents" in web.get("/metrics").text
    css = web.get("/static/dashboard.css")
    assert css.status_code == 200 and "data-status" in css.text
    assert "EventSource" in web.get("/static/dashboard.js").text


def test_user_text_is_escaped(grove: Grove, ran: dict[str, str]) -> None:
    page = client(grove).get(f"/agents/{ran['pending']}").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in page


def test_agent_filters(grove: Grove, ran: dict[str, str]) -> None:
    web = client(grove)

    def shown(query: str) -> set[str]:
        page = web.get(f"/agents?{query}")
        assert page.status_code == 200
        return {
            agent.id
            for agent in grove.store.list_agents()
            if f'data-agent-row="{agent.id}"' in page.text
        }

    nodes = {n.agent.id for n in grove.store.get_run(ran["run"]).nodes if n.agent}
    assert shown("status=pending") == {ran["pending"]}
    assert shown("role=reviewer") == {ran["child"]}
    assert shown(f"run={ran['run']}") == nodes
    assert shown("role=implementer&status=completed") == {
        n.agent.id
        for n in grove.store.get_run(ran["run"]).nodes
        if n.role == "implementer" and n.agent
    }
    assert len(shown("")) == 7
    assert web.get("/agents?status=sleeping").status_code == 400


def test_unknown_things_are_404(grove: Grove) -> None:
    web = client(grove)
    assert web.get("/agents/ffffffffffff").status_code == 404
    assert web.get("/runs/nosuchrun").status_code == 404
    # Any other address or a bad query value: an HTML page naming the problem, not JSON.
    lost = web.get("/no/such/page")
    assert lost.status_code == 404 and lost.headers["content-type"].startswith("text/html")
    assert "nothing at /no/such/page" in lost.text
    bad = web.get("/events/stream?after=abc")
    assert bad.status_code == 400 and "after: Input should be a valid integer" in bad.text


def test_cancel_needs_the_token(grove: Grove, ran: dict[str, str]) -> None:
    target = ran["pending"]
    read_only = client(grove)
    assert read_only.post(f"/agents/{target}/cancel").status_code == 403
    assert "Cancel</button>" not in read_only.get(f"/agents/{target}").text

    web = client(grove, token="s3cret")
    assert "Cancel</button>" in web.get(f"/agents/{target}").text
    assert web.post(f"/agents/{target}/cancel").status_code == 403
    wrong = web.post(f"/agents/{target}/cancel", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert grove.store.get_agent(target).status is AgentStatus.PENDING

    done = web.post(f"/agents/{target}/cancel", headers={"Authorization": "Bearer s3cret"})
    assert done.status_code == 200 and done.json()["cancelled"] == [target]
    assert grove.store.get_agent(target).status is AgentStatus.CANCELLED


def test_cancel_from_the_form_redirects_to_the_agent(grove: Grove) -> None:
    parent = grove.spawn("planner", "plan")
    child = grove.service.spawn(SpawnRequest("implementer", "do", parent_id=parent.id))
    web = client(grove, token="s3cret")
    page = web.post(
        f"/agents/{parent.id}/cancel",
        data={"token": "s3cret", "tree": "1"},
        follow_redirects=False,
    )
    assert page.status_code == 303 and page.headers["location"] == f"/agents/{parent.id}"
    assert grove.store.get_agent(child.id).status is AgentStatus.CANCELLED
    assert grove.store.get_agent(parent.id).status is AgentStatus.CANCELLED


def test_retry_spawns_a_fresh_agent_or_reruns_the_node(grove: Grove, ran: dict[str, str]) -> None:
    web = client(grove, token="t")
    auth = {"Authorization": "Bearer t"}
    assert client(grove).post(f"/agents/{ran['child']}/retry").status_code == 403

    again = web.post(f"/agents/{ran['child']}/retry", headers=auth)
    assert again.status_code == 200
    new = grove.store.get_agent(again.json()["agent_id"])
    old = grove.store.get_agent(ran["child"])
    assert (new.role, new.task, new.parent_id) == (old.role, old.task, old.parent_id)
    assert new.status is AgentStatus.PENDING and new.id != old.id

    node = next(n for n in grove.store.get_run(ran["run"]).nodes if n.key == "left")
    assert node.agent is not None
    rerun = web.post(f"/agents/{node.agent.id}/retry", headers=auth)
    assert rerun.json()["rerun"] == ["left", "join"]
    assert grove.store.get_run(ran["run"]).status is RunStatus.RUNNING

    busy = web.post(f"/agents/{ran['pending']}/retry", headers=auth)
    assert busy.status_code == 400 and "cancel it before a retry" in busy.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stream_pushes_a_new_event_and_the_server_stops_on_cancel(
    grove: Grove, ran: dict[str, str]
) -> None:
    port = _free_port()
    received: list[dict[str, object]] = []

    async def main() -> None:
        ready = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve_dashboard(grove, port=port, ready=ready))
            with anyio.fail_after(20):
                await ready.wait()
                async with (
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
                    http.stream("GET", "/events/stream") as response,
                ):
                    assert response.headers["content-type"].startswith("text/event-stream")
                    lines = response.aiter_lines()
                    assert await anext(lines) == "retry: 2000"
                    # Only events after the connection: cancel one agent now.
                    grove.service.cancel(ran["pending"])
                    async for line in lines:
                        if line.startswith("data: "):
                            received.append(json.loads(line[6:]))
                            break
            tg.cancel_scope.cancel()  # the server must shut down cleanly from here

    anyio.run(main)
    [event] = received
    assert event["kind"] == "agent.cancelled" and event["agent_id"] == ran["pending"]
    assert event["agent"] == {
        "id": ran["pending"],
        "role": "spec-writer",
        "status": "cancelled",
        "node_key": None,
        "node_state": None,
        "tokens": 0,
        "cost_usd": 0.0,
        "output": "cancelled by request",
        "failed": True,
    }
    with pytest.raises(httpx.ConnectError):  # nothing listens any more
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_stream_resumes_after_the_last_event_id(grove: Grove, ran: dict[str, str]) -> None:
    from agentgrove.dashboard._stream import payloads

    feed = grove.store.events_after(0)
    node_events = [p for p in payloads(grove.store, feed) if p["agent"] and p["agent"]["node_key"]]
    assert {p["agent"]["node_state"] for p in node_events} == {"completed"}
    assert all(p["run_id"] == ran["run"] and p["run_status"] == "completed" for p in node_events)
    assert [e.event.id for e in grove.store.events_after(feed[-3].event.id)] == [
        e.event.id for e in feed[-2:]
    ]


def test_non_loopback_without_token_is_refused(grove: Grove, repo: Path) -> None:
    with pytest.raises(BadInput, match="without a token"):
        anyio.run(lambda: serve_dashboard(grove, host="0.0.0.0"))
    result = run_cli("dashboard", "--host", "0.0.0.0", cwd=repo)
    assert result.returncode == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without a token" in result.stderr


def test_a_port_in_use_is_bad_input(grove: Grove) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadInput, match=f"127.0.0.1:{port}"):
            anyio.run(lambda: serve_dashboard(grove, port=port))
        # The command says so in one line, exit code 2 (not a traceback from its task group).
        result = run_cli("dashboard", "--port", str(port), cwd=grove.config.root)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in result.stderr
    assert "choose another --port" in result.stderr


def test_an_ipv6_address_is_printed_in_brackets() -> None:
    assert dashboard_url("::1", 8420) == "http://[::1]:8420/"
    assert dashboard_url("127.0.0.1", 8420) == "http://127.0.0.1:8420/"


# -- pure parts --------------------------------------------------------------------------------


def test_layers_are_the_longest_path_from_a_root() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["a", "d"], "x": []}
    assert layers(deps) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3, "x": 0}
    with pytest.raises(ValueError, match="cycle through p, q"):
        layers({"p": ["q"], "q": ["p"], "r": []})


def test_layout_places_every_edge_rightwards_without_overlap() -> None:
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "z": []}
    placed = layout(deps)
    assert list(placed.nodes) == list(deps)
    assert {(e.source, e.target) for e in placed.edges} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
    }
    for edge in placed.edges:
        assert placed.nodes[edge.source].x + NODE_W < placed.nodes[edge.target].x
    corners = {(p.x, p.y) for p in placed.nodes.values()}
    assert len(corners) == len(deps)
    assert all(p.x + NODE_W <= placed.width for p in placed.nodes.values())


def test_layout_orders_a_layer_by_its_dependencies() -> None:
    # Spec order would cross the edges (b1 under a2's child); the sweep uncrosses them.
    deps = {"a1": [], "a2": [], "b2": ["a2"], "b1": ["a1"]}
    placed = layout(deps).nodes
    assert placed["b1"].row == 0 and placed["b2"].row == 1


def test_layout_of_a_long_chain_needs_no_recursion() -> None:
    deps = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(10_000)}
    assert layout(deps).nodes["n9999"].layer == 9999


def test_transcript_pairs_each_tool_call_with_its_result() -> None:
    shown = entries(
        [
            {
                "attempt": 1,
                "kind": "AssistantMessage",
                "message": {
                    "content": [
                        {"text": "hi"},
                        {"id": "1", "name": "Bash", "input": {"command": "ls"}},
                    ]
                },
            },
            {
                "attempt": 1,
                "kind": "SystemMessage",
                "message": {"subtype": "api_retry", "data": {}},
            },
            {
                "attempt": 1,
                "kind": "UserMessage",
                "message": {
                    "content": [
                        {
                            "tool_use_id": "1",
                            "content": [{"type": "text", "text": "a.txt"}],
                            "is_error": True,
                        }
                    ]
                },
            },
            {
                "attempt": 1,
                "kind": "ResultMessage",
                "message": {"subtype": "success", "result": "ok", "num_turns": 2},
            },
        ]
    )
    assert [(e.kind, e.title) for e in shown] == [
        ("text", "assistant"),
        ("tool", "Bash"),
        ("system", "api_retry"),
        ("result", "result (success)"),
    ]
    assert shown[1].result == "a.txt" and shown[1].is_error
    assert shown[1].body == "command: ls"
    assert "num_turns: 2" in shown[3].body


def test_a_write_shows_its_content_as_written() -> None:
    # Not as JSON: real lines, one backslash as one, a tab as a tab.
    content = 'line one\n\tindented "quoted"\nends in a backslash \\\n'
    (shown,) = entries(
        [
            {
                "attempt": 1,
                "kind": "AssistantMessage",
                "message": {
                    "content": [
                        {
                            "id": "1",
                            "name": "Write",
                            "input": {"file_path": "a.py", "content": content},
                        }
                    ]
                },
            }
        ]
    )
    assert shown.body == (
        'file_path: a.py\ncontent:\nline one\n\tindented "quoted"\nends in a backslash \\'
    )


def test_a_failed_result_is_not_labelled_success() -> None:
    # What the CLI sends when an API error ended the run.
    (shown,) = entries(
        [
            {
                "attempt": 1,
                "kind": "ResultMessage",
                "message": {"subtype": "success", "is_error": True, "result": "API Error: 400"},
            }
        ]
    )
    assert shown.title == "result (error)" and shown.is_error


def test_usage_chart_stacks_buckets_by_role() -> None:
    t0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        UsageRow(t0, "planner", "m1", 10, 5, 0.5),
        UsageRow(t0 + timedelta(minutes=1), "tester", "m2", 10, 0, 0.25),
        UsageRow(t0 + timedelta(minutes=20), "planner", "m1", 100, 0, 1.0),
    ]
    assert bucket_size(t0, t0 + timedelta(minutes=20)) == 60
    cost = usage_chart(rows, "role", "cost")
    assert [(name, total) for name, _, total in cost.legend] == [
        ("planner", "$1.50"),
        ("tester", "$0.2500"),
    ]
    assert len(cost.bars) == 3
    tallest = max(cost.bars, key=lambda b: b.height)
    assert tallest.title.endswith("planner: $1.00") and tallest.y == pytest.approx(0)
    tokens = usage_chart(rows, "model", "tokens")
    assert [name for name, _, _ in tokens.legend] == ["m1", "m2"]
    assert usage_chart([], "role", "cost").bars == []


def test_every_asset_ships_in_the_package_and_nothing_loads_from_elsewhere(
    grove: Grove, ran: dict[str, str]
) -> None:
    # Pages reference only their own /static files: no CDN, no font service, no external URL
    # (the SVG namespace is a name, not something fetched).
    web = client(grove)
    pages = ["/", "/agents", f"/agents/{ran['parent']}", "/runs", f"/runs/{ran['run']}", "/budgets"]
    pages.append("/usage")
    referenced: set[str] = set()
    for page in pages:
        html = web.get(page).text
        external = re.findall(r"""(?:src|href)=["'](https?:)?//[^"']+""", html)
        assert external == [], (page, external)
        referenced |= set(re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", html))
    assert referenced, "the pages use the packaged stylesheet and script"
    for asset in sorted(referenced):
        assert web.get(asset).status_code == 200, asset
    static = Path(agentgrove.dashboard.__file__).parent / "static"
    for path in static.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not re.search(r"(url\(|import\s|fetch\()\s*['\"]?https?://", text), path


def test_a_role_keeps_its_colour_in_both_charts() -> None:
    # planner spends more, tester uses more tokens: the two charts rank them differently.
    t0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        UsageRow(t0, "planner", "m1", 10, 0, 2.0),
        UsageRow(t0, "tester", "m1", 5_000, 0, 0.1),
    ]
    cost, tokens = usage_chart(rows, "role", "cost"), usage_chart(rows, "role", "tokens")
    assert [n for n, _, _ in cost.legend] == ["planner", "tester"]
    assert [n for n, _, _ in tokens.legend] == ["tester", "planner"]
    assert {n: c for n, c, _ in cost.legend} == {n: c for n, c, _ in tokens.legend}


def test_an_overspent_scope_looks_overspent() -> None:
    # Spent twice the limit with as much reserved: the bar is full and marked over, the limit
    # at a quarter of it (two capped 100 % widths used to share the bar half and half).
    over = meter(limit=1.0, spent=2.0, reserved=2.0)
    assert over["spent_pct"] + over["reserved_pct"] == pytest.approx(100)
    assert over["limit_pct"] == pytest.approx(25) and over["over"]
    assert over["used_pct"] == pytest.approx(400)
    within = meter(limit=4.0, spent=1.0, reserved=1.0)
    assert (within["spent_pct"], within["reserved_pct"], within["over"]) == (25, 25, False)


def test_budgets_page_reads_grove_toml_anew(grove: Grove, ran: dict[str, str]) -> None:
    web = client(grove)
    assert "daily" not in web.get("/budgets").text
    (grove.config.root / "grove.toml").write_text("[budget]\ndaily_usd = 0.02\n")
    page = web.get("/budgets").text
    assert '<td class="mono">daily</td>' in page and "$0.0200" in page
    assert "(over)" in page  # today's $0.06 against $0.02
    (grove.config.root / "grove.toml").write_text("[budget]\ndaily_usd = 'lots'\n")
    broken = web.get("/budgets")
    assert broken.status_code == 200 and "showing the limits read at start" in broken.text


def test_agents_list_agrees_with_ls(grove: Grove, ran: dict[str, str]) -> None:
    # Tokens in and out, and the wall time `ls` shows, not the CLI's own duration.
    agent = grove.get(ran["parent"])
    row = client(grove).get("/agents").text.split(f'data-agent-row="{agent.id}"')[1]
    row = row.split("</tr>")[0]
    assert "100 / 20" in row
    assert '<td class="nowrap">file-writer</td>' in row
    shown = wall(agent)  # finished: the same figure on every reading
    assert shown not in ("-", duration(agent.duration_ms)), (shown, agent.duration_ms)
    assert f'<td class="num">{shown}</td>' in row
    listed = run_cli("ls", cwd=grove.config.root)
    assert "100/20" in listed.stdout
