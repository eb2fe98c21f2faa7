"""Cost and tokens over time as stacked bars, one colour per role or model. Pure: usage rows in,
bar geometry out (the template draws it as inline SVG; no chart library, no CDN)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from agentgrove.store._views import UsageRow

Group = Literal["role", "model"]
Metric = Literal["cost", "tokens"]

BUCKET_SIZES_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
"""Bucket widths to choose from: the smallest that keeps the chart within ``max_buckets``."""
WIDTH, HEIGHT, LEFT, BOTTOM = 720.0, 180.0, 64.0, 22.0
PALETTE_SIZE = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int  # colour index
    title: str


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart ready to draw: bars, legend, axis labels."""

    metric: Metric
    bars: list[Bar]
    legend: list[tuple[str, int, str]]  # (series name, colour index, total as text)
    x_labels: list[tuple[float, str]]
    y_max: str
    width: float = WIDTH
    height: float = HEIGHT


def bucket_size(first: datetime, last: datetime, max_buckets: int = 24) -> int:
    """The smallest bucket width (seconds) that fits ``first..last`` in ``max_buckets``."""
    span = (last - first).total_seconds()
    for size in BUCKET_SIZES_S:
        if span / size < max_buckets:
            return size
    return BUCKET_SIZES_S[-1]


def usage_chart(rows: Sequence[UsageRow], group: Group, metric: Metric) -> Chart:
    """Sum each row's cost (or tokens in + out) into time buckets, stacked by ``group``."""
    value: Callable[[UsageRow], float] = (
        (lambda r: r.cost_usd)
        if metric == "cost"
        else (lambda r: float(r.tokens_in + r.tokens_out))
    )
    if not rows:
        return Chart(metric, [], [], [], _fmt(metric, 0.0))
    first, last = min(r.at for r in rows), max(r.at for r in rows)
    size = bucket_size(first, last)
    start = _floor(first, size)
    count = int((last - start).total_seconds() // size) + 1
    totals: dict[str, float] = {}
    cells: dict[tuple[str, int], float] = {}
    for row in rows:
        name = row.role if group == "role" else row.model
        index = int((row.at - start).total_seconds() // size)
        cells[name, index] = cells.get((name, index), 0.0) + value(row)
        totals[name] = totals.get(name, 0.0) + value(row)
    names = sorted(totals, key=lambda n: (-totals[n], n))
    # By name, not by rank: the cost and the tokens chart rank roles differently, and a role
    # must keep its colour from one chart to the other.
    colour = {name: i % PALETTE_SIZE for i, name in enumerate(sorted(totals))}
    stack = [sum(cells.get((n, i), 0.0) for n in names) for i in range(count)]
    top = max(stack) or 1.0
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    slot = plot_w / count
    bars: list[Bar] = []
    for i in range(count):
        base = plot_h
        for name in names:
            amount = cells.get((name, i), 0.0)
            if amount <= 0:
                continue
            h = amount / top * plot_h
            base -= h
            when = (start + timedelta(seconds=i * size)).strftime("%Y-%m-%d %H:%M")
            bars.append(
                Bar(
                    x=LEFT + i * slot + slot * 0.1,
                    y=base,
                    width=slot * 0.8,
                    height=h,
                    series=colour[name],
                    title=f"{when} {name}: {_fmt(metric, amount)}",
                )
            )
    every = max(1, count // 6)
    label_format = "%H:%M" if size < 86400 else "%m-%d"
    x_labels = [
        (LEFT + (i + 0.5) * slot, (start + timedelta(seconds=i * size)).strftime(label_format))
        for i in range(0, count, every)
    ]
    legend = [(n, colour[n], _fmt(metric, totals[n])) for n in names]
    return Chart(metric, bars, legend, x_labels, _fmt(metric, top))


def _floor(at: datetime, size: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, UTC)


def _fmt(metric: Metric, amount: float) -> str:
    if metric == "cost":
        return f"${amount:.4f}" if amount < 1 else f"${amount:,.2f}"
    return f"{amount:,.0f} tok"
