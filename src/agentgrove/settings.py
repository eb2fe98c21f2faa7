"""What ``grove.toml`` may say, as pydantic models: each table's settings, their defaults and
their validation (see :mod:`agentgrove.config`, which reads the file and validates each table
it has here).

Only what validates or builds settings imports this module: pydantic's model machinery and
these classes cost a read-only command ~45 ms (issue 13), and a command that runs without a
grove.toml, or whose grove.toml lacks a table, reads that table's defaults through
:class:`~agentgrove.config.GroveConfig` only when it needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentgrove.budgets import MIN_GRANT_USD
from agentgrove.errors import ConfigError
from agentgrove.notify._kinds import ALL_KINDS, NotificationKind
from agentgrove.roles import BUILTIN_ROLES, Role

DAY_S = 86_400.0
"""The longest any duration setting may be (a lease, a grace, a back-off): one day."""


class WorkerSettings(BaseModel):
    """Lease and shutdown timing. Tests shorten these; defaults suit real runs. Every duration
    is finite and at most :data:`DAY_S` (``inf`` or ``1e300`` would overflow a datetime)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    concurrency: int = Field(default=2, ge=1, le=256)
    heartbeat_s: float = Field(default=10.0, gt=0, le=DAY_S)
    lease_s: float = Field(default=60.0, gt=0, le=DAY_S)
    poll_s: float = Field(default=0.5, gt=0, le=DAY_S)
    grace_s: float = Field(default=30.0, ge=0, le=DAY_S)
    retry_base_s: float = Field(default=15.0, ge=0, le=DAY_S)
    listen: bool = True
    """On PostgreSQL, wake at once when another process commits work (LISTEN/NOTIFY). Turn it
    off behind a pooler that cannot hold a LISTEN (PgBouncer in transaction mode): workers
    then find work by polling every ``poll_s``."""
    sweep_s: float | None = Field(default=None, gt=0, le=DAY_S)
    """How often a worker returns expired leases to pending; unset, a quarter of ``lease_s``
    (15 s at the defaults), so a dead worker's agent is reclaimed within 1.25 leases."""

    @property
    def sweep_interval_s(self) -> float:
        return self.sweep_s if self.sweep_s is not None else max(self.lease_s / 4, self.poll_s)


class RuntimeSettings(BaseModel):
    """How agents are run. ``sandbox``: the CLI's bubblewrap sandbox for Bash (``auto``: an
    agent whose role can run Bash starts only inside it, else fails ``permanent`` naming the
    install command; ``required``: every agent does; ``off``: agents run unconfined).
    ``kind``: ``claude`` (the real SDK and CLI) or ``scripted`` — an in-process stand-in that
    completes each agent after ``scripted_delay_s`` without any model, for exercising
    orchestration (fault tests, benchmarks, dry runs of workflows)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    sandbox: Literal["auto", "required", "off"] = "auto"
    kind: Literal["claude", "scripted"] = "claude"
    scripted_delay_s: float = Field(default=0.0, ge=0, le=DAY_S)
    scripted_cost_usd: Annotated[float, Field(ge=0)] | Literal["grant"] | None = None
    """What each scripted attempt reports spending: a figure, or ``"grant"`` (all the budget it
    was given, as a greedy model would; for exercising budgets). Unset: $0.0001."""
    env_allow: list[str] = Field(default_factory=list)
    """More inherited environment variables (``fnmatch`` patterns) the CLI may see, beside
    the built-in allow-list (PATH, HOME, locale, proxies, ``ANTHROPIC_*``, ``CLAUDE_*``...)."""


class AdmissionSettings(BaseModel):
    """What may start, beyond each worker's ``concurrency``. Counts are across every worker
    sharing the database; a parent waiting for its children does not hold a slot.

    ``max_running``: agents executing at once, in all. ``per_role`` / ``per_model``: the same,
    by role name / model name. ``rpm_per_model``: agent starts per minute, by model (each
    worker paces its own starts; a 429 from the API halves the pace of that model and holds
    its starts back for the Retry-After, then the pace recovers by one per start).
    ``min_available_mb``: no agent starts while the machine has less memory available (each
    CLI process takes about 220 MB)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_running: int | None = Field(default=None, ge=1)
    per_role: dict[str, int] = Field(default_factory=dict)
    per_model: dict[str, int] = Field(default_factory=dict)
    rpm_per_model: dict[str, int] = Field(default_factory=dict)
    min_available_mb: int = Field(default=512, ge=0)

    @field_validator("per_role", "per_model", "rpm_per_model")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for name, limit in value.items():
            if limit < 1:
                raise ValueError(f"{name} = {limit}: a limit must be 1 or more")
        return value


class BudgetSettings(BaseModel):
    """``daily_usd``: hard limit on spend per UTC day, across every agent of this grove.
    ``on_exhausted``: an agent that does not fit in a budget ``wait``s (shown in ``grove ls``)
    or ``fail``s with ``budget_exceeded``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    daily_usd: float | None = Field(default=None, gt=0)
    on_exhausted: Literal["wait", "fail"] = "wait"


class TelemetrySettings(BaseModel):
    """``otel``: record one OpenTelemetry span per finished agent attempt with the globally
    configured tracer provider (install ``agentgrove[otel]`` and set up your exporter)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    otel: bool = False


class GitSettings(BaseModel):
    """``remote``: a git remote (a remote name of the repository, or a URL) that carries agents'
    work between machines. Set, a worker fetches every commit an agent starts from or merges
    that it lacks, and pushes each agent's branch (``grove/<id>``) there whenever grove commits
    on it; an agent completes only once its branch is on the remote. Run branches
    (``grove/run/<id>``) and the merge queue's ``grove/`` branches are pushed too. The user's
    own branches are never pushed. ``push_retry_s``: how
    long a push that fails for a transient reason (network, a busy remote) is retried, with
    back-off, before the agent fails ``internal`` (its commits stay in the local branch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    remote: StrictStr | None = None
    push_retry_s: float = Field(default=600.0, ge=0, le=DAY_S)


class WorkspaceSettings(BaseModel):
    """How each agent's worktree is prepared before the agent starts. ``copy``: git-ignored
    files (paths relative to the repository root) copied from the main checkout into each new
    worktree. ``setup``: a shell command run in the new worktree (confined like a check), at
    most ``setup_timeout_s``; a failure fails the agent ``setup_failed`` with its output and
    keeps the worktree. ``ports``: the size of the block of TCP ports each running agent holds
    on its host (``GROVE_PORT_BASE`` .. +ports-1), ``port_range_start``: where blocks begin."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    copy_files: list[StrictStr] = Field(default_factory=list, alias="copy")
    setup: StrictStr | None = None
    setup_timeout_s: float = Field(default=600.0, gt=0, le=DAY_S)
    ports: int = Field(default=10, ge=1, le=1000)
    port_range_start: int = Field(default=20000, ge=1024, le=65000)

    @field_validator("copy_files")
    @classmethod
    def _inside_repository(cls, paths: list[str]) -> list[str]:
        from agentgrove.worktree_env import copy_path_problem

        for path in paths:
            problem = copy_path_problem(path)
            if problem is not None:
                raise ValueError(problem)
        return paths


class NotifySettings(BaseModel):
    """``[notify]``: tell a person when something needs them or went wrong. ``webhook``: an
    http(s) URL that gets each notification as a JSON POST (``format = "slack"``: Slack's
    ``{"text": ...}``); ``command``: a shell command run with the notification's JSON on its
    stdin. ``events``: which notifications (default all five). Each delivery gets
    ``timeout_s``; a failed one is tried ``retries`` more times, ``retry_base_s`` doubling up
    to ``retry_max_s`` apart. ``queue``: notifications a worker holds at once (claimed from
    the database, which keeps the rest); ``poll_s``: how often it looks for new ones."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    webhook: StrictStr | None = None
    format: Literal["json", "slack"] = "json"
    command: StrictStr | None = None
    events: list[StrictStr] = Field(default_factory=lambda: [k.value for k in ALL_KINDS])
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    retries: StrictInt = Field(default=5, ge=0, le=100)
    retry_base_s: float = Field(default=2.0, ge=0, le=DAY_S)
    retry_max_s: float = Field(default=300.0, ge=0, le=DAY_S)
    queue: StrictInt = Field(default=100, ge=1, le=10_000)
    poll_s: float = Field(default=2.0, gt=0, le=DAY_S)

    @field_validator("webhook")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        # The URL itself is never quoted back: a Slack webhook's path is its secret.
        problem = "not an http(s) URL: give a URL like https://example.com/hook"
        if url is None:
            return None
        if url != url.strip() or any(c.isspace() or ord(c) < 32 for c in url):
            raise ValueError(problem)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a bad port raises)
        except ValueError:
            raise ValueError(problem) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(problem)
        return url

    @field_validator("command")
    @classmethod
    def _command(cls, command: str | None) -> str | None:
        if command is not None and not command.strip():
            raise ValueError("empty command: give a shell command, or leave command out")
        return command

    @field_validator("events")
    @classmethod
    def _events(cls, names: list[str]) -> list[str]:
        known = [k.value for k in ALL_KINDS]
        for name in names:
            if name not in known:
                raise ValueError(f"unknown event {name!r}; known events: {', '.join(known)}")
        return names

    @model_validator(mode="after")
    def _somewhere(self) -> NotifySettings:
        if self.webhook is None and self.command is None:
            raise ValueError("say where notifications go: webhook = URL and/or command = CMD")
        return self

    @property
    def kinds(self) -> frozenset[NotificationKind]:
        return frozenset(NotificationKind(name) for name in self.events)

    @property
    def lease_s(self) -> float:
        """How long a claimed notification is this worker's: well past one delivery's
        timeout, so only a worker that died lets another send it again."""
        return 2 * self.timeout_s + 30


class _RoleOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    tools: list[str] | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    timeout_s: float | None = None
    max_attempts: int | None = None
    max_children: int | None = None
    bash: Literal["full", "read-only", "none"] | None = None
    max_depth: int | None = None
    may_spawn: list[str] | None = None
    # Strict: TOML's true is not a round count, nor 1.5.
    check: StrictStr | None = None
    fix_rounds: StrictInt | None = None
    check_timeout_s: float | None = None
    question_timeout_s: float | None = None
    question_default: StrictStr | None = None


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: dict[str, _RoleOverride] = Field(default_factory=dict)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    git: GitSettings = Field(default_factory=GitSettings)
    workspace: WorkspaceSettings = Field(default_factory=WorkspaceSettings)
    notify: NotifySettings | None = None


def validate_tables(path: Path, raw: dict[str, Any]) -> dict[str, object]:
    """The tables of grove.toml at ``path`` (parsed into ``raw``), validated: each table the
    file has, as its settings model (``roles``: every role, the built-ins merged with the
    file's). Raises :class:`ConfigError` with one line naming the first bad key."""
    try:
        file = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _dotted(first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}; fix the file and retry") from exc
    given: dict[str, object] = {name: getattr(file, name) for name in raw if name != "roles"}
    if "roles" in raw:
        given["roles"] = _merge_roles(file.roles)
    return given


_UNION_TAGS = ("constrained-", "literal[", "function-")


def _dotted(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as grove.toml spells it (pydantic adds the union member it
    tried, e.g. ``constrained-float``; the user wrote no such key)."""
    return ".".join(
        str(part)
        for part in loc
        if not (isinstance(part, str) and part.startswith(_UNION_TAGS))
        and part not in ("float", "int", "str", "bool", "none")
    )


def changed_worker(worker: WorkerSettings, changes: dict[str, Any]) -> WorkerSettings:
    """``worker`` with ``changes``, validated as grove.toml's ``[worker]`` is, or
    :class:`ConfigError`."""
    try:
        return WorkerSettings.model_validate({**worker.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _dotted(first["loc"])
        raise ConfigError(f"worker.{where}: {first['msg']}") from exc


def _merge_roles(overrides: dict[str, _RoleOverride]) -> dict[str, Role]:
    roles = dict(BUILTIN_ROLES)
    for name, override in overrides.items():
        given = override.model_dump(exclude_none=True)
        base = roles.get(name)
        try:
            if base is not None:
                roles[name] = Role.model_validate({**base.model_dump(), **given})
            else:
                roles[name] = Role.model_validate({"name": name, **given})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = _dotted(first["loc"])
            raise ConfigError(
                f"grove.toml: roles.{name}.{field}: {first['msg']}; fix the file and retry"
            ) from exc
        if roles[name].max_budget_usd < MIN_GRANT_USD:
            # No attempt could ever be granted so little: every claim of it would be refused.
            raise ConfigError(
                f"grove.toml: roles.{name}.max_budget_usd: {roles[name].max_budget_usd:g} is "
                f"below the smallest grant (${MIN_GRANT_USD:g}); raise it and retry"
            )
    return roles
