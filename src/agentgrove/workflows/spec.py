"""Workflow specifications: the YAML format, its validation, and a run's inputs.

A workflow is a DAG of nodes; each node runs one agent of a role on a task rendered from a
Jinja2 template (see :mod:`agentgrove.workflows.templates`)::

    name: design-implement-test
    inputs:
      feature: {description: what to build}     # required: no default
      language: {default: python}               # optional
    nodes:
      - key: design
        role: spec-writer
        task: "Write SPEC.md for {{ inputs.feature }} in {{ inputs.language }}."
      - key: implement
        role: implementer
        depends_on: [design]
        task: "Implement SPEC.md. The designer said: {{ design.output }}"
        model: claude-haiku-4-5                 # optional overrides of the role's settings
        timeout_s: 600
        max_attempts: 2
        check: "pytest -q"                      # run after the agent; the role's otherwise
        approval: after                         # before: wait for a person before it starts;
        approval_timeout_s: 3600                # after: hold its dependents until its result
        approval_on_timeout: reject             # is approved (`grove approve RUN NODE`)

``inputs`` may also be a plain list of names, each then required. An input is required unless it
has a default or says ``required: false`` (it then resolves to ``""``).

:func:`load_workflow` validates everything before it returns; every problem raises
:class:`WorkflowError` (a :class:`~agentgrove.errors.BadInput`) with one line that starts with the
file (or ``workflow 'NAME'``) and names the node. Pure: it reads a file only when given a path.

A workflow is small, and the parser is bounded so that no input can make it large: a file or text
over :data:`MAX_BYTES`, nesting deeper than :data:`MAX_DEPTH`, aliases that would repeat more
than :data:`MAX_ALIAS_NODES` nodes (an "alias bomb": a 1 KB file expanding to gigabytes), and
text that no database can store (a NUL, invalid UTF-8) are refused before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from agentgrove.errors import BadInput, MissingInputs
from agentgrove.models import unstorable
from agentgrove.workflows.templates import (
    DEP_FIELDS,
    Reference,
    TaskTemplateError,
    check_template,
    template_name,
)

KEY_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
INPUT_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Node keys that would shadow a template name or cannot be written in a Jinja expression.
RESERVED_KEYS = frozenset(
    {"inputs", "loop", "self", "caller", "varargs", "kwargs", "true", "false", "none"}
    | {"and", "or", "not", "in", "is", "if", "else", "for", "range", "dict"}
    | {"lipsum", "cycler", "joiner", "namespace"}
)
MAX_BYTES = 1024 * 1024
"""The largest workflow file (or YAML text) read: 1 MiB."""
MAX_DEPTH = 50
"""How deeply collections may nest (a workflow needs five levels)."""
MAX_ALIAS_NODES = 10_000
"""How many nodes YAML aliases may add when expanded, in all."""
MAX_ITEMS = 2_000_000
"""How many values (counting every repeat of a shared one) a workflow may hold in all."""


class WorkflowError(BadInput):
    """A workflow is invalid, or names a node it does not have. ``node``: the node at fault."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.problems: tuple[WorkflowError, ...] = (self,)
        """Every problem found (``grove workflow validate`` lists them all); the message is
        the first, and says how many more there are."""

    @classmethod
    def of(cls, problems: list[WorkflowError]) -> WorkflowError:
        """One error for ``problems`` (at least one): the first one's message and node, with
        ``(and N more problems)`` when there are others."""
        first = problems[0]
        more = len(problems) - 1
        if not more:
            return first
        plural = "s" if more > 1 else ""
        error = cls(f"{first} (and {more} more problem{plural})", node=first.node)
        error.problems = tuple(problems)
        return error


class InputSpec(BaseModel):
    """One declared input. ``required`` defaults to "has no default"."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    description: str = ""
    required: bool
    default: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _required_unless_default(cls, data: Any) -> Any:
        if data is None:
            data = {}
        if isinstance(data, dict) and "required" not in data:
            return {**data, "required": data.get("default") is None}
        return data

    @model_validator(mode="after")
    def _not_both(self) -> InputSpec:
        if self.required and self.default is not None:
            raise ValueError("an input with a default cannot be required; drop one of the two")
        return self


class NodeSpec(BaseModel):
    """One node: an agent of ``role`` on ``task``; None overrides mean "the role's setting"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    role: str
    task: str = Field(min_length=1)
    depends_on: tuple[str, ...] = ()
    model: str | None = Field(default=None, min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400, allow_inf_nan=False)
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    check: str | None = Field(default=None, min_length=1)
    """A shell command run after the node's agent (see :mod:`agentgrove.checks`), overriding
    the role's; a template over ``inputs`` only (never a dependency's result: that is agent
    text, and this is a command). Rendering to blank text means "the role's check"."""
    approval: Literal["before", "after"] | None = None
    """A gate a person decides (see :mod:`agentgrove.approvals`): ``before``, the node's agent
    is not started until approved; ``after``, it runs, and its dependents wait until its result
    is approved (a rejection runs it again with the comment)."""
    approval_timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400, allow_inf_nan=False)
    """How long the gate waits for a decision; none: for ever."""
    approval_on_timeout: Literal["reject", "approve"] | None = None
    """What a gate that timed out decides (``reject`` unless set)."""


class WorkflowSpec(BaseModel):
    """A validated workflow. Build it with :func:`load_workflow` or :meth:`from_json`;
    constructing it directly checks field types only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: tuple[NodeSpec, ...]

    @model_validator(mode="before")
    @classmethod
    def _inputs_as_list(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "inputs" not in data:
            return data
        inputs = data["inputs"]
        if inputs is None:
            return {**data, "inputs": {}}
        if isinstance(inputs, list):
            for name in inputs:
                if not isinstance(name, str):
                    shown = (
                        repr(name)
                        if isinstance(name, int | float | bool)
                        else "a " + (type(name).__name__)
                    )
                    raise ValueError(f"inputs: the list must hold input names, not {shown}")
                if inputs.count(name) > 1:
                    raise ValueError(f"inputs: {name!r} is listed twice")
            return {**data, "inputs": {name: {"required": True} for name in inputs}}
        return data

    def node(self, key: str) -> NodeSpec:
        """The node called ``key``; :class:`WorkflowError` naming the known keys if none is."""
        for node in self.nodes:
            if node.key == key:
                return node
        raise WorkflowError(
            f"workflow {self.name!r} has no node {key!r} (nodes: {', '.join(self.keys)})"
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(node.key for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``WorkflowSpec.from_json(spec.to_json()) == spec``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> WorkflowSpec:
        """Rebuild a spec from :meth:`to_json`, checking everything but the roles (which may have
        changed since it was stored; the caller checks them where it matters)."""
        return _validate(dict(data), origin=f"stored workflow {data.get('name')!r}", roles=None)


def load_workflow(
    source: str | Path | Mapping[str, object],
    *,
    roles: Collection[str],
    origin: str | None = None,
) -> WorkflowSpec:
    """Parse and validate a workflow from a YAML file path, YAML text, or a parsed mapping.

    A ``str`` is a path when it is one line and names an existing file or ends in .yaml/.yml;
    otherwise it is YAML text. ``roles`` are the role names nodes may use. ``origin`` prefixes
    every error message (default: the path, else ``workflow 'NAME'``).
    Raises :class:`WorkflowError` (one line) for the first problem found; nothing is returned
    unless the whole workflow — structure, keys, roles, dependencies, cycles and every
    template's names — is valid.
    """
    if isinstance(source, Mapping):
        data: object = dict(source)
    else:
        path = _as_path(source)
        if path is not None:
            origin = origin or str(path)
            text = _read(path)
        else:
            text = str(source)
            if len(text) > MAX_BYTES:
                raise WorkflowError(
                    f"{origin or 'workflow'}: the YAML text is larger than 1 MiB "
                    f"({len(text):,} characters); a workflow is much smaller than that"
                )
        data = _parse_yaml(text, origin or "workflow")
    if not isinstance(data, dict):
        hint = " (if you meant a file, it does not exist)" if isinstance(data, str) else ""
        raise WorkflowError(
            f"{origin or 'workflow'}: expected a mapping with 'name' and 'nodes', "
            f"got {type(data).__name__}{hint}"
        )
    if origin is None:
        name = data.get("name")
        origin = f"workflow {name!r}" if isinstance(name, str) and name else "workflow"
    return _validate(data, origin=origin, roles=roles)


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise WorkflowError(
                f"{path}: the file is larger than 1 MiB ({size:,} bytes); a workflow is much "
                "smaller than that: check the path"
            )
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except FileNotFoundError as exc:
        raise WorkflowError(f"no workflow file at {path}; check the path") from exc
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(
            f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from exc


def resolve_inputs(spec: WorkflowSpec, given: Mapping[str, str]) -> dict[str, str]:
    """Every declared input's value, in declaration order: the given one, else the default,
    else ``""`` for an optional input. :class:`BadInput` names unknown or missing inputs."""
    for name, value in given.items():
        problem = unstorable(value)
        if problem is not None:
            raise BadInput(f"input {name!r} {problem}")
        if name not in spec.inputs:
            takes = f"takes: {', '.join(spec.inputs)}" if spec.inputs else "takes no inputs"
            raise BadInput(f"unknown input {name!r}; workflow {spec.name!r} {takes}")
    missing = [name for name, i in spec.inputs.items() if i.required and name not in given]
    if missing:
        raise MissingInputs(spec.name, missing)
    return {
        name: given.get(name, i.default if i.default is not None else "")
        for name, i in spec.inputs.items()
    }


def parse_input_args(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` (from ``--input k=v``) as a dict; the value may contain '='.
    :class:`BadInput` for a pair without '=', an empty name, or a name given twice."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep:
            raise BadInput(f"--input {pair!r}: expected NAME=VALUE")
        if not name:
            raise BadInput(f"--input {pair!r}: the name before '=' is empty; use NAME=VALUE")
        if name in result:
            raise BadInput(f"--input {name!r} is given twice; give each input once")
        result[name] = value
    return result


# --- parsing -------------------------------------------------------------------------------


def _as_path(source: str | Path) -> Path | None:
    if isinstance(source, Path):
        return source
    if "\n" in source:
        return None
    path = Path(source)
    return path if path.is_file() or path.suffix in (".yaml", ".yml") else None


def _parse_yaml(text: str, origin: str) -> object:
    import yaml

    from agentgrove.workflows._yaml import Loader, TooLarge

    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass
    except TooLarge as exc:
        where = f" (line {exc.mark.line + 1})" if exc.mark else ""
        raise WorkflowError(f"{origin}: refused: {exc.problem}{where}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "").split())
        raise WorkflowError(f"{origin}: not valid YAML{where}: {problem}; fix the file") from exc
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{origin}: not valid YAML: {' '.join(str(exc).split())}") from exc


# --- validation ----------------------------------------------------------------------------


def _validate(data: dict[str, Any], *, origin: str, roles: Collection[str] | None) -> WorkflowSpec:
    _check_values(data, origin)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError.of(
            [_structure_error(error, data, origin) for error in exc.errors()]
        ) from exc
    problems: list[WorkflowError] = []
    _check_names(spec, origin, problems)
    if roles is not None:
        _check_roles(spec, roles, origin, problems)
    _check_dependencies(spec, origin, problems)
    _check_templates(spec, origin, problems)
    if problems:
        raise WorkflowError.of(problems)
    return spec


def _check_values(data: object, origin: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_ITEMS` values, and
    any string a database cannot store, before validation walks the data (recursively)."""
    pending: list[tuple[object, str, int]] = [(data, "", 0)]
    seen = 0
    while pending:
        value, where, depth = pending.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise WorkflowError(f"{origin}: refused: it holds more than {MAX_ITEMS:,} values")
        if isinstance(value, str):
            problem = unstorable(value)
            if problem is not None:
                raise WorkflowError(f"{origin}: {where.lstrip('.') or 'a value'} {problem}")
            continue
        if not isinstance(value, Mapping | list | tuple):
            continue
        if depth >= MAX_DEPTH:
            raise WorkflowError(
                f"{origin}: refused: {where.lstrip('.') or 'it'} is nested deeper than "
                f"{MAX_DEPTH} levels"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                name = key if isinstance(key, str) and unstorable(key) is None else "key"
                if isinstance(key, str):
                    pending.append((key, f"{where}.{name} (a key)", depth + 1))
                pending.append((item, f"{where}.{name}", depth + 1))
        else:
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


_FIELDS: dict[str, tuple[str, ...]] = {
    "workflow": tuple(WorkflowSpec.model_fields),
    "node": tuple(NodeSpec.model_fields),
    "input": tuple(InputSpec.model_fields),
}


def _structure_error(error: ErrorDetails, data: dict[str, Any], origin: str) -> WorkflowError:
    """One pydantic error as ``origin: nodes[2].role (node 'test'): field required``."""
    loc = error["loc"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    node: str | None = None
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        raw = data.get("nodes")
        item = raw[loc[1]] if isinstance(raw, list) and loc[1] < len(raw) else None
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            node = item["key"]
            where += f" (node {node!r})"
    if error["type"] == "missing":
        message = "field required"
    elif error["type"] == "extra_forbidden":
        model = "workflow" if len(loc) == 1 else "node" if loc[0] == "nodes" else "input"
        message = f"unknown field; use one of {', '.join(_FIELDS[model])}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
    prefix = f"{origin}: {where}: " if where else f"{origin}: "
    return WorkflowError(prefix + " ".join(message.split()), node=node)


def _check_names(spec: WorkflowSpec, origin: str, problems: list[WorkflowError]) -> None:
    for name in spec.inputs:
        if not INPUT_NAME_PATTERN.fullmatch(name):
            problems.append(
                WorkflowError(
                    f"{origin}: input name {name!r} is invalid: use letters, digits and '_', "
                    "starting with a letter or '_'"
                )
            )
    if not spec.nodes:
        problems.append(
            WorkflowError(f"{origin}: the workflow has no nodes; add at least one under 'nodes'")
        )
    seen: dict[str, int] = {}
    as_template: dict[str, str] = {}
    for index, node in enumerate(spec.nodes):
        key = node.key
        if not KEY_PATTERN.fullmatch(key):
            problems.append(
                WorkflowError(
                    f"{origin}: nodes[{index}]: node key {key!r} is invalid: use lowercase "
                    "letters, digits, '-' and '_', starting with a letter",
                    node=key,
                )
            )
        if key in seen:
            problems.append(
                WorkflowError(
                    f"{origin}: duplicate node key {key!r} (nodes[{seen[key]}] and "
                    f"nodes[{index}]); give each node its own key",
                    node=key,
                )
            )
        if key in RESERVED_KEYS:
            problems.append(
                WorkflowError(
                    f"{origin}: node key {key!r} is reserved in templates; rename the node",
                    node=key,
                )
            )
        other = as_template.get(template_name(key))
        if other is not None and other != key:
            problems.append(
                WorkflowError(
                    f"{origin}: node keys {other!r} and {key!r} are both "
                    f"{template_name(key)!r} in templates; rename one",
                    node=key,
                )
            )
        seen.setdefault(key, index)
        as_template.setdefault(template_name(key), key)


def _check_roles(
    spec: WorkflowSpec, roles: Collection[str], origin: str, problems: list[WorkflowError]
) -> None:
    for node in spec.nodes:
        if node.role not in roles:
            problems.append(
                WorkflowError(
                    f"{origin}: node {node.key!r}: unknown role {node.role!r} "
                    f"(known: {', '.join(sorted(roles))}); define it in grove.toml under "
                    f"[roles.{node.role}]",
                    node=node.key,
                )
            )


def _check_dependencies(spec: WorkflowSpec, origin: str, problems: list[WorkflowError]) -> None:
    keys = spec.keys
    for node in spec.nodes:
        for dep in dict.fromkeys(node.depends_on):  # each listed dependency once
            if dep == node.key:
                problems.append(
                    WorkflowError(
                        f"{origin}: node {node.key!r} depends on itself; remove it from depends_on",
                        node=node.key,
                    )
                )
            elif dep not in keys:
                problems.append(
                    WorkflowError(
                        f"{origin}: node {node.key!r} depends on unknown node {dep!r} "
                        f"(nodes: {', '.join(keys)})",
                        node=node.key,
                    )
                )
            if node.depends_on.count(dep) > 1:
                problems.append(
                    WorkflowError(
                        f"{origin}: node {node.key!r} lists {dep!r} twice in depends_on",
                        node=node.key,
                    )
                )
    cycle = find_cycle(spec)
    if cycle:
        problems.append(
            WorkflowError(
                f"{origin}: cycle: {' -> '.join(cycle)} (each node depends on the next); "
                "remove one of these dependencies",
                node=cycle[0],
            )
        )


def find_cycle(spec: WorkflowSpec) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (each depends on the next), starting at its
    earliest node in spec order; None if there is none. Unknown dependencies are ignored."""
    deps = {node.key: [d for d in node.depends_on if d != node.key] for node in spec.nodes}
    order = {key: index for index, key in enumerate(deps)}
    done: set[str] = set()
    for start, start_deps in deps.items():
        if start in done:
            continue
        path = [start]
        on_path = {start}
        pending = [iter(start_deps)]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif dep in on_path:
                loop = path[path.index(dep) :]
                first = min(range(len(loop)), key=lambda i: order[loop[i]])
                loop = loop[first:] + loop[:first]
                return [*loop, loop[0]]
            elif dep in deps and dep not in done:
                path.append(dep)
                on_path.add(dep)
                pending.append(iter(deps[dep]))
    return None


def _check_templates(spec: WorkflowSpec, origin: str, problems: list[WorkflowError]) -> None:
    nodes_by_name = {template_name(node.key): node.key for node in spec.nodes}
    for node in spec.nodes:
        allowed: dict[str, frozenset[str] | None] = {"inputs": frozenset(spec.inputs)}
        allowed |= {template_name(dep): DEP_FIELDS for dep in node.depends_on}
        try:
            unknown = check_template(node.task, allowed)
        except TaskTemplateError as exc:
            problems.append(
                WorkflowError(f"{origin}: node {node.key!r} task: {exc}", node=node.key)
            )
            unknown = []
        for ref in unknown:
            problem = _reference_problem(spec, node, ref, nodes_by_name)
            problems.append(
                WorkflowError(f"{origin}: node {node.key!r} template {problem}", node=node.key)
            )
        if node.check is not None:
            _check_check(spec, node, origin, problems)
        _check_approval(node, origin, problems)


def _check_approval(node: NodeSpec, origin: str, problems: list[WorkflowError]) -> None:
    """``approval_timeout_s`` and ``approval_on_timeout`` belong to a gate: without
    ``approval:`` they would silently do nothing; on_timeout without a timeout never fires."""
    if node.approval is None:
        for name in ("approval_timeout_s", "approval_on_timeout"):
            if getattr(node, name) is not None:
                problems.append(
                    WorkflowError(
                        f"{origin}: node {node.key!r}: {name} needs approval: before or after; "
                        f"add approval: or drop {name}",
                        node=node.key,
                    )
                )
    elif node.approval_on_timeout is not None and node.approval_timeout_s is None:
        problems.append(
            WorkflowError(
                f"{origin}: node {node.key!r}: approval_on_timeout needs approval_timeout_s "
                "(a gate without a timeout waits for ever); add one or drop approval_on_timeout",
                node=node.key,
            )
        )


def _check_check(
    spec: WorkflowSpec, node: NodeSpec, origin: str, problems: list[WorkflowError]
) -> None:
    """A node's ``check:``: not blank, and a template that uses declared inputs only."""
    assert node.check is not None
    if not node.check.strip():
        problems.append(
            WorkflowError(
                f"{origin}: node {node.key!r} check: is blank; give a shell command or drop it",
                node=node.key,
            )
        )
        return
    try:
        unknown = check_template(node.check, {"inputs": frozenset(spec.inputs)})
    except TaskTemplateError as exc:
        problems.append(WorkflowError(f"{origin}: node {node.key!r} check: {exc}", node=node.key))
        return
    declared = ", ".join(spec.inputs) or "none"
    for ref in unknown:
        problems.append(
            WorkflowError(
                f"{origin}: node {node.key!r} check: uses {str(ref)!r}; a check may use only "
                f"inputs.NAME (declared: {declared}), never a node's result",
                node=node.key,
            )
        )


def _reference_problem(
    spec: WorkflowSpec, node: NodeSpec, ref: Reference, nodes_by_name: Mapping[str, str]
) -> str:
    """Why ``ref`` is not allowed in ``node``'s template, as the end of a sentence."""
    fields = ", ".join(sorted(DEP_FIELDS))
    declared = ", ".join(spec.inputs) or "none"
    if ref.name == "inputs":
        if ref.attr is None:
            return f"uses 'inputs' without an input name; write inputs.NAME (declared: {declared})"
        return f"uses unknown input {str(ref)!r} (declared: {declared})"
    target = nodes_by_name.get(ref.name)
    if target == node.key:
        return f"uses its own result {str(ref)!r}; a node sees only its dependencies' results"
    if target is not None and target in node.depends_on:
        if ref.attr is None:
            return f"uses {ref.name!r} without a field; use {ref.name}.FIELD (fields: {fields})"
        return f"uses unknown field {str(ref)!r} (fields: {fields})"
    if target is not None:
        return (
            f"uses {str(ref)!r} but does not depend on {target!r}; add {target!r} to its depends_on"
        )
    hyphenated = [key for key in spec.keys if key.startswith(f"{ref.name}-")]
    hint = (
        f"; to use node {hyphenated[0]!r}, write {template_name(hyphenated[0])}.FIELD"
        if hyphenated
        else ""
    )
    return (
        f"uses unknown name {ref.name!r} on line {ref.lineno}: templates use inputs.NAME and "
        f"DEP.{{{fields.replace(', ', ',')}}} for each DEP in depends_on{hint}"
    )
