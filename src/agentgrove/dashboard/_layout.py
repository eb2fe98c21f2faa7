"""Where each node of a workflow DAG goes in the drawing. Pure: keys and dependencies in,
coordinates out.

Layers run left to right: a node's layer is the length of the longest dependency path from a
root to it, so every edge points rightwards. Within a layer, nodes start in spec order and are
then sorted once by the mean row of their dependencies (a barycenter sweep), which removes most
edge crossings of the DAGs people write without making the order hard to predict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W = 168.0
NODE_H = 64.0  # three lines: the key, the role, the state (any state fits its own line)
GAP_X = 56.0
GAP_Y = 18.0
PAD = 12.0


@dataclass(frozen=True)
class Placed:
    """A node's layer and row, and the top-left corner of its box."""

    key: str
    layer: int
    row: int
    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    """From a dependency to its dependent, with the SVG path joining their boxes."""

    source: str
    target: str
    path: str


@dataclass(frozen=True)
class DagLayout:
    nodes: dict[str, Placed]
    edges: list[Edge]
    width: float
    height: float


def layers(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each key's layer: 0 for a root, else 1 + the highest layer among its dependencies.

    Dependencies on keys not in ``deps`` are ignored; a cycle raises ``ValueError``. Iterative
    (Kahn's algorithm), so a 10,000-node chain costs no recursion.
    """
    known = {key: [d for d in dict.fromkeys(ds) if d in deps] for key, ds in deps.items()}
    remaining = {key: len(ds) for key, ds in known.items()}
    dependents: dict[str, list[str]] = {key: [] for key in known}
    for key, ds in known.items():
        for dep in ds:
            dependents[dep].append(key)
    layer = {key: 0 for key in known}
    ready = [key for key, count in remaining.items() if count == 0]
    done = 0
    while ready:
        key = ready.pop()
        done += 1
        for child in dependents[key]:
            layer[child] = max(layer[child], layer[key] + 1)
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    if done != len(known):
        stuck = sorted(key for key, count in remaining.items() if count > 0)
        raise ValueError(f"the graph has a cycle through {', '.join(stuck)}")
    return layer


def layout(deps: Mapping[str, Sequence[str]]) -> DagLayout:
    """Place every node of ``deps`` (key -> its dependencies, in spec order)."""
    layer_of = layers(deps)
    columns: list[list[str]] = [[] for _ in range(max(layer_of.values(), default=-1) + 1)]
    for key in deps:
        columns[layer_of[key]].append(key)
    row_of: dict[str, int] = {}
    for column in columns:
        if row_of:
            column.sort(key=lambda k: _barycenter(k, deps, row_of))
        row_of.update({key: row for row, key in enumerate(column)})
    tallest = max((len(c) for c in columns), default=0)
    step_x, step_y = NODE_W + GAP_X, NODE_H + GAP_Y
    placed: dict[str, Placed] = {}
    for index, column in enumerate(columns):
        offset = (tallest - len(column)) * step_y / 2  # centre short columns
        for row, key in enumerate(column):
            placed[key] = Placed(key, index, row, PAD + index * step_x, PAD + offset + row * step_y)
    ordered = {key: placed[key] for key in deps}
    edges = [
        Edge(dep, key, _edge_path(placed[dep], placed[key]))
        for key, ds in deps.items()
        for dep in dict.fromkeys(ds)
        if dep in placed
    ]
    width = 2 * PAD + max(len(columns) * step_x - GAP_X, 0)
    height = 2 * PAD + max(tallest * step_y - GAP_Y, 0)
    return DagLayout(ordered, edges, width, height)


def _barycenter(key: str, deps: Mapping[str, Sequence[str]], row_of: Mapping[str, int]) -> float:
    rows = [row_of[d] for d in deps[key] if d in row_of]
    return sum(rows) / len(rows) if rows else 0.0


def _edge_path(source: Placed, target: Placed) -> str:
    """A horizontal S-curve from the right side of ``source`` to the left side of ``target``."""
    x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    bend = (x2 - x1) / 2
    return f"M{x1:g},{y1:g} C{x1 + bend:g},{y1:g} {x2 - bend:g},{y2:g} {x2:g},{y2:g}"
