"""The Python API: one :class:`Grove` per repository (or per ``GROVE_HOME``).

    from agentgrove import Grove
    grove = Grove.open(".")
    agent = grove.run("file-writer", "Create hello.txt containing 'hi'")
    print(agent.status, agent.cost_usd, agent.workspace.branch)

``Grove.open`` never creates anything: an uninitialised place raises
:class:`~agentgrove.errors.NotInitialised` (``Grove.init`` creates the home and the schema).
"""

from __future__ import annotations

import getpass
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import anyio

from agentgrove.config import HOME_DIR, GroveConfig, load_config, with_worker
from agentgrove.errors import BadInput, ConfigError, NotInitialised
from agentgrove.models import AgentRecord, ErrorKind, QuestionRecord, RunRecord, SpawnRequest
from agentgrove.stats import StatsReport, parse_by, parse_since
from agentgrove.store import Store, _migrate

if TYPE_CHECKING:
    # The service, the worker and the workflow engine are imported where they are first used:
    # a read-only command (``grove ls``) only needs the store, and importing them all cost it
    # ~100 ms (issue 13: read commands within 1.3x of their floor).
    from agentgrove.approvals import Approval
    from agentgrove.inbox import InboxItem
    from agentgrove.runtime import MessageSink, RunResult, RunSpec, Runtime
    from agentgrove.runtime._cli_start import StartedCli
    from agentgrove.service import AgentService, EventObserver
    from agentgrove.workflows.engine import WorkflowEngine
    from agentgrove.workflows.spec import WorkflowSpec


class SpawnOptions(TypedDict, total=False):
    """The keyword options of :meth:`Grove.spawn`, shared by :meth:`Grove.run`."""

    parent_id: str | None
    model: str | None
    base: str | None
    budget_usd: float | None
    check: str | None


class Grove:
    def __init__(
        self,
        config: GroveConfig,
        store: Store,
        *,
        runtime: Runtime | None = None,
        observer: EventObserver | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._runtime = runtime
        self._observer = observer
        self._service: AgentService | None = None

    @property
    def service(self) -> AgentService:
        """The agent service (spawning, running, cancelling), built on first use."""
        if self._service is None:
            from agentgrove.service import AgentService

            self._service = AgentService(
                self.store,
                self.config,
                self._runtime or _DeferredRuntime(self.config),
                observer=self._observer,
            )
        return self._service

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path | None = None, **kwargs: object) -> Grove:
        """Create the grove home and bring the schema up to date (idempotent)."""
        config = load_config(Path(path) if path else None)
        store = None
        if not config.uses_default_db:  # a database elsewhere: usable before a home is made
            store = _usable_store(config)
        config.home.mkdir(parents=True, exist_ok=True)
        if config.is_git and config.home.is_relative_to(config.root):
            from agentgrove.workspaces import exclude_from_git

            exclude_from_git(config.root, f"/{config.home.relative_to(config.root)}/")
        store = store or _usable_store(config)
        _migrate.upgrade(store.engine)
        return cls(config, store, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        runtime: Runtime | None = None,
        observer: EventObserver | None = None,
    ) -> Grove:
        """Open an initialised grove; raises :class:`NotInitialised` without writing anything."""
        config = load_config(Path(path) if path else None)
        if config.uses_default_db and not (config.home / "grove.db").exists():
            raise NotInitialised(str(config.home))
        store = _store_for(config)
        try:
            current = _migrate.opened_current(store.engine)  # one query (issue 13)
        except BaseException:
            store.close()
            raise
        if not current:
            store.close()
            raise NotInitialised(f"{config.home} (database schema missing or outdated)")
        return cls(config, store, runtime=runtime, observer=observer)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Grove:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def configure_worker(self, **changes: Any) -> None:
        """Change ``[worker]`` settings (``lease_s``, ``heartbeat_s``, ``poll_s``, ``grace_s``,
        ``retry_base_s``, ``concurrency``, ...) of this open grove, for embedding and tests;
        grove.toml is the usual place. Raises ``ConfigError`` for a bad value. Workers
        created afterwards use them."""
        self.config = with_worker(self.config, **changes)
        if self._service is not None:
            self._service.config = self.config

    # -- agents ----------------------------------------------------------------------------

    def spawn(
        self,
        role: str,
        task: str,
        *,
        parent_id: str | None = None,
        model: str | None = None,
        base: str | None = None,
        budget_usd: float | None = None,
        check: str | None = None,
    ) -> AgentRecord:
        """Create a pending agent (validated; nothing is written on bad input).

        With ``parent_id`` the agent starts once the parent has completed, from the parent's
        branch, with the parent's output in its prompt. ``check``: a shell command run in the
        agent's worktree after it ends (exit 0 passes; see :mod:`agentgrove.checks`), instead
        of its role's check.
        """
        return self.service.spawn(
            SpawnRequest(
                role,
                task,
                parent_id=parent_id,
                model=model,
                base=base,
                budget_usd=budget_usd,
                after_parent=parent_id is not None,
                check=check,
            )
        )

    def tree_totals(self, agent_id: str) -> TreeTotals:
        """Tokens and cost of an agent and all its descendants."""
        tree = self.store.tree(self.store.resolve_id(agent_id))
        return TreeTotals(
            agents=len(tree),
            tokens_in=sum(a.tokens_in for a in tree),
            tokens_out=sum(a.tokens_out for a in tree),
            cost_usd=sum(a.cost_usd for a in tree),
        )

    async def run_async(self, role: str, task: str, **options: Unpack[SpawnOptions]) -> AgentRecord:
        """Spawn an agent (as :meth:`spawn`, same options) and execute it in this process;
        returns its final record."""
        agent = self.spawn(role, task, **options)
        await self.execute_async([agent.id])
        return self.store.get_agent(agent.id)

    def run(self, role: str, task: str, **options: Unpack[SpawnOptions]) -> AgentRecord:
        """:meth:`run_async` in a new event loop."""
        return anyio.run(lambda: self.run_async(role, task, **options))

    async def execute_async(self, agent_ids: Iterable[str]) -> None:
        """Claim and run exactly these agents here, until each has finished or awaits input."""
        from agentgrove.worker import Worker

        worker = Worker(
            self.service, self.config.worker, only=set(agent_ids), concurrency=len(set(agent_ids))
        )
        await worker.run()

    # -- workflows -------------------------------------------------------------------------

    @property
    def workflows(self) -> WorkflowEngine:
        from agentgrove.workflows.engine import WorkflowEngine

        return WorkflowEngine(self.service)

    def start_workflow(
        self,
        source: str | Path | Mapping[str, object] | WorkflowSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        base: str | None = None,
        budget_usd: float | None = None,
    ) -> RunRecord:
        """Validate and start a workflow run for workers to execute (nothing written on bad
        input). ``budget_usd``: hard limit on the run's spend."""
        return self.workflows.start(source, inputs, base=base, budget_usd=budget_usd)

    def approve(
        self, run_id: str, node: str, *, comment: str | None = None, by: str | None = None
    ) -> Approval:
        """Approve node ``node`` of run ``run_id``, held at its approval gate (``before``: it
        starts; ``after``: its result counts and its dependents may start). ``by``: who
        decides (default: the OS user). :class:`BadInput`, nothing changed, when the node does
        not wait or the run or node is unknown."""
        return self.workflows.decide(
            run_id, node, approve=True, by=by or getpass.getuser(), comment=comment
        )

    def reject(self, run_id: str, node: str, comment: str, *, by: str | None = None) -> Approval:
        """Reject node ``node`` of run ``run_id`` at its gate, saying why (``comment``,
        required). An ``after`` node with attempts left runs again with the comment added to
        its task; otherwise the node fails ``rejected`` and so does the run."""
        return self.workflows.decide(
            run_id, node, approve=False, by=by or getpass.getuser(), comment=comment
        )

    async def execute_run_async(self, run_id: str) -> RunRecord:
        """Run a workflow run's nodes in this process until the run is over, or until what is
        left of it awaits a person's answer."""
        from agentgrove.worker import Worker

        await Worker(self.service, self.config.worker, run_id=run_id).run()
        return self.store.get_run(run_id)

    def run_workflow(
        self,
        source: str | Path | Mapping[str, object] | WorkflowSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        base: str | None = None,
        budget_usd: float | None = None,
    ) -> RunRecord:
        """Start a workflow and execute it here; returns the finished run. ``budget_usd``:
        hard limit on the run's spend, as for :meth:`start_workflow`."""
        run = self.start_workflow(source, inputs, base=base, budget_usd=budget_usd)
        return anyio.run(self.execute_run_async, run.id)

    def stats(self, *, by: str | None = None, since: str | datetime | None = None) -> StatsReport:
        """Cost per passing work (``grove stats``): agents, passed checks, pass rate, cost and
        tokens per passing agent and median duration, per ``by`` (``"role"`` or ``"model"``)
        and in total, over the agents that finished at or after ``since`` (an ISO date or
        datetime, UTC unless it says; a naive ``datetime`` is UTC). What counts as passing:
        :mod:`agentgrove.stats`. Bad values raise :class:`BadInput`."""
        return self.store.agent_stats(parse_by(by), parse_since(since))

    def get(self, agent_id: str) -> AgentRecord:
        return self.store.get_agent(self.store.resolve_id(agent_id))

    def answer(self, agent_id: str, text: str, *, by: str | None = None) -> QuestionRecord:
        """Answer the question an agent awaiting input asked (``ask_human``): it goes back to
        pending, and its next attempt resumes the same Claude session with ``text`` as the next
        user message. ``by``: who answers (default: the OS user). :class:`BadInput` for an
        empty answer or an agent that asked nothing; :class:`UnknownAgent` for an unknown id."""
        return self.service.answer(agent_id, text, by=by or _os_user())

    def inbox(self) -> list[InboxItem]:
        """What waits for a person, oldest first: nodes at their approval gates and agents'
        open questions (what ``grove inbox`` and the dashboard's inbox list)."""
        from agentgrove.inbox import read_inbox

        return read_inbox(self.store)

    def questions(self, agent_id: str | None = None) -> list[QuestionRecord]:
        """The questions one agent asked, oldest first; without ``agent_id``, every question
        that still waits for an answer."""
        if agent_id is None:
            return self.store.open_questions()
        return self.store.questions_of(self.store.resolve_id(agent_id))

    def wait(
        self, agent_ids: Iterable[str], *, timeout_s: float | None = None, poll_s: float = 0.2
    ) -> list[AgentRecord]:
        """Block until every agent has finished (run by any worker); TimeoutError past the limit."""
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise BadInput(
                f"--timeout must be a finite number of seconds, 0 or more, got {timeout_s}"
            )
        ids = [self.store.resolve_id(i) for i in agent_ids]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            records = [self.store.get_agent(i) for i in ids]
            if all(r.status.finished for r in records):
                return records
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"agents still running after {timeout_s:g} s")
            time.sleep(poll_s)


def _os_user() -> str:
    """Who answers from this process: the OS user (``getpass``), else the uid."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class TreeTotals:
    agents: int
    tokens_in: int
    tokens_out: int
    cost_usd: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "agents": self.agents,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
        }


class _DeferredRuntime:
    """Builds the default runtime on the first run, so that read-only commands never pay for
    (or warn about) it."""

    def __init__(self, config: GroveConfig) -> None:
        self._config = config
        self._runtime: Runtime | None = None

    async def run(self, spec: RunSpec, sink: MessageSink) -> RunResult:
        from agentgrove.runtime import RunResult

        if self._runtime is None:
            begun: StartedCli | None = None
            if self._config.runtime.kind == "claude":
                # The CLI starts before the SDK is imported (runtime/_cli_start.py): its own
                # start up (~0.5 s) overlaps the import's instead of following it.
                from agentgrove.runtime._cli_start import CliStarter
                from agentgrove.runtime._preload import preload_claude_runtime

                start = await CliStarter(**_claude_settings(self._config)).start(spec)
                if isinstance(start, RunResult):
                    return start
                begun = start
                # Now, not earlier: the import holds the GIL, and before the CLI is started it
                # would slow what leads to that start (the claim, the worktree); from here on
                # it overlaps the CLI's own start up, on another CPU.
                preload_claude_runtime()
            try:
                # Off the event loop: importing the Claude runtime (or waiting for its preload
                # to finish) takes ~0.5 s, in which other agents' preparation and every
                # heartbeat would stand still.
                built = await anyio.to_thread.run_sync(default_runtime, self._config)
            except BaseException as exc:
                if begun is not None:
                    await begun.discard()
                if isinstance(exc, ConfigError):
                    return RunResult(success=False, error=str(exc), error_kind=ErrorKind.PERMANENT)
                raise
            self._runtime = self._runtime or built  # one runtime even if two agents raced here
            if begun is not None:
                from agentgrove.runtime.claude import ClaudeRuntime

                if isinstance(self._runtime, ClaudeRuntime):  # what kind "claude" builds
                    return await self._runtime.run_started(spec, sink, begun)
                await begun.discard()
        return await self._runtime.run(spec, sink)

    def has_session(self, session_id: str) -> bool:
        """The runtime's answer (see :class:`~agentgrove.runtime.SessionLookup`); a runtime
        that cannot be built has none."""
        from agentgrove.runtime import SessionLookup

        if self._runtime is None:
            try:
                self._runtime = default_runtime(self._config)
            except ConfigError:
                return False
        return not isinstance(self._runtime, SessionLookup) or self._runtime.has_session(session_id)


def _store_for(config: GroveConfig) -> Store:
    # Without a [budget] table the store's own defaults (no daily limit, wait) are the
    # table's: reading them from the settings model would load pydantic for every command.
    budget = config.budget if config.has_table("budget") else None
    return Store(
        config.db_url,
        daily_limit_usd=budget.daily_usd if budget else None,
        fail_when_exhausted=budget is not None and budget.on_exhausted == "fail",
        notify=config.notify.kinds if config.notify is not None else (),
    )


def _usable_store(config: GroveConfig) -> Store:
    """The store, once it answered (:func:`_migrate.check_usable`: ConfigError otherwise)."""
    store = _store_for(config)
    try:
        _migrate.check_usable(store.engine)
    except BaseException:
        store.close()
        raise
    return store


def default_runtime(config: GroveConfig) -> Runtime:
    """The runtime ``[runtime]`` asks for: ClaudeRuntime with the sandbox decided by
    ``sandbox`` (see DESIGN.md), or the scripted stand-in."""
    from agentgrove.runtime import ScriptedRuntime
    from agentgrove.runtime._scripted import delayed_echo

    if config.runtime.kind == "scripted":
        return ScriptedRuntime(
            delayed_echo(config.runtime.scripted_delay_s, config.runtime.scripted_cost_usd)
        )
    from agentgrove.runtime.claude import ClaudeRuntime

    # An agent that needs the sandbox where it cannot work fails `permanent` at its start.
    return ClaudeRuntime(**_claude_settings(config))


def _claude_settings(config: GroveConfig) -> dict[str, Any]:
    """What ``[runtime]`` gives the Claude runtime's CLI starts: the first CLI, which
    ``_DeferredRuntime`` starts before the runtime exists, must start as the runtime's do."""
    return {"sandbox": config.runtime.sandbox, "env_allow": tuple(config.runtime.env_allow)}


__all__ = ["HOME_DIR", "Grove", "TreeTotals", "default_runtime"]
