"""The Jinja side of task templates (:mod:`agentgrove.workflows.templates`): parsing,
checking and rendering in Jinja's immutable sandbox. Imported on first use only, so commands
that never touch a template do not load Jinja."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

import jinja2
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agentgrove.workflows.templates import (
    DepResult,
    Reference,
    TaskTemplateError,
    template_name,
)


def _finalize(value: object) -> object:
    return "" if value is None else value


_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)

# Names a template may use without declaring them: Jinja's globals and its implicit variables.
_IMPLICIT_NAMES = frozenset(_ENV.globals) | {"loop", "caller", "varargs", "kwargs", "self"}
_UNSUPPORTED = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse(text: str) -> nodes.Template:
    try:
        return _ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TaskTemplateError(
            f"template syntax error on line {exc.lineno}: {_one_line(exc.message or str(exc))}"
        ) from exc


def check_template(text: str, allowed: Mapping[str, AbstractSet[str] | None]) -> list[Reference]:
    """:func:`agentgrove.workflows.templates.check_template` (its contract is there)."""
    ast = _parse(text)
    bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx != "load"}
    bound |= {m.name for m in ast.find_all(nodes.Macro)}
    found: list[Reference] = []
    _collect(ast, found)
    unknown: list[Reference] = []
    seen: set[tuple[str, str | None]] = set()
    for ref in sorted(found, key=lambda r: r.lineno):
        if ref.name in allowed:
            attrs = allowed[ref.name]
            if attrs is None or ref.attr in attrs:
                continue
        elif ref.name in bound or ref.name in _IMPLICIT_NAMES:
            continue
        if (ref.name, ref.attr) not in seen:
            seen.add((ref.name, ref.attr))
            unknown.append(ref)
    return unknown


def _collect(node: nodes.Node, out: list[Reference]) -> None:
    """Append every loaded name (with its first attribute, if static) under ``node``."""
    for kind, tag in _UNSUPPORTED.items():
        if isinstance(node, kind):
            raise TaskTemplateError(
                f"line {node.lineno}: {{% {tag} %}} is not supported in task templates"
            )
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        if node.node.ctx == "load":
            out.append(Reference(node.node.name, node.attr, node.lineno))
        return
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name):
        arg = node.arg
        static = isinstance(arg, nodes.Const) and isinstance(arg.value, str)
        if node.node.ctx == "load":
            attr = arg.value if isinstance(arg, nodes.Const) and static else None
            out.append(Reference(node.node.name, attr, node.lineno))
        if not static:
            _collect(arg, out)
        return
    if isinstance(node, nodes.Name):
        if node.ctx == "load":
            out.append(Reference(node.name, None, node.lineno))
        return
    for child in node.iter_child_nodes():
        _collect(child, out)


def render_task(text: str, inputs: Mapping[str, str], deps: Mapping[str, DepResult]) -> str:
    """:func:`agentgrove.workflows.templates.render_task` (its contract is there)."""
    template = _ENV.from_string(_parse(text))
    context: dict[str, object] = {template_name(key): dep for key, dep in deps.items()}
    context["inputs"] = dict(inputs)
    try:
        return template.render(context)
    except jinja2.TemplateError as exc:
        message = exc.message if exc.message is not None else str(exc)
        raise TaskTemplateError(f"cannot render task template: {_one_line(message)}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TaskTemplateError(
            f"cannot render task template: {type(exc).__name__}: {_one_line(str(exc))}"
        ) from exc
