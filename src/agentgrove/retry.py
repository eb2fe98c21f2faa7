"""When to try a failed attempt again. Pure: no clock, no I/O; the caller supplies randomness."""

from __future__ import annotations

from dataclasses import dataclass

from agentgrove.models import ErrorKind

BASE_DELAY_S = 15.0
MAX_DELAY_S = 600.0


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float = 0.0
    reason: str = ""


def backoff_s(
    attempt: int,
    *,
    jitter: float = 0.0,
    retry_after_s: float | None = None,
    base_s: float = BASE_DELAY_S,
) -> float:
    """min(600, base·2^(attempt-1)) plus up to 10 % ``jitter`` (0..1), at least Retry-After."""
    base = min(MAX_DELAY_S, base_s * float(2 ** max(0, attempt - 1)))
    delay = min(MAX_DELAY_S, base * (1 + max(0.0, min(1.0, jitter)) * 0.1))
    return max(delay, retry_after_s or 0.0)


def decide(
    kind: ErrorKind | None,
    attempt: int,
    max_attempts: int,
    *,
    jitter: float = 0.0,
    retry_after_s: float | None = None,
    base_s: float = BASE_DELAY_S,
) -> RetryDecision:
    """Retry transient failures until ``max_attempts``; never retry anything else."""
    if kind is None or not kind.transient:
        return RetryDecision(False, reason=f"{kind.value if kind else 'unknown'} is not retried")
    if attempt >= max_attempts:
        return RetryDecision(False, reason=f"gave up after {attempt} of {max_attempts} attempts")
    return RetryDecision(
        True, backoff_s(attempt, jitter=jitter, retry_after_s=retry_after_s, base_s=base_s)
    )
