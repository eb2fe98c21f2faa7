"""Fault injection for crash tests, at the store's commit points.

Two seams, both read from the environment when a :class:`~agentgrove.store.Store` is built:

``GROVE_FAULT_KILL_AFTER=<event kind>`` (e.g. ``agent.completed``) makes the process SIGKILL
itself immediately after the first transaction that recorded such an event has committed: the
moment a real crash is hardest to survive, because the commit is durable but nothing after it ran.

``GROVE_FAULT_DB=<point>:<before|after>[:N]`` makes the Nth write transaction (default the
first) at commit ``point`` raise :class:`sqlalchemy.exc.OperationalError`, as a dropped connection
does, once per process:

* ``before``: just before the commit; the transaction rolls back and nothing it did is kept;
* ``after``: just after the commit; the writes are durable but the caller sees an error (the
  hard case: the caller cannot tell the two apart).

Points, told apart by what the transaction recorded:

* ``claim``: a claim that took an agent (event ``agent.claimed``);
* ``heartbeat``: a lease renewal (the store marks it; it records no event);
* ``complete``: an agent's completion (event ``agent.completed``);
* ``enqueue``: a completion that also inserted ready workflow dependents (``agent.completed``
  and ``agent.spawned`` in one transaction).

Unset (always, outside tests), each seam costs one attribute check per transaction and event.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import OperationalError

from agentgrove.errors import ConfigError

KILL_AFTER_ENV = "GROVE_FAULT_KILL_AFTER"
DB_FAULT_ENV = "GROVE_FAULT_DB"
HEARTBEAT = "heartbeat"
"""The mark :meth:`CrashPoint.mark` gets for a lease renewal (a transaction with no event)."""

_POINTS: dict[str, Callable[[set[str]], bool]] = {
    "claim": lambda seen: "agent.claimed" in seen,
    "heartbeat": lambda seen: HEARTBEAT in seen,
    "complete": lambda seen: "agent.completed" in seen,
    "enqueue": lambda seen: {"agent.completed", "agent.spawned"} <= seen,
}


class InjectedFault(ConnectionError):
    """The driver-level cause of an injected :class:`OperationalError`."""


@dataclass(frozen=True)
class DbFault:
    """Fail the ``nth`` write transaction at ``point``, ``when`` relative to its commit."""

    point: str
    when: Literal["before", "after"]
    nth: int = 1

    @classmethod
    def parse(cls, text: str) -> DbFault:
        """``<point>:<before|after>[:N]``; :class:`ConfigError` naming the problem otherwise."""
        parts = text.strip().split(":")
        usage = f"{DB_FAULT_ENV}={text!r}: expected <point>:<before|after>[:N] with point one of "
        usage += ", ".join(_POINTS)
        if len(parts) not in (2, 3) or parts[0] not in _POINTS:
            raise ConfigError(usage)
        when = parts[1]
        if when not in ("before", "after"):
            raise ConfigError(usage)
        nth = 1
        if len(parts) == 3:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                raise ConfigError(usage)
            nth = int(parts[2])
        return cls(parts[0], "before" if when == "before" else "after", nth)

    def error(self) -> OperationalError:
        return OperationalError(
            f"-- {self.point} commit",
            None,
            InjectedFault(f"grove fault: connection lost {self.when} {self.point} #{self.nth}"),
        )


class CrashPoint:
    """Watches each write transaction of one store (per thread) and fires the configured fault.

    The store calls :meth:`begin` when a write transaction starts, :meth:`note` for each event it
    records, :meth:`mark` for a commit point without an event, :meth:`before_commit` at the end of
    the transaction's body and :meth:`committed` once it has committed.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.kill_after = environ.get(KILL_AFTER_ENV) or None
        db = environ.get(DB_FAULT_ENV) or None
        self.db_fault = DbFault.parse(db) if db is not None else None
        self.armed = self.kill_after is not None or self.db_fault is not None
        self._tx = threading.local()
        self._lock = threading.Lock()
        self._serial = threading.RLock()
        self._seen_at_point = 0

    @contextmanager
    def serialised(self) -> Iterator[None]:
        """Around one write transaction. With a kill point armed, the process's write
        transactions run one at a time, so none of another thread (a claim woken by this very
        commit) can commit between the kill point's commit and the kill: "killed right after
        the commit" stays exact with store calls on threads."""
        if self.kill_after is None:
            yield
            return
        with self._serial:
            yield

    def begin(self) -> None:
        """A write transaction starts (on this thread)."""
        if self.armed:
            self._tx.seen = set()

    def note(self, kind: str) -> None:
        """The current transaction records an event of ``kind``."""
        if self.armed:
            self._seen().add(kind)

    def mark(self, point: str) -> None:
        """The current transaction is the commit point ``point`` (one that records no event)."""
        if self.armed:
            self._seen().add(point)

    def before_commit(self) -> None:
        """The transaction's body is done; raising here rolls it back."""
        if self.db_fault is not None and self.db_fault.when == "before":
            self._maybe_fail(self.db_fault)

    def committed(self) -> None:
        """The current transaction committed."""
        if not self.armed:
            return
        if self.kill_after is not None and self.kill_after in self._seen():
            os.kill(os.getpid(), signal.SIGKILL)
        if self.db_fault is not None and self.db_fault.when == "after":
            self._maybe_fail(self.db_fault)

    def _seen(self) -> set[str]:
        seen: set[str] | None = getattr(self._tx, "seen", None)
        if seen is None:
            seen = self._tx.seen = set()
        return seen

    def _maybe_fail(self, fault: DbFault) -> None:
        if not _POINTS[fault.point](self._seen()):
            return
        with self._lock:  # transactions of several threads count towards one N
            self._seen_at_point += 1
            fire = self._seen_at_point == fault.nth
        if fire:
            raise fault.error()
