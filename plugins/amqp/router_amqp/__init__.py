"""The amqp destination: publish each message to RabbitMQ (AMQP 0-9-1).

Each delivery is one persistent message (delivery mode 2) published with
``mandatory`` set on a channel in publisher-confirm mode, and the attempt
succeeds only when the broker confirms it (``basic.ack``). A message the
broker cannot route (no queue bound, an exchange that does not exist) or
refuses (``basic.nack``: a full queue that rejects publishes) fails the
attempt, and the router retries it with backoff: nothing is dropped
quietly. A body over the broker's max_message_size (the channel closed
with 406 PRECONDITION_FAILED saying so) is given up at once: no retry
could publish it. docs/amqp.md is the user's page.

One connection and one channel serve every delivery of the destination in a
process: opened at the first delivery, dropped when the broker or the
network breaks them (or an attempt times out) and opened again at the next
attempt.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

import msgspec

from router.plugin import OptionError, SinkContext, SinkType, hookimpl

if TYPE_CHECKING:
    from router_amqp.sink import AmqpSink

# AMQP 0-9-1 short strings (routing keys, exchange names) hold at most 255 bytes.
MAX_SHORT_STRING = 255
KEY_FIELD = "{key}"
# scheme://user:password@rest read loosely, only for a URL urllib.parse cannot
# read (so that its password stays out of the error saying so): the password
# runs to the last @.
_LOOSE_USERINFO = re.compile(r"(?P<head>[^:@]*:/*[^:@/]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.S)


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(scheme://user, password, host...) as urllib.parse reads the URL: the
    authority runs from after `//` to the first `/`, `?` or `#`, its
    userinfo to the authority's last `@`, the password from the userinfo's
    first `:`. None: no password."""
    scheme, sep, after = url.partition("://")
    if not sep:
        return None
    ends = [i for i in (after.find(c) for c in "/?#") if i >= 0]
    authority = after[: min(ends, default=len(after))]
    userinfo, at, _ = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon:
        return None
    return f"{scheme}://{user}", password, after[len(userinfo) + 1 :]


def _parses(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return True


class AmqpOptions(msgspec.Struct, forbid_unknown_fields=True):
    """A destination's options (routes.yaml)."""

    # amqp://user:password@host:port/vhost (amqps:// for TLS); query
    # parameters as aio-pika reads them (heartbeat=30, ...).
    url: str
    # Where the exchange routes the message: with the default exchange ""
    # the name of the queue. `{key}` is replaced by the message's ordering
    # key ("*" for a destination with one global order).
    routing_key: str
    # "" is the default exchange (direct to the queue named by routing_key).
    # The exchange is never declared: it must exist.
    exchange: str = ""

    _UNSAFE_CHARACTERS: ClassVar[re.Pattern[str]] = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")

    def __post_init__(self) -> None:
        self._check_url()
        rest = self.routing_key.replace(KEY_FIELD, "")
        if "{" in rest or "}" in rest:
            raise OptionError(
                ("routing_key",),
                f"{self.routing_key!r}: the only field a routing key may hold is {{key}} "
                "(the ordering key)",
            )
        if len(rest.encode()) > MAX_SHORT_STRING:
            raise OptionError(
                ("routing_key",), f"longer than AMQP allows ({MAX_SHORT_STRING} bytes)"
            )
        if not self.exchange and not self.routing_key:
            raise OptionError(
                ("routing_key",),
                'with the default exchange (exchange: "") the routing key is the name of '
                "the queue; name it",
            )
        if len(self.exchange.encode()) > MAX_SHORT_STRING:
            raise OptionError(("exchange",), f"longer than AMQP allows ({MAX_SHORT_STRING} bytes)")

    def _check_url(self) -> None:
        # The errors quote the URL as shown_url would (no password).
        if not self.url.startswith(("amqp://", "amqps://")):
            raise OptionError(("url",), f"must start with amqp:// or amqps://, got {self.shown}")
        if self._UNSAFE_CHARACTERS.search(self.url):
            raise OptionError(
                ("url",),
                "contains a space or control character; percent-encode it (a space is %20)",
            )
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise OptionError(("url",), f"{self.shown} is not a valid URL: {exc}") from None
        if not parts.hostname:
            raise OptionError(("url",), f"{self.shown} names no host; write amqp://host[:port]/")
        if port is not None and not 1 <= port <= 65535:
            raise OptionError(("url",), "a port is a number from 1 to 65535")
        if parts.path.count("/") > 1:
            raise OptionError(
                ("url",),
                f"{self.shown}: the path is the virtual host, one segment "
                "(percent-encode a '/' in its name as %2F)",
            )

    @property
    def shown(self) -> str:
        """The URL with its password starred (even in a URL too broken to parse)."""
        split = _split_password(self.url)
        if split is not None:
            return f"{split[0]}:***@{split[2]}"
        found = self._loose()
        if found is None:
            return self.url
        return f"{found.group('head')}:***@{found.group('rest')}"

    def _loose(self) -> re.Match[str] | None:
        """A password in a URL urllib cannot read as one: no `://`
        (`amqp:/user:pw@host`, refused, and its error shows the URL), or one
        that does not parse."""
        if "://" in self.url and _parses(self.url):
            return None
        return _LOOSE_USERINFO.match(self.url)

    def _password(self) -> str | None:
        split = _split_password(self.url)
        if split is not None:
            return split[1]
        found = self._loose()
        return found.group("password") if found is not None else None

    def secret_values(self) -> list[str]:
        """The URL's password, as written and decoded: never shown."""
        password = self._password()
        if not password:
            return []
        return list(dict.fromkeys([password, unquote(password)]))

    def routing_key_for(self, key: str) -> str:
        return self.routing_key.replace(KEY_FIELD, key)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self.shown!r}, exchange={self.exchange!r}, "
            f"routing_key={self.routing_key!r})"
        )


def make_sink(options: AmqpOptions, context: SinkContext) -> AmqpSink:
    # aio-pika is imported here, by a process that delivers to RabbitMQ, not
    # by every router process (its import, aiormq's and pamqp's take about
    # 70 ms).
    from router_amqp.sink import AmqpSink

    return AmqpSink(options, context)


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="amqp",
            factory=make_sink,
            options=AmqpOptions,
            circuit_breaker=True,
            description="publish to RabbitMQ (AMQP 0-9-1) with publisher confirms, "
            "persistent and mandatory",
        )
    ]
