"""May this agent start now? Pure decisions over plain numbers; no database, clock or I/O.

Three gates stand between a claimable agent and its start, beside the worker's own
``concurrency`` and the budgets:

* **concurrency** (:func:`concurrency_refusal`): agents executing across every worker, in all,
  by role and by model (``[admission]`` in grove.toml). The store counts, inside the claim's
  transaction, so the limits hold whatever the number of workers;
* **pace** (:class:`ModelPacer`): agent starts per minute by model, a token bucket per worker
  process that halves on a 429 and holds starts back for the API's Retry-After;
* **memory** (:func:`memory_refusal`): no start while available memory is below a threshold.

A refused agent is not failed: it goes back to pending with the reason shown and a short
delay (:data:`RECHECK_S`), and the worker claims the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agentgrove.config import AdmissionSettings

RECHECK_S = 1.0
"""How soon an agent refused a concurrency slot is looked at again."""

CLI_PROCESS_MB = 220
"""About what one Claude CLI process takes (DESIGN.md)."""


@dataclass(frozen=True)
class Running:
    """Agents executing now (a waiting parent excluded): in all, of a role, of a model."""

    total: int
    role: int
    model: int


@dataclass(frozen=True)
class Refusal:
    """Why an agent may not start yet, and when to look again."""

    reason: str
    retry_s: float


def limits_concurrency(settings: AdmissionSettings) -> bool:
    """Whether any concurrency limit is configured (else the store need not count)."""
    return bool(settings.max_running or settings.per_role or settings.per_model)


def concurrency_refusal(
    settings: AdmissionSettings, role: str, model: str, running: Running
) -> Refusal | None:
    """Refuse when starting one more agent of ``role`` on ``model`` would pass a limit;
    ``running`` does not count the agent being decided on."""
    checks = [
        (settings.max_running, running.total, "agents running"),
        (settings.per_role.get(role), running.role, f"role {role} running"),
        (settings.per_model.get(model), running.model, f"model {model} running"),
    ]
    for limit, count, what in checks:
        if limit is not None and count >= limit:
            return Refusal(f"waiting for a slot: {count} {what}, limit {limit}", RECHECK_S)
    return None


def memory_refusal(settings: AdmissionSettings, available_mb: int | None) -> str | None:
    """Refuse every start while less than ``min_available_mb`` is available (unknown
    availability never refuses)."""
    if available_mb is None or available_mb >= settings.min_available_mb:
        return None
    return (
        f"waiting for memory: {available_mb} MB available, below min_available_mb "
        f"{settings.min_available_mb} (a CLI process takes about {CLI_PROCESS_MB} MB)"
    )


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
    per minute, back up to the configured figure. Times are seconds on any monotonic clock the
    caller chooses. Not thread-safe: one worker's claims call it from one thread.
    """

    rpm_per_model: Mapping[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False)

    def start_delay(self, model: str, now: float) -> float:
        """0 when an agent on ``model`` may start now (and the start is counted), else the
        seconds until it may."""
        bucket = self._bucket(model, now)
        if bucket is None:
            return 0.0
        if now < bucket.held_until:
            return bucket.held_until - now
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            if bucket.ceiling is None or bucket.rpm < bucket.ceiling:
                bucket.rpm += 1.0
                if bucket.ceiling is not None:
                    bucket.rpm = min(bucket.rpm, bucket.ceiling)
            return 0.0
        return (1.0 - bucket.tokens) * 60.0 / bucket.rpm

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
