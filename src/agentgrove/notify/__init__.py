"""Notifications: tell a person when a gate waits, an agent asks, fails, a run ends or a
budget runs out (``[notify]`` in grove.toml). :mod:`._kinds` decides (pure),
:mod:`._transports` delivers, :mod:`._notifier` runs inside each long-lived worker over the
database's outbox (:mod:`agentgrove.store._notifications`).

The names load on first use: the store and the configuration need :mod:`._kinds` alone, and
the transports' HTTP client (``urllib.request``) cost every ``grove`` command ~20 ms (issue 13).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentgrove._lazy import lazy_exports

if TYPE_CHECKING:
    from agentgrove.notify._kinds import ALL_KINDS, EVENT_KINDS, Notice, NotificationKind
    from agentgrove.notify._notifier import Notifier
    from agentgrove.notify._transports import Command, DeliveryFailed, Webhook

_WHERE: dict[str, str] = {
    "ALL_KINDS": "agentgrove.notify._kinds",
    "EVENT_KINDS": "agentgrove.notify._kinds",
    "Notice": "agentgrove.notify._kinds",
    "NotificationKind": "agentgrove.notify._kinds",
    "Notifier": "agentgrove.notify._notifier",
    "Command": "agentgrove.notify._transports",
    "DeliveryFailed": "agentgrove.notify._transports",
    "Webhook": "agentgrove.notify._transports",
}

__all__ = [
    "ALL_KINDS",
    "EVENT_KINDS",
    "Command",
    "DeliveryFailed",
    "Notice",
    "NotificationKind",
    "Notifier",
    "Webhook",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
