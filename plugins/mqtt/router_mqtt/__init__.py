"""The mqtt destination: publish each message to an MQTT broker (docs/mqtt.md).

Each message is published with QoS 1 (the default: the broker's PUBACK
acknowledges it) or QoS 2 (its PUBCOMP does); QoS 0 has no acknowledgement,
so the options refuse it. With MQTT 5 (the default protocol) a PUBACK whose
reason code is a failure (not authorized, quota exceeded, ...) fails the
attempt, and the message carries user properties: ``x-router-id``,
``x-router-sequence``, ``x-router-attempt``, ``x-router-key`` and the
sender's ``traceparent``/``tracestate``. MQTT 3.1.1 has no properties: only
the topic and the body go.

The topic is the ``topic`` template with ``{key}`` replaced by the ordering
key, escaped to one topic level: ASCII letters, digits, ``-`` and ``_`` stay;
every other character (``/``, ``+``, ``#``, ``$``, spaces, ``%``, anything
non-ASCII) becomes ``%XX`` per byte of its UTF-8.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING, Literal

import msgspec

from router.plugin import OptionError, SinkContext, SinkType, hookimpl

if TYPE_CHECKING:
    from router_mqtt.sink import MqttSink

_SAFE = re.compile(r"[A-Za-z0-9_-]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PORTS = {"mqtt": 1883, "mqtts": 8883}


def escape_level(key: str) -> str:
    """The ordering key as one MQTT topic level: letters, digits, `-` and
    `_` as they are, every other character as `%XX` per UTF-8 byte."""
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in key
    )


def _check_topic(topic: str) -> None:
    for name in _PLACEHOLDER.findall(topic):
        if name != "key":
            raise OptionError(("topic",), f"unknown placeholder {{{name}}}: only {{key}}")
    literal = topic.replace("{key}", "k")
    if "{" in literal or "}" in literal:
        raise OptionError(("topic",), "a stray { or }: the only placeholder is {key}")
    if not literal or "\0" in literal:
        raise OptionError(("topic",), "an MQTT topic is not empty and has no NUL")
    if "+" in literal or "#" in literal:
        raise OptionError(("topic",), "wildcards (+ and #) subscribe; a topic to publish has none")
    if literal.startswith("$"):
        raise OptionError(("topic",), "topics starting with $ are the broker's own")
    if len(literal.encode()) > 65535:
        raise OptionError(("topic",), "an MQTT topic is at most 65535 bytes")


class MqttOptions(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    topic: str = "router/{key}"
    qos: int = 1
    retain: bool = False
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None  # default: router-<destination>-<random>
    keepalive: int = 60

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in PORTS or not parts.hostname:
            raise OptionError(
                ("url",), "an MQTT broker URL: mqtt://host:1883 (or mqtts://host:8883)"
            )
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise OptionError(("url",), "the port of url is not a number") from None
        _check_topic(self.topic)
        if self.qos == 0:
            raise OptionError(
                ("qos",),
                "QoS 0 has no acknowledgement, so nothing says the broker has it: use 1 or 2",
            )
        if self.qos not in (1, 2):
            raise OptionError(("qos",), "qos is 1 (PUBACK) or 2 (PUBCOMP)")
        if self.keepalive < 5:
            raise OptionError(("keepalive",), "keepalive is at least 5 seconds")

    def secret_values(self) -> list[str]:
        password = urllib.parse.urlsplit(self.url).password
        return [password] if password else []

    @property
    def url_shown(self) -> str:
        """The broker's address without credentials, for failure reasons."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or PORTS[parts.scheme]}"

    def topic_for(self, key: str) -> str:
        return self.topic.replace("{key}", escape_level(key))


def make_sink(options: MqttOptions, context: SinkContext) -> MqttSink:
    # aiomqtt and paho are imported here, by a process that delivers to MQTT,
    # not by every router process.
    from router_mqtt.sink import MqttSink

    return MqttSink(options, context)


@hookimpl
def router_sink_types() -> list[SinkType]:
    return [
        SinkType(
            name="mqtt",
            factory=make_sink,
            options=MqttOptions,
            circuit_breaker=True,
            description=(
                "publish each message to an MQTT topic; the broker's PUBACK (QoS 1) "
                "or PUBCOMP (QoS 2) acknowledges it"
            ),
        )
    ]
