"""Scripts as YAML files (``grove dev model-server --script FILE``), loaded into a :class:`Script`.

The format is documented in ``docs/scripting.md``. In short::

    entries:                       # tried in order; the first that matches serves the agent
      - role: planner              # optional: the agent's role
        task: 'PLAN\\.md'          # optional: a regex searched in the agent's task
        times: 1                   # optional: serve at most this many agents
        turns:                     # one per model reply, in order
          - write: {path: PLAN.md, content: "..."}
          - spawn_agent: {role: implementer, task: "Step 1 of PLAN.md"}
            as: step1              # name the tool call's result for later templates
          - wait_agents: {ids: ["{{ step1.id }}"]}
          - say: "Step 1 done by {{ step1.id }}"

:func:`load_script` validates everything before serving: every problem is reported at once,
one line each, naming the entry and turn (:class:`ScriptError`, a :class:`BadInput`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from agentgrove.errors import BadInput
from agentgrove.testing._request import ModelRequest
from agentgrove.testing._script import Script
from agentgrove.testing._templates import RESERVED, TemplateError, references, render
from agentgrove.testing._turns import Fault, Reply, Step, Turn, TurnSpec, Usage, text, tool_use

__all__ = ["ScriptError", "load_script", "parse_script"]

ORCHESTRATOR_TOOLS = ("spawn_agent", "wait_agents", "merge_agent", "agent_result")
"""Shorthand keys for grove's tools, which the model sees as ``mcp__grove__<name>``."""


class ScriptError(BadInput):
    """A script file that cannot be served; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(problems[0] + suffix)
        self.problems = tuple(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Write(_Strict):
    path: str
    content: str


class _Edit(_Strict):
    path: str
    old: str
    new: str
    replace_all: bool = False


class _Bash(_Strict):
    command: str
    description: str | None = None


class _Tool(_Strict):
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class _Spawn(_Strict):
    role: str
    task: str


class _Wait(_Strict):
    ids: list[str] | str
    """Agent ids, or one template whose value is a list of them."""
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("ids", mode="before")
    @classmethod
    def _list_or_template(cls, value: object) -> object:
        if isinstance(value, list) or (isinstance(value, str) and value.strip().startswith("{{")):
            return value
        raise ValueError('give a list of agent ids, e.g. ["{{ step1.id }}"]')


class _AgentId(_Strict):
    id: str


class _Fault(_Strict):
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    message: str | None = None
    drop: bool = False
    hang: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> _Fault:
        kinds = [self.status is not None, self.drop, self.hang is not None]
        if sum(kinds) != 1:
            raise ValueError("give one of status: CODE, drop: true or hang: SECONDS")
        if self.status is None and (self.retry_after is not None or self.message is not None):
            raise ValueError("retry_after and message go with status: CODE")
        return self


_ACTIONS = ("read", "write", "edit", "bash", "tool", *ORCHESTRATOR_TOOLS)


class _Call(_Strict):
    """One tool call: exactly one action key, optionally named with ``as``."""

    read: str | None = None
    write: _Write | None = None
    edit: _Edit | None = None
    bash: _Bash | None = None
    tool: _Tool | None = None
    spawn_agent: _Spawn | None = None
    wait_agents: _Wait | None = None
    merge_agent: _AgentId | None = None
    agent_result: _AgentId | None = None
    as_: str | None = Field(default=None, alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("bash", mode="before")
    @classmethod
    def _bash_shorthand(cls, value: object) -> object:
        return {"command": value} if isinstance(value, str) else value

    @field_validator("merge_agent", "agent_result", mode="before")
    @classmethod
    def _id_shorthand(cls, value: object) -> object:
        return {"id": value} if isinstance(value, str) else value

    def actions(self) -> list[str]:
        return [key for key in _ACTIONS if getattr(self, key) is not None]

    def block(self) -> dict[str, Any]:
        """The tool_use block (templates not yet filled in)."""
        if self.read is not None:
            return tool_use("Read", {"file_path": self.read})
        if self.write is not None:
            return tool_use("Write", {"file_path": self.write.path, "content": self.write.content})
        if self.edit is not None:
            edit: dict[str, Any] = {
                "file_path": self.edit.path,
                "old_string": self.edit.old,
                "new_string": self.edit.new,
            }
            if self.edit.replace_all:
                edit["replace_all"] = True
            return tool_use("Edit", edit)
        if self.bash is not None:
            payload: dict[str, Any] = {"command": self.bash.command}
            if self.bash.description:
                payload["description"] = self.bash.description
            return tool_use("Bash", payload)
        if self.tool is not None:
            return tool_use(self.tool.name, dict(self.tool.input))
        for key in ORCHESTRATOR_TOOLS:
            value = getattr(self, key)
            if value is not None:
                return tool_use(f"mcp__grove__{key}", value.model_dump(exclude_none=True))
        raise AssertionError("a validated call has an action")


class _Usage(_Strict):
    input_tokens: int = Field(default=120, ge=0)
    output_tokens: int = Field(default=30, ge=0)


class _Turn(_Call):
    """One model reply: text (``say``), one tool call (its keys inline) or several
    (``calls``), usage figures and a delay; or a ``fault`` alone."""

    say: str | None = None
    calls: list[_Call] | None = Field(default=None, min_length=1)
    usage: _Usage | None = None
    delay: float | None = Field(default=None, gt=0)
    fault: _Fault | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_shorthand(cls, value: object) -> object:
        return {"say": value} if isinstance(value, str) else value

    @field_validator("fault", mode="before")
    @classmethod
    def _fault_shorthand(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"status": value}
        if value == "drop":
            return {"drop": True}
        return value

    @model_validator(mode="after")
    def _shape(self) -> _Turn:
        inline = self.actions()
        if self.fault is not None:
            others = [k for k in ("say", "calls", "usage", "delay", "as_") if getattr(self, k)]
            if inline or others:
                keys = ", ".join(k.rstrip("_") for k in [*inline, *others])
                raise ValueError(f"a fault is a turn of its own; move {keys} to another turn")
            return self
        if len(inline) > 1:
            raise ValueError(
                f"one tool call per turn ({', '.join(inline)}); list several under calls:"
            )
        if inline and self.calls is not None:
            raise ValueError(f"give {inline[0]} inside calls:, or drop calls:")
        if self.as_ is not None and not inline:
            raise ValueError("as: names a tool call; this turn has none")
        if self.say is None and not inline and self.calls is None:
            raise ValueError(
                f"a turn needs say, a tool call ({', '.join(_ACTIONS)}), calls or fault"
            )
        return self

    def tool_calls(self) -> list[_Call]:
        if self.calls is not None:
            return list(self.calls)
        return [self] if self.actions() else []


class _Entry(_Strict):
    role: str | None = None
    task: str | None = None
    times: int | None = Field(default=None, ge=1)
    turns: list[Any] = Field(min_length=1)
    """Validated one by one (:func:`_turns`), so that one bad turn hides no other problem."""


# --- loading -------------------------------------------------------------------------------


def load_script(path: Path) -> Script:
    """The :class:`Script` of the YAML file at ``path``; :class:`ScriptError` if it is
    missing, unreadable or invalid (every problem listed). A request no entry matches is
    unexpected: the server answers it with HTTP 400 (the agent fails) and records it."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(
            [f"script {path}: no such file; give the path of a YAML script (docs/scripting.md)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScriptError([f"script {path}: cannot be read: {reason}"]) from None
    return parse_script(content, origin=str(path))


def parse_script(content: str, *, origin: str = "script") -> Script:
    """The :class:`Script` of a YAML document; :class:`ScriptError` listing every problem."""
    import yaml

    from agentgrove.workflows._yaml import Loader, TooLarge

    try:
        data = yaml.load(content, Loader=Loader)  # a SafeLoader subclass
    except TooLarge as exc:
        raise ScriptError([f"{origin}: refused: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "").split())
        raise ScriptError([f"{origin}: not valid YAML{where}: {problem}; fix the file"]) from None
    except yaml.YAMLError as exc:
        raise ScriptError([f"{origin}: not valid YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(data, dict):
        raise ScriptError(
            [f"{origin}: a script is a mapping with `entries:`, a list (see docs/scripting.md)"]
        )
    entries = data.get("entries")
    unknown = sorted(str(key) for key in data if key != "entries")
    problems = [f"{origin}: {key}: unknown key; a script has only entries:" for key in unknown]
    if not isinstance(entries, list) or not entries:
        problems.append(f"{origin}: entries: give a list of one or more entries")
        raise ScriptError(problems)
    script = Script()
    for number, raw in enumerate(entries):
        where = f"{origin}: entries[{number}]"
        entry: _Entry | None = None
        try:
            entry = _Entry.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_structure_problem(e, where) for e in exc.errors())
        raw_turns = raw.get("turns") if isinstance(raw, dict) else None
        raw_turns = raw_turns if isinstance(raw_turns, list) else []
        turns = _turns(raw_turns, where, problems)
        _add_entry(script, entry, turns, raw_turns, where, problems)
    if problems:
        raise ScriptError(problems)
    return script


def _structure_problem(error: ErrorDetails, origin: str) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    where = where.replace(".as_", ".as")
    if error["type"] == "missing":
        message = "field required"
    elif error["type"] == "extra_forbidden":
        message = "unknown key; see docs/scripting.md for the keys of an entry and a turn"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
    return f"{origin}{where}: {' '.join(message.split())}"


def _turns(raw: list[Any], where: str, problems: list[str]) -> list[_Turn | None]:
    """Each turn of ``raw`` validated (``None`` for an invalid one, its problems recorded)."""
    out: list[_Turn | None] = []
    for index, item in enumerate(raw):
        try:
            out.append(_Turn.model_validate(item))
        except ValidationError as exc:
            at = f"{where}.turns[{index}]"
            problems.extend(_structure_problem(e, at) for e in exc.errors())
            out.append(None)
    return out


def _declared(raw: object) -> list[str]:
    """The ``as:`` names an (invalid) turn declares, so later turns may still use them."""
    if not isinstance(raw, dict):
        return []
    calls = raw.get("calls")
    items = [raw, *(calls if isinstance(calls, list) else [])]
    return [str(i["as"]) for i in items if isinstance(i, dict) and "as" in i]


def _add_entry(
    script: Script,
    entry: _Entry | None,
    turns: list[_Turn | None],
    raw_turns: list[Any],
    where: str,
    problems: list[str],
) -> None:
    """Check the entry's regex, templates and names; add it to ``script`` when valid."""
    regex: re.Pattern[str] | None = None
    if entry is not None and entry.task is not None:
        try:
            regex = re.compile(entry.task)
        except re.error as exc:
            problems.append(f"{where}.task: bad regex {entry.task!r}: {exc}")
    names: dict[str, int] = {}
    count = 0
    specs: list[TurnSpec] = []
    pending_faults: list[Step] = []
    for index, turn in enumerate(turns):
        at = f"{where}.turns[{index}]"
        if turn is None:
            names.update((name, -1) for name in _declared(raw_turns[index]))
            continue
        if turn.fault is not None:
            pending_faults.append(_fault(turn.fault))
            continue
        for ref in _references(turn, at, problems):
            if ref.source not in RESERVED and ref.source not in names:
                known = ", ".join(names) or "none yet"
                problems.append(
                    f"{at}: {ref.text}: no earlier tool call is named {ref.source!r} "
                    f"(names so far: {known})"
                )
        calls = turn.tool_calls()
        for position, call in enumerate(calls):
            if call.as_ is None:
                continue
            if call.as_ in RESERVED or call.as_ in names:
                problems.append(f"{at}: as: {call.as_!r} is taken; choose another name")
            names[call.as_] = count + position
        count += len(calls)
        step = _step(turn, dict(names), at)
        specs.append([*pending_faults, step] if pending_faults else step)
        pending_faults = []
    if pending_faults:
        specs.append(pending_faults)
    if entry is None or None in turns or not specs:
        return
    criteria = [f"role={entry.role!r}"] if entry.role is not None else []
    if entry.task is not None:
        criteria.append(f"task=/{entry.task}/")
    name = where.split(": ", 1)[-1] + (f" ({', '.join(criteria)})" if criteria else "")

    def match(request: ModelRequest) -> bool:
        return regex is None or regex.search(request.prompt) is not None

    match.__name__ = f"task=/{entry.task}/"
    script.on(
        turns=specs,
        role=entry.role,
        match=None if entry.task is None else match,
        times=entry.times,
        name=name,
    )


def _references(turn: _Turn, at: str, problems: list[str]) -> list[Any]:
    values: list[object] = [turn.say, *(c.block()["input"] for c in turn.tool_calls())]
    try:
        return references(values)
    except TemplateError as exc:
        problems.append(f"{at}: {exc}")
        return []


def _fault(spec: _Fault) -> Fault:
    if spec.status is not None:
        return Fault.status(spec.status, spec.retry_after, spec.message)
    if spec.drop:
        return Fault.drop()
    assert spec.hang is not None
    return Fault.slow(spec.hang)


def _step(turn: _Turn, names: Mapping[str, int], at: str) -> Callable[[ModelRequest], Reply]:
    """A step building the reply at serving time, templates filled in from the request."""
    usage = Usage() if turn.usage is None else Usage(**turn.usage.model_dump())
    calls = [call.block() for call in turn.tool_calls()]

    def reply(request: ModelRequest) -> Reply:
        try:
            blocks = []
            if turn.say is not None:
                said = render(turn.say, request, names)
                blocks.append(text(said if isinstance(said, str) else json.dumps(said)))
            for block in calls:
                blocks.append(tool_use(block["name"], render(block["input"], request, names)))
        except TemplateError as exc:
            raise TemplateError(f"{at}: {exc}") from None
        built = Turn(blocks, usage)
        return built if turn.delay is None else Fault.slow(turn.delay, built)

    reply.__name__ = at.split(": ", 1)[-1]
    return reply
