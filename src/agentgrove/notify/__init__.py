"""Notifications: tell a person when a gate waits, an agent asks, fails, a run ends or a
budget runs out (``[notify]`` in grove.toml). :mod:`._kinds` decides (pure),
:mod:`._transports` delivers, :mod:`._notifier` runs inside each long-lived worker over the
database's outbox (:mod:`agentgrove.store._notifications`)."""

from agentgrove.notify._kinds import ALL_KINDS, EVENT_KINDS, Notice, NotificationKind
from agentgrove.notify._notifier import Notifier
from agentgrove.notify._transports import Command, DeliveryFailed, Webhook

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
