"""Live progress of agents running in this process, for ``grove run`` and ``workflow run --wait``.

:func:`progress_view` is pure: a :class:`Snapshot` of records in, a rich renderable out (a tree
of agents, each line with id prefix, role or node key, status, elapsed time, tokens and cost,
and a footer with the totals). :class:`LiveProgress` runs some work and keeps the user informed
while it runs: on a terminal a ``rich.live.Live`` view redrawn from the store a few times a
second and at once on observer events; otherwise plain lines, one per status transition and per
tool call, which carry no ANSI codes because rich writes none to a file that is not a terminal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
from rich.console import Console, Group, RenderableType
from rich.text import Text

from agentgrove.models import AgentRecord, AgentStatus, elapsed_s
from agentgrove.store import Store
from agentgrove.store._core import utcnow
from agentgrove.text import one_line, tool_input, visible

if TYPE_CHECKING:
    from rich.tree import Tree

STATUS_STYLE: dict[str, str] = {
    "waiting": "dim",
    "pending": "yellow",
    "executing": "cyan",
    "awaiting_input": "bright_magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "dependency_failed": "red",
    "awaiting_approval": "bold yellow",
}


@dataclass(frozen=True)
class WaitingNode:
    """A workflow node that has no agent yet (its dependencies are not done)."""

    key: str
    role: str
    state: str = "waiting"


@dataclass(frozen=True)
class Snapshot:
    """What the view shows: ``agents`` holds every record (parents before their children, roots
    in display order); a record whose parent is not among them is a root."""

    title: str
    agents: tuple[AgentRecord, ...]
    waiting: tuple[WaitingNode, ...] = ()


def format_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def label(agent: AgentRecord) -> str:
    """Node key and role, control characters visible (they come from workflow files)."""
    text = f"{agent.node_key} ({agent.role})" if agent.node_key else agent.role
    return visible(text, newlines=False)


def agent_line(agent: AgentRecord, now: datetime, recent_tool: str | None = None) -> Text:
    """One agent as a line of the tree; user text is never read as rich markup."""
    seconds = elapsed_s(agent, now)
    line = Text.assemble(
        (agent.id[:8], "bold"),
        " ",
        label(agent),
        " ",
        (agent.status.value, STATUS_STYLE[agent.status.value]),
        "  ",
        ("-" if seconds is None else format_elapsed(seconds), "dim"),
        f"  {agent.tokens_in:,} in / {agent.tokens_out:,} out  ${agent.cost_usd:.4f}",
    )
    if agent.error_kind is not None:
        line.append(f"  {agent.error_kind.value}", "red")
    elif agent.wait_reason and agent.status in (AgentStatus.PENDING, AgentStatus.AWAITING_APPROVAL):
        line.append(f"  ({visible(agent.wait_reason, newlines=False)})", "dim")
    if recent_tool and agent.status is AgentStatus.EXECUTING:
        line.append(f"  ▸ {recent_tool}", "cyan")
    return line


def totals_line(agents: Sequence[AgentRecord]) -> Text:
    counts = Counter(a.status.value for a in agents)
    states = ", ".join(f"{n} {s}" for s, n in counts.items())
    return Text(
        f"{len(agents)} agent{'' if len(agents) == 1 else 's'} ({states or 'none'})  "
        f"{sum(a.tokens_in for a in agents):,} in / {sum(a.tokens_out for a in agents):,} out "
        f"tokens  ${sum(a.cost_usd for a in agents):.4f}",
        style="bold",
    )


def progress_view(
    snapshot: Snapshot,
    *,
    now: datetime,
    recent_tools: Mapping[str, str] | None = None,
    max_lines: int = 40,
) -> RenderableType:
    """The tree of ``snapshot`` and a footer with totals over all its agents.

    Past ``max_lines``, whole root subtrees that completed are left out (oldest first), then
    roots that have not started and waiting nodes (latest first), each gap counted in one line,
    so a run of thousands of nodes stays readable; the totals always cover every agent.
    """
    tools = recent_tools or {}
    ids = {a.id for a in snapshot.agents}
    children: dict[str | None, list[AgentRecord]] = {}
    for agent in snapshot.agents:
        parent = agent.parent_id if agent.parent_id in ids else None
        children.setdefault(parent, []).append(agent)

    def size(agent: AgentRecord) -> int:
        return 1 + sum(size(c) for c in children.get(agent.id, []))

    def all_completed(agent: AgentRecord) -> bool:
        return agent.status is AgentStatus.COMPLETED and all(
            all_completed(c) for c in children.get(agent.id, [])
        )

    roots = children.get(None, [])
    lines = len(snapshot.agents) + len(snapshot.waiting)
    left_out: set[str] = set()
    hidden = 0
    for root in [r for r in roots if all_completed(r)]:
        if lines + (1 if hidden else 0) <= max_lines:
            break
        left_out.add(root.id)
        hidden += size(root)
        lines -= size(root)
    lines += 1 if hidden else 0
    # Then agents that have not started (and so have no children), the latest first.
    not_started = [r for r in roots if r.status is AgentStatus.PENDING and r.id not in children]
    cut_pending = 0
    while lines + (1 if cut_pending else 0) > max_lines and not_started:
        left_out.add(not_started.pop().id)
        cut_pending += 1
        lines -= 1
    lines += 1 if cut_pending else 0
    waiting = list(snapshot.waiting)
    cut_waiting = 0
    if lines > max_lines and waiting:
        keep = max(0, len(waiting) - (lines - max_lines) - 1)
        cut_waiting = len(waiting) - keep
        waiting = waiting[:keep]

    from rich.tree import Tree  # here: `grove ls` imports this module for format_elapsed

    tree = Tree(Text(visible(snapshot.title, newlines=False), style="bold"), guide_style="dim")

    def add(branch: Tree, agent: AgentRecord) -> None:
        node = branch.add(agent_line(agent, now, tools.get(agent.id)))
        for child in children.get(agent.id, []):
            add(node, child)

    if hidden:
        tree.add(Text(f"… {hidden} completed agents not shown", style="dim"))
    for root in roots:
        if root.id not in left_out:
            add(tree, root)
    if cut_pending:
        tree.add(Text(f"… {cut_pending} more pending", style="dim"))
    for node in waiting:
        name = visible(f"{node.key} ({node.role}) ", newlines=False)
        tree.add(Text.assemble(name, (node.state, "dim")))
    if cut_waiting:
        tree.add(Text(f"… {cut_waiting} more nodes waiting", style="dim"))
    return Group(tree, totals_line(snapshot.agents))


Source = Callable[[], Snapshot]
"""Reads a fresh :class:`Snapshot` from the store."""


def agent_source(store: Store, agent_id: str) -> Source:
    """An agent and all its descendants."""

    def read() -> Snapshot:
        tree = store.tree(agent_id)
        root = tree[0]
        return Snapshot(title=f"{root.role} {root.id}: {root.status.value}", agents=tuple(tree))

    return read


def run_source(store: Store, run_id: str) -> Source:
    """A workflow run's nodes with their agents' descendants, and the nodes still waiting.

    A node whose whole subtree has finished is read once and remembered, so that a refresh
    costs queries for the active nodes only, however long the run.
    """
    settled: dict[str, tuple[AgentRecord, ...]] = {}

    def read() -> Snapshot:
        run = store.get_run(run_id)
        agents: list[AgentRecord] = []
        waiting: list[WaitingNode] = []
        for node in run.nodes:
            agent = node.agent
            if agent is None:
                waiting.append(WaitingNode(node.key, node.role, node.state))
            elif agent.id in settled:
                agents.extend(settled[agent.id])
            elif agent.status is AgentStatus.PENDING and agent.attempt == 0:
                agents.append(agent)  # never ran, so it has spawned nothing
            else:
                subtree = tuple(store.tree(agent.id))
                if all(a.status.finished for a in subtree):
                    settled[agent.id] = subtree
                agents.extend(subtree)
        title = f"{run.name} {run.id}: {run.status.value}"
        return Snapshot(title=title, agents=tuple(agents), waiting=tuple(waiting))

    return read


Mode = Literal["live", "plain", "quiet"]


class LiveProgress:
    """Shows ``source`` while work runs in this process.

    ``mode``: ``live`` redraws :func:`progress_view` in place; ``plain`` prints a line per status
    transition and per tool call; ``quiet`` prints nothing. Pass :meth:`observe` to the grove as
    its event observer; it must be called on the thread that runs :meth:`watch` (the worker's
    event loop), which is where the service calls its observer.
    """

    def __init__(
        self, source: Source, *, console: Console, mode: Mode, refresh_s: float = 0.25
    ) -> None:
        self._source = source
        self._console = console
        self._mode = mode
        self._refresh_s = refresh_s
        from agentgrove.service import Wakeup  # the service is not loaded by read commands

        self._wakeup = Wakeup()
        self._tools: dict[str, str] = {}
        self._seen: dict[str, str] = {}

    def observe(self, agent_id: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "agent.tool_use":
            self._tools[agent_id] = one_line(f"{data.get('tool')} {data.get('input')}", 80)
        if self._mode != "quiet":
            line = _event_line(agent_id, kind, data, tool_calls=self._mode == "plain")
            if (
                line is not None
                and self._mode == "plain"
                and self._seen.get(agent_id) != "executing"
            ):
                # Its claim may not have been printed yet: keep transitions and calls in order.
                self._print_transitions(self._source())
            if line is not None:
                # Under Live, printing to its console puts the line above the view.
                self._console.print(line, soft_wrap=True)
            if self._mode == "plain" and kind in _ENDINGS:
                # The dependents this completion made pending may be claimed before the next
                # refresh: print them now, so the plain log rarely skips a state.
                self._print_transitions(self._source())
        self._wakeup.notify()

    def run(self, work: Callable[[], Awaitable[object]]) -> Snapshot:
        """:meth:`watch` in a new event loop."""
        return anyio.run(self.watch, work)

    async def watch(self, work: Callable[[], Awaitable[object]]) -> Snapshot:
        """Run ``work`` and show progress until it returns; returns the final snapshot."""
        done = anyio.Event()

        async def execute() -> None:
            try:
                await work()
            finally:
                done.set()
                self._wakeup.notify()

        with self._display() as show:
            async with anyio.create_task_group() as tg:
                tg.start_soon(execute)
                while not done.is_set():
                    started = time.perf_counter()
                    show(self._source())
                    # A huge run costs more to read and draw: however many events arrive, the
                    # view takes at most a fifth of the time, so it never slows the agents down.
                    gap = 4 * (time.perf_counter() - started)
                    await anyio.sleep(gap)
                    if not done.is_set():
                        await self._wakeup.wait(max(0.0, self._refresh_s - gap))
            final = self._source()
            show(final)
        return final

    @contextmanager
    def _display(self) -> Iterator[Callable[[Snapshot], None]]:
        if self._mode == "live":
            from rich.live import Live

            with Live(console=self._console, auto_refresh=False, transient=False) as live:
                yield lambda snap: live.update(self._view(snap), refresh=True)
        elif self._mode == "plain":
            yield self._print_transitions
        else:
            yield lambda _snap: None

    def _view(self, snapshot: Snapshot) -> RenderableType:
        # Lines past the terminal's height could not be redrawn in place: leave room for the
        # title, the footer and a line printed above the view.
        fit = max(8, self._console.height - 4)
        return progress_view(snapshot, now=utcnow(), recent_tools=self._tools, max_lines=fit)

    def _print_transitions(self, snapshot: Snapshot) -> None:
        now = utcnow()
        for node in snapshot.waiting:
            if self._seen.get(node.key) != node.state:
                self._seen[node.key] = node.state
                self._console.print(
                    visible(f"  {node.key}: {node.state}", newlines=False),
                    highlight=False,
                    markup=False,
                )
        for agent in snapshot.agents:
            if self._seen.get(agent.id) == agent.status.value:
                continue
            self._seen[agent.id] = agent.status.value
            line = f"  {agent.id[:8]} {label(agent)}: {agent.status.value}"
            if agent.status.finished:
                seconds = elapsed_s(agent, now)
                line += (
                    f" ({agent.tokens_in:,} in / {agent.tokens_out:,} out, "
                    f"${agent.cost_usd:.4f}, {format_elapsed(seconds or 0.0)})"
                )
            if agent.error:
                line += f" {agent.error_kind}: {one_line(agent.error, 200)}"
            self._console.print(line, highlight=False, markup=False, soft_wrap=True)


_ENDINGS = frozenset({"agent.completed", "agent.failed", "agent.cancelled"})


def _event_line(agent_id: str, kind: str, data: dict[str, Any], *, tool_calls: bool) -> Text | None:
    """The line an event is worth printing as it happens, if any."""
    who = agent_id[:8]
    if kind == "agent.tool_use" and tool_calls:
        call = f"{visible(data.get('tool'), newlines=False)} {tool_input(data.get('input'))}"
        return Text.assemble("  ", (who, "cyan"), " ", call)
    if kind == "agent.tool_result" and data.get("is_error"):
        content = visible(data.get("content"))
        return Text.assemble("  ", (f"{who} tool error", "red"), " ", content)
    if kind in ("agent.warning", "agent.retry", "agent.released"):
        return Text.assemble("  ", (f"{who} {kind}", "yellow"), " ", visible(data))
    return None


__all__ = [
    "LiveProgress",
    "Mode",
    "Snapshot",
    "WaitingNode",
    "agent_source",
    "progress_view",
    "run_source",
    "totals_line",
]
