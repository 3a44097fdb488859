"""A lane entry: the envelope behind its sequence number (router.queue.envelope)."""

from __future__ import annotations

from router.queue import envelope


def test_an_entry_carries_its_number_before_the_envelope() -> None:
    raw = envelope.encode("msg_1", 5, b'{"a":1}')
    entry = envelope.entry(42, raw)
    assert entry == b"42:" + raw
    assert envelope.split_entry(entry) == (42, raw)
    number, env = envelope.decode_entry(entry)
    assert number == 42 and env.id == "msg_1" and bytes(env.body) == b'{"a":1}'
    # Every reader that only wants the envelope reads an entry as one.
    assert envelope.decode(entry) == envelope.decode(raw)


def test_an_entry_stored_before_numbers_is_the_bare_envelope() -> None:
    raw = envelope.encode("msg_2", 5, b"[]")
    assert envelope.entry(None, raw) == raw
    assert envelope.split_entry(raw) == (None, raw)
    assert envelope.decode_entry(raw)[0] is None
