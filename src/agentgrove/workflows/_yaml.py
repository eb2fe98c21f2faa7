"""The YAML loader for workflow files: PyYAML's SafeLoader, refusing duplicate keys, deep nesting
and alias bombs (:class:`Loader`).

Its own module so that only commands that read a workflow file import PyYAML (a read-only
``grove ls`` does not)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from agentgrove.workflows.spec import MAX_ALIAS_NODES, MAX_DEPTH


class TooLarge(yaml.YAMLError):
    """The document is nested too deeply or its aliases expand too far."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one, nesting
    deeper than :data:`MAX_DEPTH`, and aliases whose expansion adds more than
    :data:`MAX_ALIAS_NODES` nodes. Both are checked while composing, before any object (or
    recursion past the bound) is made: the expanded size of each node is known once its
    children are, so an alias costs one lookup."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[yaml.Node, int] = {}
        self._aliased = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            node = super().compose_node(parent, index)
            if node is not None:
                self._aliased += self._sizes.get(node, 1)
                if self._aliased > MAX_ALIAS_NODES:
                    raise TooLarge(
                        f"its aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                        "(an alias bomb?); write the values out instead of aliasing them",
                        mark,
                    )
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooLarge(
                    f"it is nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._sizes[node] = 1 + sum(self._sizes.get(child, 1) for child in _children(node))
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key != "<<":
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
