"""The notifier: a worker's side job that delivers the outbox's notifications.

Contracts:

* It never holds up the worker: its database calls and deliveries run on threads of their
  own (its own limiters), each delivery within ``timeout_s``, and it holds at most ``queue``
  notifications at once: it claims only what it has room for, and the database keeps the
  rest (nothing is dropped).
* One worker sends each notification: a claim is the store's conditional UPDATE with a lease
  (:mod:`agentgrove.store._notifications`). A worker that dies after sending but before
  recording it lets another send it again when the lease runs out: delivery is at least
  once, and receivers can de-duplicate on the notification's id.
* A failed delivery is retried after ``retry_base_s`` doubling (at most ``retry_max_s``),
  ``retries`` times; then it is ``failed`` (counted in ``/metrics``) and logged once.
* :meth:`Notifier.run` returns soon after ``stop`` is set: deliveries under way finish (each
  within its timeout), claimed ones not yet tried are handed back for any worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream

from agentgrove.errors import StoreUnavailable
from agentgrove.notify._kinds import Notice, payload, retry_delay_s, slack_body
from agentgrove.notify._transports import Command, DeliveryFailed, Transport, Webhook
from agentgrove.secrets import redact
from agentgrove.text import visible

if TYPE_CHECKING:
    from agentgrove.settings import NotifySettings
    from agentgrove.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

SENDERS = 4
"""Deliveries under way at once, per worker."""


def transports(settings: NotifySettings, cwd: str | None = None) -> list[Transport]:
    """The transports ``[notify]`` names: the webhook, then the command."""
    found: list[Transport] = []
    if settings.webhook is not None:
        found.append(Webhook(settings.webhook, settings.timeout_s))
    if settings.command is not None:
        found.append(Command(settings.command, settings.timeout_s, cwd))
    return found


class Notifier:
    def __init__(
        self,
        store: Store,
        settings: NotifySettings,
        *,
        owner: str,
        cwd: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``owner``: the lease owner id (the worker's); ``cwd``: where a command runs."""
        self.store = store
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self._transports = transports(settings, cwd)
        self._db_limiter = anyio.CapacityLimiter(1)
        self._send_limiter = anyio.CapacityLimiter(SENDERS)
        self._held: dict[int, int] = {}  # claimed and not settled: event id -> attempt
        self._stopping = False
        self.failed = 0
        self.sent = 0

    async def run(self, stop: anyio.Event) -> None:
        send, receive = anyio.create_memory_object_stream[Notice](self.settings.queue)
        async with anyio.create_task_group() as tg:
            for _ in range(SENDERS):
                tg.start_soon(self._sender, receive.clone())
            receive.close()
            async with send:
                while not stop.is_set():
                    room = self.settings.queue - len(self._held)
                    if room > 0:
                        claimed: list[Notice] = await self._db_or(
                            [],
                            self.store.claim_notifications,
                            self.owner,
                            room,
                            self.settings.lease_s,
                        )
                        for notice in claimed:
                            self._held[notice.id] = notice.attempt
                            send.send_nowait(notice)  # room was made for it
                    with anyio.move_on_after(self.settings.poll_s):
                        await stop.wait()
                self._stopping = True
        untried = [(event_id, attempt) for event_id, attempt in self._held.items()]
        if untried:
            await self._db_or(None, self.store.release_notifications, untried, self.owner)

    async def _sender(self, receive: ObjectReceiveStream[Notice]) -> None:
        async with receive:
            async for notice in receive:
                if self._stopping:
                    continue  # left in _held: handed back when run() ends
                await self._deliver(notice)
                self._held.pop(notice.id, None)

    async def _deliver(self, notice: Notice) -> None:
        body = payload(notice)
        problems: list[str] = []
        for transport in self._transports:
            sent = slack_body(notice) if self._slack(transport) else body
            try:
                # A hard cap beyond the transport's own timeouts: a stuck thread is left
                # behind rather than waited for.
                with anyio.fail_after(2 * self.settings.timeout_s + 5):
                    await anyio.to_thread.run_sync(
                        transport.send,
                        sent,
                        notice.id,
                        limiter=self._send_limiter,
                        abandon_on_cancel=True,
                    )
            except DeliveryFailed as exc:
                problems.append(str(exc))
            except TimeoutError:
                problems.append(f"no answer within {2 * self.settings.timeout_s + 5:g} s")
        if not problems:
            self.sent += 1
            await self._db_or(
                False, self.store.notification_sent, notice.id, self.owner, notice.attempt
            )
            return
        error = "; ".join(problems)
        delay = retry_delay_s(
            notice.attempt,
            self.settings.retries,
            self.settings.retry_base_s,
            self.settings.retry_max_s,
        )
        retry_at = None if delay is None else self.clock() + timedelta(seconds=delay)
        recorded = await self._db_or(
            False,
            self.store.notification_failed,
            notice.id,
            self.owner,
            notice.attempt,
            error,
            retry_at=retry_at,
        )
        if retry_at is None and recorded:
            self.failed += 1
            # Once per notification, when it is given up; the retries before are not news.
            log.warning(
                "%s notification %d not delivered after %d attempts: %s",
                notice.kind.value,
                notice.id,
                notice.attempt,
                visible(redact(error), newlines=False),
            )
        else:
            log.debug("notification %d: %s (retrying)", notice.id, error)

    def _slack(self, transport: Transport) -> bool:
        return isinstance(transport, Webhook) and self.settings.format == "slack"

    async def _db_or(self, fallback: T, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call`` on the notifier's database thread; ``fallback`` when the database cannot
        be used now (what was claimed stays leased and comes back when the lease runs out)."""
        try:
            return await anyio.to_thread.run_sync(
                lambda: call(*args, **kwargs), limiter=self._db_limiter
            )
        except StoreUnavailable as exc:
            log.debug("database unavailable (%s); trying later", exc)
            return fallback
