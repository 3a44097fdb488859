"""The amqp plugin's options (plugins/amqp, docs/amqp.md) as routes.yaml
loads them: a bad value is one config error at its key and line, and the
URL's password is a secret, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiormq.channel import exception_by_code
from pamqp.commands import Channel
from router_amqp import AmqpOptions
from router_amqp.sink import max_size_exceeded

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


@pytest.mark.parametrize(
    ("url", "password", "shown"),
    [
        # An @ in the query: the userinfo ends at the authority's @, not the last one.
        (
            "amqp://u:p%40ss@host/vhost?x=a@b",
            "p%40ss",
            "amqp://u:***@host/vhost?x=a@b",
        ),
        ("amqp://u:pw@host:5672/v#frag@x", "pw", "amqp://u:***@host:5672/v#frag@x"),
        ("amqps://u:p@ss@host/", "p@ss", "amqps://u:***@host/"),  # an @ left unencoded
        ("amqp://u:@host/", "", "amqp://u:***@host/"),
        ("amqp://u@host/?x=a:b@c", None, "amqp://u@host/?x=a:b@c"),
        ("amqp://host/vhost?x=a@b", None, "amqp://host/vhost?x=a@b"),
    ],
)
def test_the_password_is_where_urllib_reads_it(url: str, password: str | None, shown: str) -> None:
    import urllib.parse

    options = AmqpOptions(url=url, routing_key="q")
    assert urllib.parse.urlsplit(url).password == password
    assert options.shown == shown
    expected = [password, urllib.parse.unquote(password)] if password else []
    assert options.secret_values() == list(dict.fromkeys(expected))


def test_the_real_password_is_starred_in_an_error(tmp_path: Path) -> None:
    """The URL's password is registered as the secret, so an error quoting
    the URL (or the broker quoting the password) never shows it."""
    options = AmqpOptions(url=f"amqp://u:{PASSWORD}@host/vhost?x=a@b", routing_key="q")
    assert options.secret_values() == [PASSWORD]
    message = config_error(
        tmp_path, f"    url: amqp://u:{PASSWORD}@127.0.0.1:99999/v?x=a@b\n    routing_key: q\n"
    )
    assert "amqp://u:***@127.0.0.1:99999/v?x=a@b is not a valid URL" in message


@pytest.mark.parametrize(
    ("code", "text", "limit"),
    [
        # RabbitMQ's words (rabbit_channel:check_msg_size), the configured limit
        (406, "PRECONDITION_FAILED - message size 200 is larger than configured max size 100", 100),
        # and the absolute one (512 MiB)
        (
            406,
            "PRECONDITION_FAILED - message size 536870913 is larger than max size 536870912",
            536870912,
        ),
        (406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q'", None),
        (404, "NOT_FOUND - no exchange 'x' in vhost '/'", None),
        (403, "ACCESS_REFUSED - message size 2 is larger than configured max size 1", None),
    ],
)
def test_a_channel_closed_for_a_message_too_large_is_recognised(
    code: int, text: str, limit: int | None
) -> None:
    """As aiormq raises it from the broker's channel.close frame."""
    exc = exception_by_code(Channel.Close(reply_code=code, reply_text=text))
    assert max_size_exceeded(exc) == limit
