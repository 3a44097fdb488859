"""When to retry a failed attempt, and when to give up: one decision."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from router.config import RetryPolicy
from router.queue.lanes import Outcome

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


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to a message after a failure."""

    outcome: Outcome  # RETRY after `delay`, DEAD_LETTER or BLOCK
    delay: float  # seconds before the next attempt (RETRY only)
    reason: str  # the rule that decided, in words for the log
    rule: Literal["backoff", "max_attempts", "max_age", "permanent"] = "backoff"

    @property
    def gives_up(self) -> bool:
        return self.outcome is not Outcome.RETRY


def decide(
    policy: RetryPolicy,
    attempts: int,
    age_seconds: float,
    retry_after: float | None = None,
    rand: random.Random | None = None,
    permanent: bool = False,
) -> Decision:
    """The next step for a message that has failed `attempts` times (the
    count fail.lua and claim.lua keep; lease expiries included) and arrived
    `age_seconds` ago: retry after the backoff (lengthened by a Retry-After),
    or give up as `on_exhausted` says, once `max_attempts` or `max_age` is
    reached. A message never tried (attempts 0) always gets its try, however
    old: one just unblocked or replayed by an operator included. A
    `permanent` failure (the sink said no retry can succeed: DeliveryFailed's
    `permanent`) gives up at once, as `on_exhausted` says."""
    give_up = Outcome.BLOCK if policy.on_exhausted == "block" else Outcome.DEAD_LETTER
    if permanent:
        return Decision(give_up, 0.0, "a permanent failure: no retry can succeed", "permanent")
    if attempts > 0 and policy.max_attempts is not None and attempts >= policy.max_attempts:
        reason = f"retry.max_attempts ({policy.max_attempts}) reached"
        return Decision(give_up, 0.0, reason, "max_attempts")
    if attempts > 0 and policy.max_age is not None and age_seconds >= policy.max_age:
        reason = f"older than retry.max_age ({age_seconds:.0f}s)"
        return Decision(give_up, 0.0, reason, "max_age")
    delay = backoff_seconds(policy, attempts, retry_after, rand)
    return Decision(Outcome.RETRY, delay, f"retrying in {delay:.2f}s")
