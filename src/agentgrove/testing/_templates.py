"""Templates in script values: ``{{ SOURCE ACCESSORS [~ /REGEX/] }}`` (pure, no I/O).

``SOURCE`` is ``task`` (the agent's task), ``role``, ``agent`` (its id), ``result[N]`` (the
text of the result of the conversation's tool call number ``N``, from 0; negative counts from
the end) or a name given to an earlier tool call with ``as:``. ``ACCESSORS`` (``.key``,
``[n]``) read into the result parsed as JSON. ``~ /REGEX/`` searches the value (as text) and
gives the first capture group, or the whole match when the regex has no group. A quoted string
(``{{ '{{' }}``) is itself: the way to write a literal ``{{``.

A string that is exactly one template takes the value itself (a list stays a list); templates
inside a longer string are replaced by their text (JSON for a non-string value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgrove.testing._request import ModelRequest

__all__ = ["RESERVED", "Reference", "TemplateError", "references", "render"]

RESERVED = frozenset({"task", "role", "agent", "result", "literal"})
"""Source names a tool call cannot be given with ``as:``."""

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SOURCE = re.compile(r"\s*(?:result\[\s*(-?\d+)\s*\]|([A-Za-z_][A-Za-z0-9_]*))")
_ACCESS = re.compile(r"\s*(?:\.([A-Za-z_][A-Za-z0-9_-]*)|\[\s*(-?\d+)\s*\])")


class TemplateError(ValueError):
    """A template that cannot be parsed, or (at serving time) cannot be filled in."""


@dataclass(frozen=True)
class Reference:
    """One parsed ``{{ ... }}``: ``source`` is ``task``/``role``/``agent``/``result``/a name,
    or ``literal`` (a quoted string, held as the one item of ``path``)."""

    text: str
    source: str
    index: int | None
    path: tuple[str | int, ...]
    regex: re.Pattern[str] | None


def _parse(text: str, expr: str) -> Reference:
    quoted = expr.strip()
    if len(quoted) >= 2 and quoted[0] == quoted[-1] and quoted[0] in "'\"":
        return Reference(text, "literal", None, (quoted[1:-1],), None)
    head = _SOURCE.match(expr)
    if head is None:
        raise TemplateError(
            f"{text}: start with task, role, agent, result[N] or a name given with `as:`"
        )
    index = int(head[1]) if head[1] is not None else None
    source = "result" if index is not None else head[2]
    if source == "result" and index is None:
        raise TemplateError(f"{text}: write result[N], N the number of the tool call from 0")
    pos = head.end()
    path: list[str | int] = []
    while (access := _ACCESS.match(expr, pos)) is not None:
        path.append(access[1] if access[1] is not None else int(access[2]))
        pos = access.end()
    rest = expr[pos:].strip()
    regex: re.Pattern[str] | None = None
    if rest:
        body = rest[1:].strip() if rest.startswith("~") else None
        if body is None or len(body) < 2 or body[0] != "/" or body[-1] != "/":
            raise TemplateError(f"{text}: unexpected {rest!r}; a regex is written ~ /REGEX/")
        try:
            regex = re.compile(body[1:-1])
        except re.error as exc:
            raise TemplateError(f"{text}: bad regex: {exc}") from None
    if source in ("task", "role", "agent") and path:
        raise TemplateError(f"{text}: {source} is text; use ~ /REGEX/ to take a part of it")
    return Reference(text, source, index, tuple(path), regex)


def references(value: object) -> list[Reference]:
    """Every template in the strings of ``value`` (nested lists and mappings walked).

    Raises :class:`TemplateError` for the first one that cannot be parsed.
    """
    found: list[Reference] = []
    if isinstance(value, str):
        for match in _TEMPLATE.finditer(value):
            found.append(_parse(match[0], match[1]))
    elif isinstance(value, Mapping):
        for item in value.values():
            found.extend(references(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(references(item))
    return found


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _resolve(ref: Reference, request: ModelRequest, names: Mapping[str, int]) -> object:
    if ref.source == "literal":
        return ref.path[0]
    if ref.source == "task":
        value: object = request.prompt
    elif ref.source == "role":
        value = request.role or ""
    elif ref.source == "agent":
        value = request.agent_id or ""
    else:
        number = ref.index if ref.source == "result" else names[ref.source]
        assert number is not None
        calls = request.tool_calls
        if not -len(calls) <= number < len(calls):
            raise TemplateError(
                f"{ref.text}: the conversation has {len(calls)} tool call(s), no call {number}"
            )
        call = calls[number]
        if call.result is None:
            raise TemplateError(f"{ref.text}: tool call {number} ({call.name}) has no result yet")
        value = call.result
        if ref.path:
            try:
                value = json.loads(call.result)
            except ValueError:
                raise TemplateError(
                    f"{ref.text}: the result of {call.name} is not JSON: {call.result[:200]!r}"
                ) from None
            for step in ref.path:
                try:
                    value = value[step]  # type: ignore[index]
                except (KeyError, IndexError, TypeError):
                    raise TemplateError(
                        f"{ref.text}: no {step!r} in the result of {call.name}: "
                        f"{call.result[:200]!r}"
                    ) from None
    if ref.regex is not None:
        text = _as_text(value)
        found = ref.regex.search(text)
        if found is None:
            raise TemplateError(f"{ref.text}: /{ref.regex.pattern}/ does not match {text[:200]!r}")
        value = found[1] if ref.regex.groups else found[0]
    return value


def render(value: Any, request: ModelRequest, names: Mapping[str, int]) -> Any:
    """``value`` with every template filled in from ``request`` (``names``: ``as:`` name to
    tool call number). Raises :class:`TemplateError` when a value cannot be found."""
    if isinstance(value, str):
        found = list(_TEMPLATE.finditer(value))
        if len(found) == 1 and found[0].span() == (0, len(value)):
            return _resolve(_parse(found[0][0], found[0][1]), request, names)
        return _TEMPLATE.sub(
            lambda m: _as_text(_resolve(_parse(m[0], m[1]), request, names)), value
        )
    if isinstance(value, Mapping):
        return {key: render(item, request, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, request, names) for item in value]
    return value
