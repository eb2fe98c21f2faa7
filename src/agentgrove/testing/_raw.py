"""Verbatim HTTP traffic for the model server: a reply sent byte for byte, and an exchange
handed whole to a forwarding handler (the recording proxy). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["Exchange", "Forward", "RawReply"]


@dataclass(frozen=True)
class RawReply:
    """A reply sent as given: ``status``, ``headers`` (hop-by-hop ones are the server's), then
    ``body`` with a ``content-length``; or, when ``chunks`` is given, each chunk as it comes and
    the connection closed after the last (a stream relayed while it arrives)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: Iterable[bytes] | None = None

    def describe(self) -> str:
        """Short description for reports."""
        kind = self.headers.get("content-type", "").split(";")[0] or "no content-type"
        return f"RawReply({self.status}, {kind})"


@dataclass(frozen=True)
class Exchange:
    """One incoming request, untouched: ``method``, ``path`` (with its query), ``headers`` as
    received (names lower-cased) and the ``body`` bytes."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


Forward: TypeAlias = Callable[[Exchange], RawReply]
"""A handler given every request a :class:`ModelServer` receives (any verb, any path)."""
