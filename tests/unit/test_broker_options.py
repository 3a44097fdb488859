"""The nats and mqtt plugins' options (docs/nats.md, docs/mqtt.md): a bad
value refuses routes.yaml in one line at its option, no password shown;
the key escaping that makes a subject token or a topic level."""

from __future__ import annotations

from pathlib import Path

import pytest
import router_mqtt
import router_nats
from router_mqtt import escape_level
from router_nats import escape_token

from router.config.loading import load
from tests.support.routes import write_yaml
from tests.unit.test_config import GOOD, config_error

NATS = GOOD.replace("plugin: chatbot", "plugin: nats").replace(
    "url: http://127.0.0.1:8080/bot", "url: nats://127.0.0.1:4222"
)
MQTT = GOOD.replace("plugin: chatbot", "plugin: mqtt").replace(
    "url: http://127.0.0.1:8080/bot", "url: mqtt://127.0.0.1:1883"
)
PASSWORD = "pw-never-shown-7f3a"


def test_the_defaults_load(tmp_path: Path) -> None:
    nats = load(str(write_yaml(tmp_path, NATS)), env={}).destinations["chatbot"]
    assert (nats.options.subject, nats.options.jetstream) == ("router.{key}", "auto")
    mqtt = load(str(write_yaml(tmp_path, MQTT)), env={}).destinations["chatbot"]
    assert (mqtt.options.topic, mqtt.options.qos, mqtt.options.protocol) == ("router/{key}", 1, "5")
    # The circuit breaker on unless routes.yaml says otherwise: a broker is
    # down for every conversation at once.
    assert router_nats.router_sink_types()[0].circuit_breaker
    assert router_mqtt.router_sink_types()[0].circuit_breaker


@pytest.mark.parametrize(
    ("base", "extra", "words"),
    [
        (NATS, "    jetstream: maybe\n", ["chatbot.jetstream", "auto, true or false"]),
        (NATS, "    subject: 'a.*.{key}'\n", ["chatbot.subject", "wildcards"]),
        (NATS, "    subject: 'a..{key}'\n", ["chatbot.subject", "empty token"]),
        (NATS, "    subject: 'a b.{key}'\n", ["chatbot.subject", "whitespace"]),
        (NATS, "    subject: 'a.{id}'\n", ["chatbot.subject", "{id}", "only {key}"]),
        (NATS, "    colour: blue\n", ["colour"]),
        (MQTT, "    qos: 0\n", ["chatbot.qos", "no acknowledgement"]),
        (MQTT, "    qos: 3\n", ["chatbot.qos", "1 (PUBACK) or 2 (PUBCOMP)"]),
        (MQTT, "    topic: 'a/+/{key}'\n", ["chatbot.topic", "wildcards"]),
        (MQTT, "    topic: 'a/#'\n", ["chatbot.topic", "wildcards"]),
        (MQTT, "    topic: '$SYS/{key}'\n", ["chatbot.topic", "broker's own"]),
        (MQTT, "    protocol: '4'\n", ["chatbot.protocol"]),
    ],
)
def test_a_bad_option_is_one_line_at_its_place(
    tmp_path: Path, base: str, extra: str, words: list[str]
) -> None:
    message = config_error(write_yaml(tmp_path, base + extra))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        (NATS, "http://127.0.0.1:4222"),
        (NATS, "nats://u:${PW}@127.0.0.1:x"),
        (MQTT, "amqp://127.0.0.1"),
        (MQTT, "mqtt://u:${PW}@127.0.0.1:x"),
    ],
)
def test_a_bad_url_is_refused_without_its_password(tmp_path: Path, base: str, url: str) -> None:
    text = base.replace("url: nats://127.0.0.1:4222", f"url: {url}").replace(
        "url: mqtt://127.0.0.1:1883", f"url: {url}"
    )
    message = config_error(write_yaml(tmp_path, text), env={"PW": PASSWORD})
    assert "chatbot.url" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("escape", [escape_token, escape_level])
def test_keys_escape_to_one_token_or_level(escape: object) -> None:
    assert callable(escape)
    assert escape("44912345678") == "44912345678"
    assert escape("a-b_C") == "a-b_C"
    assert escape("*") == "%2A"
    assert escape("a.b/c+d#e>f %") == "a%2Eb%2Fc%2Bd%23e%3Ef%20%25"
    assert escape("ñ") == "%C3%B1"
    # Distinct keys stay distinct: `%` itself is escaped.
    assert escape("%2A") != escape("*")
