"""May an agent start now? Pure decisions over plain numbers; no database, clock or I/O.

Three gates stand between a claimable agent and its start, beside the worker's own
``concurrency`` and the budgets:

* **concurrency**: agents executing across every worker, in all, by role and by model
  (``[admission]`` in grove.toml). The store counts inside the claim's transaction, and the
  claim passes over the roles and models that are full (:func:`exclusions`), so the limits are
  exact whatever the number of workers and nothing is claimed only to be put back;
* **pace** (:class:`ModelPacer`): agent starts per minute by model, a token bucket that halves
  on a 429 and holds starts back for the API's Retry-After; the store keeps the buckets in the
  database, so every worker shares one pace per model; a model out of pace is passed over like
  a full one;
* **memory** (:func:`memory_refusal`): no start while available memory is below a threshold.

:class:`AdmissionGate` puts the three together for one worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentgrove.settings import AdmissionSettings  # pydantic: loaded where validated


CLI_PROCESS_MB = 220
"""About what one Claude CLI process takes (DESIGN.md)."""


@dataclass(frozen=True)
class RunningCounts:
    """Agents executing now (parents waiting for their children left out)."""

    total: int
    by_role: Mapping[str, int]
    by_model: Mapping[str, int]


@dataclass(frozen=True)
class Exclusions:
    """What a claim must pass over; ``full`` names why nothing may start at all."""

    roles: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    full: str | None = None


def limits_concurrency(settings: AdmissionSettings) -> bool:
    """Whether any concurrency limit is configured (else the store need not count)."""
    return bool(settings.max_running or settings.per_role or settings.per_model)


def exclusions(
    settings: AdmissionSettings, running: RunningCounts | None, paced_out: Iterable[str] = ()
) -> Exclusions:
    """The roles and models at their limit given ``running`` (``None``: not counted, no
    concurrency limit applies), plus the models out of pace."""
    models = set(paced_out)
    roles: set[str] = set()
    if running is not None:
        limit = settings.max_running
        if limit is not None and running.total >= limit:
            return Exclusions(full=f"{running.total} agents running, limit {limit}")
        roles = {r for r, n in settings.per_role.items() if running.by_role.get(r, 0) >= n}
        models |= {m for m, n in settings.per_model.items() if running.by_model.get(m, 0) >= n}
    return Exclusions(frozenset(roles), frozenset(models))


def slot_reason(
    settings: AdmissionSettings, running: RunningCounts, role: str, model: str
) -> str | None:
    """Why a pending agent of ``role`` on ``model`` cannot start now for want of a slot (for
    display: ``grove ls``), or ``None``."""
    excluded = exclusions(settings, running)
    if excluded.full is not None:
        return f"waiting for a slot: {excluded.full}"
    if role in excluded.roles:
        return f"waiting for a slot: role {role} at its limit of {settings.per_role[role]}"
    if model in excluded.models:
        return f"waiting for a slot: model {model} at its limit of {settings.per_model[model]}"
    return None


CLI_WARMUP_S = 10.0
"""How long a just-started CLI may take to reach its full memory: until then, the available
memory the system reports does not show it yet."""


def memory_refusal(
    settings: AdmissionSettings, available_mb: int | None, starting: int = 0
) -> str | None:
    """Refuse every start while less than ``min_available_mb`` is available, counting the
    ``starting`` agents (started within :data:`CLI_WARMUP_S`) as :data:`CLI_PROCESS_MB` each
    already taken, so a burst of starts cannot all pass one reading. Unknown availability
    never refuses."""
    if available_mb is None:
        return None
    left = available_mb - starting * CLI_PROCESS_MB
    if left >= settings.min_available_mb:
        return None
    counted = (
        f", {starting} agent(s) still starting count {CLI_PROCESS_MB} MB each" if starting else ""
    )
    return (
        f"waiting for memory: {available_mb} MB available{counted}, below min_available_mb "
        f"{settings.min_available_mb} (a CLI process takes about {CLI_PROCESS_MB} MB)"
    )


def memory_allows(settings: AdmissionSettings, available_mb: int | None, starting: int = 0) -> int:
    """How many agents may start at once now, by :func:`memory_refusal`'s rule applied to
    each in turn (each start counted as :data:`CLI_PROCESS_MB` taken): 0 when it refuses;
    unknown availability sets no bound (``sys.maxsize``)."""
    if available_mb is None:
        return sys.maxsize
    left = available_mb - starting * CLI_PROCESS_MB - settings.min_available_mb
    return 0 if left < 0 else left // CLI_PROCESS_MB + 1


BucketState = tuple[float, float | None, float, float, float]
"""A pace bucket shared between processes: ``(rpm, ceiling, tokens, updated, held_until)``."""


@dataclass
class _Bucket:
    rpm: float
    ceiling: float | None
    tokens: float
    updated: float
    held_until: float = 0.0


@dataclass
class ModelPacer:
    """Agent starts per minute, per model, with back-off on rate limiting.

    Each configured model has a token bucket of ``rpm`` tokens, refilled at ``rpm`` per
    minute. :meth:`rate_limited` (the API answered 429) halves the model's pace (once per
    episode: further 429s while starts are held back do not halve it again; never below one
    per minute), empties its bucket and holds its starts until the Retry-After has passed,
    whether or not a pace is configured; every start admitted afterwards raises the pace by one
    per minute, back up to the configured figure. Times are seconds on a clock the caller
    chooses (the worker uses Unix time, which every process sharing the buckets through the
    database agrees on: :meth:`state` and :meth:`load`). Not thread-safe: one worker's claims
    call it from one thread.
    """

    rpm_per_model: Mapping[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False)

    def delay(self, model: str, now: float) -> float:
        """0 when an agent on ``model`` may start now, else the seconds until it may."""
        bucket = self._bucket(model, now)
        if bucket is None:
            return 0.0
        if now < bucket.held_until:
            return bucket.held_until - now
        self._refill(bucket, now)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) * 60.0 / bucket.rpm

    def take(self, model: str, now: float) -> None:
        """Count a start on ``model`` (admitted by :meth:`delay`): one token, and one more
        start per minute of pace, up to the configured figure."""
        bucket = self._bucket(model, now)
        if bucket is None:
            return
        self._refill(bucket, now)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        if bucket.ceiling is None or bucket.rpm < bucket.ceiling:
            bucket.rpm += 1.0
            if bucket.ceiling is not None:
                bucket.rpm = min(bucket.rpm, bucket.ceiling)

    def paced_out(self, now: float) -> set[str]:
        """The models that may not start an agent now."""
        return {model for model in self._buckets if self.delay(model, now) > 0}

    def rate_limited(self, model: str, now: float, retry_after_s: float | None) -> None:
        """The API rate-limited ``model``: slow down and hold back (see class doc)."""
        bucket = self._bucket(model, now)
        if bucket is None:
            bucket = self._buckets[model] = _Bucket(rpm=60.0, ceiling=None, tokens=0.0, updated=now)
        self._refill(bucket, now)
        if now >= bucket.held_until:  # the 429s of one episode (the CLI retrying) halve once
            bucket.rpm = max(1.0, bucket.rpm / 2)
        bucket.tokens = 0.0
        bucket.held_until = max(bucket.held_until, now + (retry_after_s or 0.0))
        # Tokens accrue only after the hold: no burst of starts the moment it ends.
        bucket.updated = bucket.held_until

    def state(self) -> dict[str, BucketState]:
        """Every bucket as ``(rpm, ceiling, tokens, updated, held_until)``, to be shared."""
        return {
            model: (b.rpm, b.ceiling, b.tokens, b.updated, b.held_until)
            for model, b in self._buckets.items()
        }

    def load(self, state: Mapping[str, BucketState]) -> None:
        """Take the buckets :meth:`state` gave (of this or another process) as the truth;
        configured models without one start full, as in a new pacer."""
        self._buckets = {
            model: _Bucket(rpm, ceiling, tokens, updated, held_until)
            for model, (rpm, ceiling, tokens, updated, held_until) in state.items()
        }

    def pace(self, model: str) -> float | None:
        """The model's current starts per minute (``None``: unpaced)."""
        bucket = self._buckets.get(model)
        return None if bucket is None else bucket.rpm

    def _bucket(self, model: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(model)
        if bucket is None and model in self.rpm_per_model:
            rpm = float(self.rpm_per_model[model])
            bucket = self._buckets[model] = _Bucket(rpm=rpm, ceiling=rpm, tokens=rpm, updated=now)
        return bucket

    @staticmethod
    def _refill(bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated)
        capacity = max(1.0, bucket.rpm)
        bucket.tokens = min(capacity, bucket.tokens + elapsed * bucket.rpm / 60.0)
        bucket.updated = now


@dataclass
class AdmissionGate:
    """One worker's admission: the store calls :meth:`exclusions` inside each claim's
    transaction (``running`` counts on demand, only when a concurrency limit is set) and
    :meth:`started` when the claim went through."""

    settings: AdmissionSettings
    pacer: ModelPacer
    clock: Callable[[], float]

    def exclusions(self, running: Callable[[], RunningCounts]) -> Exclusions:
        counted = running() if limits_concurrency(self.settings) else None
        return exclusions(self.settings, counted, self.pacer.paced_out(self.clock()))

    def started(self, model: str) -> None:
        self.pacer.take(model, self.clock())
