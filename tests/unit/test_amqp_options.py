"""The amqp plugin's options (plugins/amqp, docs/amqp.md) as routes.yaml
loads them: a bad value is one config error at its key and line, and the
URL's password is a secret, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from router_amqp import AmqpOptions

from router.config import ConfigError
from router.config.loading import load
from tests.support.routes import write_yaml

ROUTES = """\
routes:
  - path: /v1/store_message
    destinations: [rabbit]
    fields: {mensaje: string, wa_id: string}
destinations:
  rabbit:
    plugin: amqp
    ordering_key: wa_id
"""
PASSWORD = "pw-9d1c-never-shown"


def config_error(tmp_path: Path, options: str) -> str:
    path = write_yaml(tmp_path, ROUTES + options)
    with pytest.raises(ConfigError) as info:
        load(str(path), env={})
    message = str(info.value)
    assert message.splitlines() == [message], f"not one line: {message!r}"
    assert message.startswith(str(path)), message
    assert PASSWORD not in message
    return message


def test_good_options_load(tmp_path: Path) -> None:
    options = (
        f"    url: amqp://router:{PASSWORD}@rabbit.internal:5672/prod\n"
        "    exchange: events\n"
        '    routing_key: "conv.{key}"\n'
    )
    config = load(str(write_yaml(tmp_path, ROUTES + options)), env={})
    rabbit = config.destinations["rabbit"]
    assert rabbit.circuit_breaker  # on by default: a broker is down for everyone
    assert isinstance(rabbit.options, AmqpOptions)
    assert rabbit.options.routing_key_for("4491") == "conv.4491"
    assert rabbit.options.secret_values() == [PASSWORD]
    assert PASSWORD not in repr(rabbit.options)
    assert rabbit.shown_url == "amqp://router:***@rabbit.internal:5672/prod"


@pytest.mark.parametrize(
    ("options", "where", "says"),
    [
        (
            f"    url: http://guest:{PASSWORD}@127.0.0.1:5672/\n    routing_key: q\n",
            "destinations.rabbit.url",
            "must start with amqp:// or amqps://",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@:5672/\n    routing_key: q\n",
            "destinations.rabbit.url",
            "names no host",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1:99999/\n    routing_key: q\n",
            "destinations.rabbit.url",
            "port",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/a/b\n    routing_key: q\n",
            "destinations.rabbit.url",
            "virtual host",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/\n",
            "destinations.rabbit",
            "routing_key",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/\n    routing_key: ''\n",
            "destinations.rabbit.routing_key",
            "the name of the queue",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/\n    routing_key: 'q.{{wa_id}}'\n",
            "destinations.rabbit.routing_key",
            "the only field a routing key may hold is {key}",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/\n    routing_key: '{'q' * 256}'\n",
            "destinations.rabbit.routing_key",
            "255 bytes",
        ),
        (
            f"    url: amqp://guest:{PASSWORD}@127.0.0.1/\n    routing_key: q\n    queue: q\n",
            "destinations.rabbit",
            "queue",
        ),
    ],
)
def test_a_bad_option_is_one_line_at_its_key(
    tmp_path: Path, options: str, where: str, says: str
) -> None:
    message = config_error(tmp_path, options)
    assert where in message and says.lower() in message.lower(), message


def test_an_empty_routing_key_is_fine_with_a_named_exchange() -> None:
    options = AmqpOptions(url="amqp://127.0.0.1/", exchange="fanout-x", routing_key="")
    assert options.routing_key_for("k") == ""
    assert options.secret_values() == []


def test_a_percent_encoded_password_is_secret_both_ways() -> None:
    options = AmqpOptions(url="amqp://u:p%40ss@127.0.0.1/", routing_key="q")
    assert options.secret_values() == ["p%40ss", "p@ss"]
