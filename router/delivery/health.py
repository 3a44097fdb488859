"""A destination's health as the delivery path sees it: its circuit breaker's
settings as the scripts take them, whose fault a failed attempt was (only
the destination's failures count toward the breaker), and the one log line
per transition (down, up, held by a Retry-After). The decisions themselves
(when it is down or up, probes, holds) are made in Redis by the delivery
scripts (router.queue.lanes); docs/destination-health.md tells the rules.
"""

from __future__ import annotations

import logging

from router.config import Destination
from router.ops import logs
from router.plugin.sinks import DeliveryFailed
from router.plugin.status_codes import matches, parse_statuses
from router.queue.lanes import BREAKER_OFF, Breaker

# The delivery path's logger (operators filter on it).
log = logging.getLogger("router.worker")


def breaker_of(destination: Destination) -> Breaker:
    """The destination's circuit breaker settings as the scripts take them."""
    if not destination.circuit_breaker:
        return BREAKER_OFF
    cb = destination.settings.circuit_breaker
    return Breaker(
        failing_keys=cb.failing_keys,
        window_ms=int(cb.window * 1000),
        probe_ms=max(1, int(cb.probe_interval * 1000)),
        probe_max_ms=max(1, int(cb.probe_interval_max * 1000)),
        max_hold_ms=int(cb.max_hold * 1000),
    )


class DestinationHealth:
    """One destination's breaker, and how its failures and transitions are
    judged and told."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.settings = destination.settings
        self.breaker = breaker_of(destination)
        # HTTP answers that are the message's fault, not the destination's.
        self._ignored = parse_statuses(self.settings.circuit_breaker.ignore_statuses)

    def blames_message(self, failure: DeliveryFailed | None) -> bool:
        """Whether a failure is the message's own, not the destination's (it
        never counts toward the circuit breaker): the plugin's word, else
        the answer's status against `circuit_breaker.ignore_statuses`."""
        if failure is None:
            return False
        if failure.message_fault is not None:
            return failure.message_fault
        return failure.status is not None and matches(self._ignored, failure.status)

    def log_up(self, resumed: int, why: str) -> None:
        """The one line of a destination that was down and is up again."""
        log.warning(
            "destination %s is up again (%s): %d waiting conversations resume now",
            self.destination.name,
            why,
            resumed,
            extra=logs.fields(destination=self.destination.name, health="up"),
        )

    def log_transition(self, event: str, error: str, hold: float | None) -> None:
        """One line per transition of the destination's health: fail.lua
        reports it to the one attempt that caused it."""
        name, cb = self.destination.name, self.settings.circuit_breaker
        extra = logs.fields(destination=name, health=event, error=error)
        if event == "down":
            log.error(
                "destination %s is down: attempts failed on %d conversations within %gs "
                "with no success (last: %s); only one probe goes out every %gs (up to "
                "%gs) until one succeeds",
                name,
                cb.failing_keys,
                cb.window,
                error,
                cb.probe_interval,
                cb.probe_interval_max,
                extra=extra,
            )
        else:
            log.warning(
                "destination %s asked to wait (Retry-After %gs): nothing is attempted for %gs",
                name,
                hold or 0,
                self.breaker.args(hold)[-1] / 1000,
                extra=extra,
            )
