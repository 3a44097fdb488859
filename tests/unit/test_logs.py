"""router.ops.logs: one record, one line (tracebacks: indented lines), whatever
outside text the record carries."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

import pytest

from router.ops.logs import FORMAT, TRACEBACK_PREFIX, OneLineFormatter

FORGED = "1\n2026-01-01 00:00:00,000 ERROR router: forged\u2028line \x1b[31mred"


def _logged(emit: Callable[[logging.Logger], None]) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(FORMAT))
    log = logging.getLogger("test.logs")
    log.propagate = False
    log.addHandler(handler)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_outside_text_in_a_message_stays_on_its_line() -> None:
    text = _logged(lambda log: log.warning("key %s failed", FORGED))
    assert text.count("\n") == 1
    assert "\x1b" not in text and "\u2028" not in text
    assert "key 1\\n2026-01-01 00:00:00,000 ERROR router: forged\\u2028line \\x1b[31mred" in text


def test_a_traceback_cannot_forge_a_record() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError(FORGED)
        except ValueError:
            log.exception("delivery failed")

    first, *rest = _logged(emit).splitlines()
    assert first.endswith("ERROR test.logs: delivery failed")
    assert rest and all(line.startswith(TRACEBACK_PREFIX) for line in rest), rest
    assert rest[0] == TRACEBACK_PREFIX + "Traceback (most recent call last):"
    assert any("ValueError: 1" in line for line in rest)
    assert "\x1b" not in "".join(rest)


def _logged_json(emit: Callable[[logging.Logger], None]) -> list[dict[str, object]]:
    import json

    from router.ops.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logs.json")
    log.propagate = False
    log.addHandler(handler)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_fields_and_cannot_be_forged() -> None:
    from router.ops.logs import fields

    def emit(log: logging.Logger) -> None:
        log.warning("key %s failed", FORGED, extra=fields(key=FORGED, attempt=2, error=None))
        try:
            raise ValueError(FORGED)
        except ValueError:
            log.exception("crashed")

    first, second = _logged_json(emit)  # two records, two lines: nothing forged
    assert first["message"] == f"key {FORGED} failed" and first["key"] == FORGED
    assert (first["level"], first["logger"], first["attempt"]) == ("warning", "test.logs.json", 2)
    assert "error" not in first  # None fields are left out
    assert second["level"] == "error" and FORGED in str(second["traceback"])


def test_console_lines_show_fields_as_key_value() -> None:
    from router.ops.logs import fields

    text = _logged(
        lambda log: log.warning("delivered", extra=fields(key="a b", attempt=1, error=FORGED))
    )
    assert text.count("\n") == 1
    assert 'delivered key="a b" attempt=1 error="1\\n2026' in text


def test_the_access_log_keeps_no_verify_token() -> None:
    from router.ops.logs import setup

    setup("info")
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (
            "127.0.0.1:5",
            "GET",
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=s3cret-tok&hub.challenge=9",
            "1.1",
            200,
        ),
        None,
    )
    for f in access.filters:
        f.filter(record)
    line = record.getMessage()
    assert "s3cret-tok" not in line
    assert "hub.verify_token=***&hub.challenge=9" in line


def _both_ways(
    log_format: str, monkeypatch: pytest.MonkeyPatch, message_id: str, key: str
) -> tuple[str, str]:
    """The line per delivery written by `delivered` (no LogRecord, its text
    made when written) and by logging itself, at the same clock reading,
    through setup()'s handler."""
    from router.ops import logs

    logs.setup("info", log_format)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    log = logging.getLogger("router.worker")
    values = {
        "message_id": message_id,
        "destination": "chat bot",
        "key": key,
        "attempt": 2,
        "outcome": "ok",
        "duration_ms": 1.5,
    }
    # A second's last millisecond: where rounding to the millisecond could
    # carry into the next second.
    monkeypatch.setattr(time, "time", lambda: 1765081646.9996)
    lines = []
    for write in (
        lambda: logs.delivered(log, message_id, "chat bot", key, 2, 1.5),
        lambda: log.info("delivered", extra=logs.fields(**values)),
    ):
        stream = io.StringIO()
        monkeypatch.setattr(handler, "stream", stream)
        write()
        logs.flush()
        lines.append(stream.getvalue())
    return lines[0], lines[1]


@pytest.mark.parametrize("log_format", ["console", "json"])
@pytest.mark.parametrize(
    ("message_id", "key"),
    [
        ("msg_0199", FORGED),  # a key that would forge a line of its own
        ("msg_0199", "44912345678"),  # the usual: written as it is
        ('ticket 7="a"', "user@example.com"),  # quoted, and plain with a dot
        ("", "é b"),  # empty; letters beyond ASCII, with a space
    ],
)
def test_the_line_per_delivery_is_the_line_logging_writes(
    log_format: str, monkeypatch: pytest.MonkeyPatch, message_id: str, key: str
) -> None:
    direct, logged = _both_ways(log_format, monkeypatch, message_id, key)
    assert direct == logged and direct.count("\n") == 1
    assert "delivered" in direct and "\x1b" not in direct


def test_the_line_per_delivery_under_another_date_format_is_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A console formatter set up otherwise than setup() sets it (here, a
    date format of an embedding app's) gets a record, so the line follows
    that format."""
    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)
    handler = logging.getLogger().handlers[0]
    handler.setFormatter(logs.OneLineFormatter(logs.FORMAT, datefmt="%H:%M"))
    monkeypatch.setattr(time, "time", lambda: 1765081646.25)
    logs.delivered(log, "msg_1", "bot", "k", 1, 0.5)
    stamp = time.strftime("%H:%M", time.localtime(1765081646.25))
    assert stream.getvalue() == (
        f"{stamp} INFO router.worker: delivered message_id=msg_1 destination=bot key=k "
        "attempt=1 outcome=ok duration_ms=0.5\n"
    )


def test_the_line_per_delivery_reaches_every_handler() -> None:
    """Another handler on the way (a test's capture, an embedding app's)
    gets a record, as from logging itself."""
    from router.ops import logs

    logs.setup("info")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    log = logging.getLogger("router.worker")
    log.addHandler(keep)
    try:
        logs.delivered(log, "msg_1", "bot", "k", 1, 0.5)
    finally:
        log.removeHandler(keep)
    fields = {
        "message_id": "msg_1",
        "destination": "bot",
        "key": "k",
        "attempt": 1,
        "outcome": "ok",
        "duration_ms": 0.5,
    }
    assert [(r.getMessage(), r.fields) for r in seen] == [("delivered", fields)]  # type: ignore[attr-defined]


def _lines_of(stream: io.StringIO) -> list[str]:
    """Each line's message: a line per delivery as `delivered key=<key>`."""
    out = []
    for line in stream.getvalue().splitlines():
        message = line.split(": ", 1)[1]
        if message.startswith("delivered "):
            message = "delivered key=" + message.split(" key=", 1)[1].split(" ", 1)[0]
        out.append(message)
    return out


def _deliver(log: logging.Logger, key: object) -> None:
    """The line per delivery of a message of `key`."""
    from router.ops import logs

    logs.delivered(log, "msg_1", "bot", str(key), 1, 0.5)


def _logged_to_a_string(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, logging.Logger]:
    """setup()'s handler writing to a string; a logger whose records reach only it."""
    from router.ops import logs

    logs.setup("info")
    handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    monkeypatch.setattr(handler, "stream", stream)
    return stream, logging.getLogger("router.worker")


def test_lines_per_delivery_are_written_together_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)

    async def main() -> None:
        _deliver(log, "a")
        await asyncio.sleep(0)
        _deliver(log, "b")
        assert stream.getvalue() == ""  # waiting for the write
        log.warning("then a record")  # the lines before it go first
        _deliver(log, "c")
        await asyncio.sleep(0)
        assert _lines_of(stream) == ["delivered key=a", "delivered key=b", "then a record"]
        # Nothing else happens: the waiting line is written all the same.
        await asyncio.sleep(logs.LINE_WRITE_SECONDS * 3)
        assert _lines_of(stream)[3:] == ["delivered key=c"]

    asyncio.run(main())


def test_a_line_per_delivery_shows_when_it_was_logged_not_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its text is made when the waiting lines are written, from the time
    taken when the delivery logged it."""
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)
    logged_at = 1765081646.25  # 2025-12-07 04:27:26.250 UTC

    async def main() -> None:
        monkeypatch.setattr(time, "time", lambda: logged_at)
        _deliver(log, "a")
        monkeypatch.setattr(time, "time", lambda: logged_at + 61.5)
        assert stream.getvalue() == ""
        logs.flush()

    asyncio.run(main())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(logged_at)) + ",250 "
    assert stream.getvalue().startswith(stamp + "INFO router.worker: delivered message_id=msg_1")


def test_many_lines_per_delivery_are_written_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)

    async def main() -> None:
        for n in range(logs.LINES_PER_WRITE + 1):
            _deliver(log, n)
        written = _lines_of(stream)
        assert written == [f"delivered key={n}" for n in range(logs.LINES_PER_WRITE)]

    asyncio.run(main())
    logs.flush()  # the last one, not left for another test's handler


def test_lines_left_by_a_stopped_loop_are_written_with_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write a line waits for belongs to a loop that may stop first (a
    worker stopped, asyncio.run() returning): the next line, from another
    loop or none, writes both once the write is late, and logging's
    flush at exit writes what is left."""
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)
    handler = logging.getLogger().handlers[0]

    async def one(key: str) -> None:
        _deliver(log, key)

    asyncio.run(one("a"))
    assert stream.getvalue() == ""
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3 * logs.LINE_WRITE_SECONDS)
    asyncio.run(one("b"))
    assert _lines_of(stream) == ["delivered key=a", "delivered key=b"]
    asyncio.run(one("c"))
    handler.flush()  # as logging.shutdown() does at exit
    assert _lines_of(stream)[2:] == ["delivered key=c"]


def test_lines_after_a_stopped_loop_are_written_by_the_next_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line waiting for the timer of a loop that stopped, then a line of
    a loop that goes on running: that loop writes both in time, without a
    third line or an exit."""
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)

    async def one(key: str) -> None:
        _deliver(log, key)

    async def then_idle() -> None:
        await one("b")
        await asyncio.sleep(logs.LINE_WRITE_SECONDS * 3)
        assert _lines_of(stream) == ["delivered key=a", "delivered key=b"]

    asyncio.run(one("a"))
    asyncio.run(then_idle())


def test_a_line_that_cannot_be_made_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line whose fields are not what `delivered` takes (a key that is
    not text) is reported as a failed write; the lines beside it are
    written, and nothing is raised into the delivery or the flush."""
    import asyncio

    from router.ops import logs

    stream, log = _logged_to_a_string(monkeypatch)
    handler = logging.getLogger().handlers[0]
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)

    async def main() -> None:
        _deliver(log, "a")
        logs.delivered(log, "msg_2", "bot", None, 1, 0.5)  # type: ignore[arg-type]
        _deliver(log, "c")
        logs.flush()

    asyncio.run(main())
    assert _lines_of(stream) == ["delivered key=a", "delivered key=c"]
    assert len(reported) == 1


def test_a_stream_that_fails_never_fails_the_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write of many waiting lines runs on a delivery's own stack, the
    last one on the runtime's: a broken stderr (its reader gone) is
    reported as logging reports a failed write, not raised into them."""
    import asyncio

    from router.ops import logs

    _, log = _logged_to_a_string(monkeypatch)
    handler = logging.getLogger().handlers[0]

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(handler, "stream", Broken())
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)

    async def main() -> None:
        for n in range(logs.LINES_PER_WRITE):
            _deliver(log, n)

    asyncio.run(main())
    assert len(reported) == 1

    # The write when the workers stop (Runtime): reported the same way,
    # not raised over whatever ends the process.
    async def last() -> None:
        _deliver(log, "last")  # waits for its timer
        logs.flush()

    asyncio.run(last())
    assert len(reported) == 2
