"""Wrong admin or metrics tokens, throttled per client address.

Anyone who can reach `/ui/login`, `/admin` or `/metrics` can guess tokens;
unthrottled, one client tried 1,640 a second. Here each client (its IP
address; an IPv6 client by its /64, which one host usually holds whole)
gets FREE_FAILURES wrong tokens, then must wait before the next attempt:
1 s, then twice as long after each further wrong one, up to MAX_DELAY.
While it waits every attempt is refused with 429 and Retry-After, the right
token too (else waiting would not slow guessing). The right token forgets
the client's failures; so does FORGET_AFTER without a wrong one. Every wrong
token is logged (one line: the client, where, how many in a row; never the
token), and the first refusal of each wait; so the log grows with the
throttle's pace, not the attacker's.

The table is per process, in memory, not in Redis: the check must work
while Redis is down (the dashboard is where an operator looks then), a
failed guess must not cost a Redis round trip an attacker could spend, and
nothing about it needs to outlive the process. With N processes a client
gets N times the budget, still a handful of guesses a minute against a
token of 32 random bytes. It holds at most MAX_CLIENTS addresses; past them
the one idle longest is forgotten: a client rotating through more addresses
than that gets no more guesses than fresh addresses give it anyway.

Behind a proxy whose X-Forwarded-For uvicorn does not trust
(FORWARDED_ALLOW_IPS; loopback by default) the client is the proxy, and one
guesser behind it makes every client behind it wait.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from router.http.errors import ApiError

log = logging.getLogger("router.auth")

FREE_FAILURES = 5  # wrong tokens a client may send before it has to wait
FIRST_DELAY = 1.0  # its first wait (seconds); doubled by each further failure
MAX_DELAY = 300.0  # longest wait
FORGET_AFTER = 900.0  # a client with no wrong token for this long starts afresh
MAX_CLIENTS = 10_000  # addresses remembered (about 2 MB at most)


class TooManyWrongTokens(ApiError):
    def __init__(self, client: str, wait: int) -> None:
        super().__init__(
            429,
            f"too many wrong tokens from {client}: try again in {wait} s",
            {"Retry-After": str(wait)},
        )
        self.wait = wait


@dataclass
class _Client:
    failures: int = 0
    until: float = 0.0  # before this (clock), its attempts are refused
    last: float = 0.0  # its last wrong token (clock)
    refusal_logged: bool = False  # during the current wait


def client_key(host: str | None) -> str:
    """Who a client is: its IPv4 address, the /64 of its IPv6 address, or
    the text it came as (a Unix socket has none: "local")."""
    if not host:
        return "local"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:1.2.3.4 is 1.2.3.4
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class FailedAuthThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # least recent first

    def __len__(self) -> int:
        return len(self._clients)

    def refuse_if_waiting(self, client: str, where: str) -> None:
        """Raise TooManyWrongTokens (429) while `client` must wait."""
        state = self._clients.get(client)
        if state is None:
            return
        now = self._clock()
        if now - state.last > FORGET_AFTER:
            del self._clients[client]
            return
        if now < state.until:
            wait = max(1, math.ceil(state.until - now))
            if not state.refusal_logged:
                state.refusal_logged = True
                log.warning(
                    "refusing tokens from %s on %s for %d s: %d wrong in a row",
                    client,
                    where,
                    wait,
                    state.failures,
                )
            raise TooManyWrongTokens(client, wait)

    def failed(self, client: str, where: str) -> None:
        """A wrong token from `client`: counted, logged, and past the free
        ones the client's next wait set."""
        now = self._clock()
        state = self._clients.pop(client, None)
        if state is None or now - state.last > FORGET_AFTER:
            state = _Client()
        self._clients[client] = state  # now the most recent
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        state.failures += 1
        state.last = now
        over = state.failures - FREE_FAILURES
        if over >= 0:
            # 2**over overflows a float past ~1000 failures: capped first.
            state.until = now + min(MAX_DELAY, FIRST_DELAY * 2 ** min(over, 64))
            state.refusal_logged = False
        log.warning(
            "wrong token from %s on %s (%d in a row%s)",
            client,
            where,
            state.failures,
            f"; next attempt in {math.ceil(state.until - now)} s" if over >= 0 else "",
        )

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
