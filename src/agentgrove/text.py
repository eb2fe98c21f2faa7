"""Text shown to people in one line: the terminal's live view, the shell's notices and the
dashboard all shorten outputs, errors and tool calls the same way."""

from __future__ import annotations


def one_line(text: str | None, limit: int) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, cut to at most
    ``limit`` characters with a trailing ``…`` when longer; ``None`` is empty."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
