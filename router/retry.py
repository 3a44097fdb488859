"""When to retry a failed attempt, and when to give up."""

from __future__ import annotations

import random

from router.config import RetryPolicy

# A Retry-After longer than this is taken as this: a bot that asks for a day
# off should not park a conversation for a day without anyone noticing.
MAX_RETRY_AFTER = 3600.0


def backoff_seconds(
    policy: RetryPolicy,
    attempts: int,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float:
    """Delay before attempt `attempts + 1`: exponential from `initial`, capped
    at `max_delay`, spread by ±`jitter`.

    A Retry-After from the destination may lengthen that delay (up to
    MAX_RETRY_AFTER) but never shorten it: a destination answering 429 with
    `Retry-After: 0` (or a date in the past) would otherwise be hammered in a
    tight loop. Negative, NaN or missing values change nothing."""
    delay = _policy_delay(policy, attempts, rand)
    # NaN compares false, a negative value is below any delay: both ignored.
    if retry_after is not None and retry_after > delay:
        return max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def _policy_delay(policy: RetryPolicy, attempts: int, rand: random.Random | None) -> float:
    try:
        base = policy.initial * policy.factor ** max(0, attempts - 1)
    except OverflowError:  # ~1000 attempts of a message retried forever
        base = policy.max_delay
    base = min(base, policy.max_delay)
    spread = (rand or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, min(policy.max_delay, base * (1 + spread)))


def exhausted(policy: RetryPolicy, attempts: int, age_seconds: float) -> bool:
    """True when a message that failed `attempts` times should be dead-lettered."""
    if policy.max_attempts is not None and attempts >= policy.max_attempts:
        return True
    return policy.max_age is not None and age_seconds >= policy.max_age
