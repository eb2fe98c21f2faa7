"""Group commit: the same kind of write from many concurrent attempts, made in one call.

A caller :meth:`GroupCommit.submit`\\ s an item and waits for its result. A caller that finds
no flush under way leads: it takes what is queued (its own item first in line), makes it in one
call of ``flush`` (one transaction), hands each caller its result, and, once its own item is
made, hands the lead to the first caller still queued. While a flush is under way new items
queue for the next one, so the busier the workers, the larger each batch, and a lone caller
waits for nobody: a worker's endings, workspace rows and reads of children cost one
transaction, one thread hop and a few statements per batch instead of per agent.

Contract, for ``flush(items) -> results`` (one result per item, in order):

* A flush runs shielded from cancellation, to its end (a thread cannot be interrupted
  anyway): every caller of a batch learns its outcome, even when the caller that led it was
  cancelled meanwhile; a cancelled caller whose item was not taken yet takes it back (nothing
  is written for it); one cancelled after its item was taken gets the cancellation, and its
  item is made all the same (as a store call on a thread would have been).
* An exception from a batch of several, when ``isolate(exc)`` holds, is retried item by item,
  so that one item's fault (a bad row, a bug) fails only its own caller; otherwise, and for a
  batch of one, every caller of the batch gets it (a database outage: each caller retries as
  it would have alone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

I = TypeVar("I")  # noqa: E741 - the item, as in the contract
R = TypeVar("R")


@dataclass(eq=False)
class _Entry(Generic[I, R]):
    item: I
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set once the item is made (``made``) or the lead is handed to this caller (``lead``)."""
    taken: bool = False
    made: bool = False
    lead: bool = False
    result: R | None = None
    error: BaseException | None = None

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # made: set by the flush


class GroupCommit(Generic[I, R]):
    """See the module doc. One per kind of write and event loop; not thread-safe (its callers
    are tasks of one event loop)."""

    def __init__(
        self,
        flush: Callable[[Sequence[I]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 256,
        isolate: Callable[[BaseException], bool] = lambda exc: True,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._isolate = isolate
        self._queue: list[_Entry[I, R]] = []
        self._leading = False
        self.batches = 0
        """Flushes made so far (statistics: items per batch = items / batches)."""
        self.items = 0

    async def submit(self, item: I) -> R:
        """``item`` made, with the others queued meanwhile: its result, or its exception."""
        entry: _Entry[I, R] = _Entry(item)
        self._queue.append(entry)
        if self._leading:
            try:
                await entry.wake.wait()
            except BaseException:  # cancelled while queued
                if not entry.taken:
                    self._queue.remove(entry)
                    if entry.lead:
                        self._hand_on()
                raise
            if entry.made:
                return entry.outcome()
        else:
            self._leading = True
        try:
            while not entry.made:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                with anyio.CancelScope(shield=True):
                    await self._make(batch)
        finally:
            self._hand_on()
        return entry.outcome()

    def _hand_on(self) -> None:
        """The lead to the first caller queued, or to nobody."""
        if self._queue:
            self._queue[0].lead = True
            self._queue[0].wake.set()
        else:
            self._leading = False

    async def _make(self, batch: list[_Entry[I, R]]) -> None:
        for entry in batch:
            entry.taken = True
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._flush([e.item for e in batch])
            if len(results) != len(batch):
                raise AssertionError(f"flush gave {len(results)} results for {len(batch)} items")
        except Exception as exc:
            if len(batch) > 1 and self._isolate(exc):
                for entry in batch:
                    await self._make_alone(entry)
            else:
                self._made(batch, error=exc)
            return
        except BaseException as exc:  # not a cancellation (shielded): the process is ending
            self._made(batch, error=exc)
            raise
        for entry, result in zip(batch, results, strict=True):
            entry.result = result
        self._made(batch)

    async def _make_alone(self, entry: _Entry[I, R]) -> None:
        try:
            [entry.result] = await self._flush([entry.item])
        except Exception as exc:
            entry.error = exc
        self._made([entry])

    @staticmethod
    def _made(batch: list[_Entry[I, R]], error: BaseException | None = None) -> None:
        for entry in batch:
            if error is not None:
                entry.error = error
            entry.made = True
            entry.wake.set()
