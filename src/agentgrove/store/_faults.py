"""Fault injection for crash tests: die right after a chosen commit point.

``GROVE_FAULT_KILL_AFTER=<event kind>`` (e.g. ``agent.completed``) makes the process SIGKILL
itself immediately after the first transaction that recorded such an event has committed: the
moment a real crash is hardest to survive, because the commit is durable but nothing after it
ran. Unset (always, outside tests), it costs one attribute check per transaction.
"""

from __future__ import annotations

import os
import signal
import threading

KILL_AFTER_ENV = "GROVE_FAULT_KILL_AFTER"


class CrashPoint:
    def __init__(self) -> None:
        self.kill_after = os.environ.get(KILL_AFTER_ENV) or None
        self._hit = threading.local()

    def begin(self) -> None:
        """A write transaction starts (on this thread)."""
        if self.kill_after is not None:
            self._hit.value = False

    def note(self, kind: str) -> None:
        """The current transaction records an event of ``kind``."""
        if self.kill_after is not None and kind == self.kill_after:
            self._hit.value = True

    def committed(self) -> None:
        """The current transaction committed."""
        if self.kill_after is not None and getattr(self._hit, "value", False):
            os.kill(os.getpid(), signal.SIGKILL)
