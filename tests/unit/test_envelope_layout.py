"""The envelope as stored (router.queue.envelope): its arrival time left out
when the message id carries it, and every layout stored before still read."""

from __future__ import annotations

import msgspec
import pytest

from router.queue import envelope
from tests.support.messages import previous_envelope

NOW = 1_796_627_108_439  # ms: 13 digits, as every arrival until 2286
BODY = b'{"mensaje":"hola","wa_id":"44912345678"}'


def test_an_id_carrying_the_arrival_leaves_ts_out_and_reads_it_back() -> None:
    message_id = envelope.new_message_id(NOW)
    raw = envelope.encode(message_id, NOW, BODY)
    assert raw == b'{"id":"%s","body":%s}' % (message_id.encode(), BODY)
    # 19 bytes of every queued message: ,"ts": and 13 digits.
    assert len(previous_envelope(message_id, NOW, BODY)) - len(raw) == 19
    env = envelope.decode(raw)
    assert (env.id, env.ts, bytes(env.body)) == (message_id, NOW, BODY)
    assert envelope.decode_entry(envelope.entry(7, raw)) == (7, env)


def test_an_envelope_stored_by_the_previous_version_reads_the_same() -> None:
    message_id = envelope.new_message_id(NOW)
    old = previous_envelope(message_id, NOW, BODY)
    new = envelope.encode(message_id, NOW, BODY)
    assert envelope.decode(old) == envelope.decode(new)
    # Numbered, and from before numbers (a bare envelope).
    assert envelope.decode_entry(b"3:" + old) == (3, envelope.decode(new))
    assert envelope.decode_entry(old) == (None, envelope.decode(new))
    # With its trace context after the body, as it was written.
    traced = envelope.decode(previous_envelope(message_id, NOW, BODY, tp="00-x", tst="a=b"))
    assert (traced.ts, traced.tp, traced.tst) == (NOW, "00-x", "a=b")


@pytest.mark.parametrize(
    "message_id",
    [
        "msg_1",  # not an id the router made
        f"msg_{NOW - 5:011x}{'0' * 16}",  # a retried fan-out: an earlier try's id
        "msg_" + "f" * 12 + "0" * 16,  # past the year 2527: 12 hex digits of ms
        "order-17",
    ],
)
def test_ts_is_kept_when_the_id_does_not_carry_it(message_id: str) -> None:
    raw = envelope.encode(message_id, NOW, BODY)
    assert b',"ts":%d,' % NOW in raw
    assert envelope.decode(raw).ts == NOW


def test_a_time_of_zero_is_stored_as_given() -> None:
    raw = envelope.encode("msg_1", 0, b"{}")
    assert raw == b'{"id":"msg_1","ts":0,"body":{}}'
    assert envelope.decode(raw).ts == 0


def test_an_envelope_without_ts_needs_an_id_carrying_one() -> None:
    with pytest.raises(msgspec.ValidationError):
        envelope.decode(b'{"id":"order-17","body":{}}')


def test_the_time_an_id_carries() -> None:
    assert envelope.id_ms(envelope.new_message_id(NOW)) == NOW
    assert envelope.id_ms(envelope.new_message_id(NOW).upper().replace("MSG_", "msg_")) == NOW
    for other in ("msg_1", "msg_" + "g" * 27, "xmsg_" + "0" * 27, "msg_" + "0" * 28):
        assert envelope.id_ms(other) is None


def test_a_replayed_letter_keeps_its_mark_and_time() -> None:
    """replay.lua marks an envelope by putting "rp":1 first."""
    message_id = envelope.new_message_id(NOW)
    raw = envelope.encode(message_id, NOW, BODY)
    env = envelope.decode(b'{"rp":1,' + raw[1:])
    assert (env.id, env.ts) == (message_id, NOW)


def test_a_shown_envelope_gets_its_ts_back_byte_for_byte() -> None:
    """The admin API's dead letters show the envelope as it always read:
    `ts` after the id, the body's bytes untouched."""
    from router.queue import envelope as env

    message_id = env.new_message_id(1733560000000)
    stored = env.encode(message_id, 1733560000000, b'{"a": "\\u00e1" }').decode()
    assert '"ts"' not in stored
    shown = env.with_ts_text(stored)
    assert shown == stored.replace(f'"{message_id}"', f'"{message_id}","ts":1733560000000', 1)
    replayed = '{"rp":1,' + stored[1:]
    assert env.with_ts_text(replayed) == '{"rp":1,' + shown[1:]
    other = env.encode("other-id", 5, b"{}").decode()
    assert env.with_ts_text(other) == other and env.with_ts_text(shown) == shown
