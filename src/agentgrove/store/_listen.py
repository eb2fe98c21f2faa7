"""Wake-ups across processes on PostgreSQL: ``NOTIFY`` when work may have become claimable,
``LISTEN`` in each worker, so a spawn in one process starts in another at once instead of at
the next poll.

A transaction that inserts agents, finishes or releases one, cancels, sweeps, or moves a
workflow run forward calls :func:`announce_work`; PostgreSQL delivers the notification when
(and only if) it commits. A worker runs :func:`listen_for_work` in a thread on a connection of
its own (autocommit, outside the pool) and pokes its wake-up for each notification. Polling
stays as the fallback: a notification can be missed while the connection is re-established,
and SQLite has no such channel.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from agentgrove.logs import say

CHANNEL = "grove_work"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
RECONNECT_S = (0.2, 5.0)
"""Pause before listening again after the connection failed: from the first figure, doubling
at each failure in a row up to the second, with jitter (each pause drawn from its upper half)."""
_CHECK_STOP_S = 0.5
_KEEPALIVE = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

log = logging.getLogger(__name__)


def announce_work(conn: Connection) -> None:
    """Inside a write transaction: tell listening workers when it commits (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


def listen_for_work(engine: Engine, on_work: Callable[[], None], stop: threading.Event) -> None:
    """Block, calling ``on_work`` for each notification, until ``stop`` is set (checked every
    half second). Returns at once unless ``engine`` is PostgreSQL with psycopg. A lost
    connection is reported once per outage on stderr and opened again (workers poll meanwhile);
    ``on_work`` must be thread-safe."""
    if engine.dialect.name != "postgresql":
        return
    try:
        import psycopg
    except ImportError:  # another driver: polling only
        return

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conninfo = psycopg.conninfo.make_conninfo(url, **_KEEPALIVE)
    failing = False
    failures = 0
    while not stop.is_set():
        try:
            # A short connect timeout and keepalives: an unreachable server neither holds up
            # shutdown for long nor leaves a dead connection listening forever.
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                if failing:
                    say(log, "worker.listening", "listening for work again", level=logging.INFO)
                failing = False
                failures = 0
                on_work()  # anything committed while we were not listening
                while not stop.is_set():
                    for _ in conn.notifies(timeout=_CHECK_STOP_S, stop_after=1):
                        on_work()
        except psycopg.Error as exc:
            if stop.is_set():
                return
            if not failing:
                detail = " ".join(str(exc).split())
                say(
                    log,
                    "worker.listen_failed",
                    f"listening for work failed ({detail}); polling meanwhile",
                )
            failing = True
            first_s, cap_s = RECONNECT_S
            pause = min(cap_s, first_s * 2.0**failures) * (0.5 + random.random() / 2)
            failures += 1
            stop.wait(pause)
