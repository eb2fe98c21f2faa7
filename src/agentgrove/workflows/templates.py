"""Task templates: the Jinja2 text a workflow node's task is rendered from.

A template sees two kinds of name:

* ``inputs`` — the workflow's resolved inputs, used as ``inputs.NAME``;
* one name per dependency — the dependency's :class:`DepResult`, used as ``DEP.output``,
  ``DEP.branch``, ``DEP.files_changed`` or ``DEP.head_commit``. Jinja names cannot hold a
  hyphen, so node ``run-tests`` is ``run_tests`` in a template (:func:`template_name`).

Rendering is sandboxed (no access to Python internals), undefined names are errors, nothing is
HTML-escaped, ``None`` renders as the empty string, and a trailing newline is kept. A line
holding only a ``{% ... %}`` tag leaves nothing behind (``trim_blocks``, ``lstrip_blocks``).
Filters such as ``join`` and statements such as ``{% if %}`` and ``{% for %}`` work;
``{% include %}``, ``{% extends %}`` and ``{% import %}`` do not (there is nothing to load).

Every error is a :class:`TaskTemplateError` (a :class:`~agentgrove.errors.BadInput`) on one line;
its message does not name the workflow or node, which the caller prefixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from agentgrove.errors import BadInput


class TaskTemplateError(BadInput):
    """A task template does not parse, uses an unsupported tag, or failed to render."""


@dataclass(frozen=True)
class DepResult:
    """What a finished dependency offers the templates of the nodes that depend on it."""

    output: str
    branch: str | None = None
    files_changed: tuple[str, ...] = ()
    head_commit: str | None = None


DEP_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(DepResult))


@dataclass(frozen=True)
class Reference:
    """One use of a name in a template: ``name.attr``, ``name['attr']``, or ``name`` alone
    (``attr`` is None then, and also when the subscript is computed)."""

    name: str
    attr: str | None
    lineno: int

    def __str__(self) -> str:
        return self.name if self.attr is None else f"{self.name}.{self.attr}"


def template_name(key: str) -> str:
    """The name under which node ``key``'s result appears in templates ('-' becomes '_')."""
    return key.replace("-", "_")


def check_template(text: str, allowed: Mapping[str, AbstractSet[str] | None]) -> list[Reference]:
    """The references in ``text`` that ``allowed`` does not permit, deduplicated, in source order.

    ``allowed`` maps each name a template may use to the attributes it may be used with, or to
    None when any use of it is fine. A name with an attribute set must be used with one of those
    attributes (``inputs.feature``, ``inputs['feature']``); using it bare, or with a computed
    subscript, is reported with ``attr=None``. Names the template binds itself (``{% set %}``,
    ``{% for %}``, macro parameters) and Jinja's globals are always allowed.

    Raises :class:`TaskTemplateError` if ``text`` does not parse or uses include/extends/import.
    """
    from agentgrove.workflows import _jinja

    return _jinja.check_template(text, allowed)


def render_task(text: str, inputs: Mapping[str, str], deps: Mapping[str, DepResult]) -> str:
    """Render a task template with ``inputs`` and the results of ``deps`` (keyed by node key).

    The template should have passed :func:`check_template`; anything it uses that is not given
    here (an input not resolved, a dependency not passed) raises :class:`TaskTemplateError`.
    """
    from agentgrove.workflows import _jinja

    return _jinja.render_task(text, inputs, deps)
