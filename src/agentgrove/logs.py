"""What grove's long-lived processes say on stderr, as text for people or JSON for log shippers.

The core never prints: it logs through :func:`say` (a ``logging`` call carrying an ``event``
name and, where there is one, the ``agent`` and ``run`` it concerns). :func:`configure` installs
the one handler on the ``agentgrove`` logger:

- ``text`` (the default): one line per record, ``grove worker: <message>`` (the prefix names
  the part that spoke), as grove printed before it logged;
- ``json``: one object per line, ``{"time", "level", "event", "agent", "run", "worker",
  "message"}``, ``time`` in UTC ISO 8601 and ``worker`` the id of this process's worker.

Without :func:`configure` (grove used as a library) records go wherever the application's
logging sends them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from agentgrove.text import visible

__all__ = ["LOG_FORMATS", "LogFormat", "configure", "say"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

ROOT = "agentgrove"
_PREFIX = {
    "agentgrove.worker": "grove worker",
    "agentgrove.store._listen": "grove worker",
    "agentgrove.cli.worker": "grove worker",
    "agentgrove.cli.up": "grove up",
    "agentgrove.notify._notifier": "grove notify",
}
_FIELDS = ("event", "agent", "run")
_OURS = "_grove_handler"  # marks the handler configure() installed


def say(
    logger: logging.Logger,
    event: str,
    message: str,
    *,
    level: int = logging.WARNING,
    agent: str | None = None,
    run: str | None = None,
) -> None:
    """Log ``message`` as ``event`` (a dotted name: ``worker.lease_lost``) about ``agent`` or
    ``run``. Warnings by default: the core speaks when something went wrong."""
    logger.log(level, message, extra={"event": event, "agent": agent, "run": run})


def _redacted(record: logging.LogRecord) -> str:
    # Imported on the first record: compiling the patterns cost every ``grove`` command, which
    # configures logging first and mostly logs nothing, ~4 ms (issue 13).
    from agentgrove.secrets import redact

    return str(redact(record.getMessage()))


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = _PREFIX.get(record.name, "grove")
        return f"{prefix}: {visible(_redacted(record), newlines=False)}"


class _Json(logging.Formatter):
    def __init__(self, worker: str | None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        fields = {name: getattr(record, name, None) for name in _FIELDS}
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": fields["event"] or record.name.removeprefix(f"{ROOT}."),
            "agent": fields["agent"],
            "run": fields["run"],
            "worker": getattr(record, "worker", None) or self.worker,
            "message": _redacted(record),
        }
        # ASCII only: a control or bidirectional character in agent text arrives as \\uXXXX,
        # never raw, should the lines reach a terminal.
        return json.dumps(entry)


class _Stderr:
    """Whatever ``sys.stderr`` is when a record is written (the shell swaps it while its
    prompt is shown)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(
    fmt: LogFormat = "text", *, worker: str | None = None, stream: IO[str] | Any = None
) -> None:
    """Send the ``agentgrove`` logger's records (INFO and up) to ``stream`` (stderr) in
    ``fmt``; called again, it replaces the handler it installed before."""
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else _Stderr())
    handler.setFormatter(_Json(worker) if fmt == "json" else _Text())
    setattr(handler, _OURS, True)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
