"""Logging for every router process: one format, one line per record.

LOG_FORMAT=console writes `time LEVEL logger: message key=value ...`;
LOG_FORMAT=json one JSON object per line (`time`, `level`, `logger`,
`message`, the record's fields, `traceback`), uvicorn's own lines included:
they propagate to the root logger. Fields travel as `extra={"fields": {...}}`
(see `fields`), so both formats carry the same data.

The line per delivered message (`delivered`) is the one hot record: when
only the router's own handler would see it, no LogRecord is built; its
fields wait in the handler and their text is made when the lines of up to
LINE_WRITE_SECONDS are written together, ahead of any record after them.

Values from outside (ordering keys, ids, error texts of destinations, paths)
reach log messages. A newline in a `wa_id` must not start a forged log line
with its own timestamp and level, and ANSI escapes must not reach an
operator's terminal: control characters in the message are written as
escapes (\\n, \\x1b, \\u2028). Tracebacks keep their own lines, each
indented with "  | " and escaped too: an exception's text is outside data
as often as a message is, and no line of a traceback may look like the
start of a record.

Every line, tracebacks included, is written without the secrets of the
routes.yaml the process loaded, in any of their written forms
(router.ops.redaction): a destination's error text or a plugin's exception may
quote one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from router.ops import redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACEBACK_PREFIX = "  | "

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: ascii(chr(c))[1:-1] for c in _CONTROLS}


def escape(text: str) -> str:
    r"""`text` with every control character written as its escape (\n, \x1b)."""
    if text.isascii() and text.isprintable():  # no control character: the common case
        return text
    return text.translate(_ESCAPES)


# The fields of a line per delivered message, waiting in the handler
# (`delivered`): its formatter, time.time(), the logger's name, message id,
# destination, key, attempt, duration in ms.
Delivered = tuple["OneLineFormatter | JsonFormatter", float, str, str, str, str, int, float]


def _delivered_fields(
    message_id: str, destination: str, key: str, attempt: int, duration_ms: float
) -> dict[str, Any]:
    """The fields of the line per delivered message, as a record carries them."""
    return {
        "message_id": message_id,
        "destination": destination,
        "key": key,
        "attempt": attempt,
        "outcome": "ok",
        "duration_ms": duration_ms,
    }


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a record with fields: `log.info("...", extra=fields(key=k))`."""
    return {"fields": values}


_NEEDS_QUOTES = re.compile(r'[ "=]|^$')
# A text neither quoted nor escaped: written as it is (ids, keys, names).
_PLAIN = re.compile('[^ "=' + "".join(map(chr, _CONTROLS)) + "]+")


def _console_value(value: Any) -> str:
    # One line per delivery attempt goes through here: the common values
    # (ids, numbers, plain text) take the short paths.
    kind = type(value)
    if kind is str:
        # (Letters, digits and "_" are neither quoted nor escaped.)
        if value.isalnum() or value.isidentifier() or _PLAIN.fullmatch(value):
            return value
    elif kind is int or kind is float:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value)
    if _PLAIN.fullmatch(text):
        return text
    if _NEEDS_QUOTES.search(text):
        text = json.dumps(text, ensure_ascii=False)
    return escape(text)


def _field_text(value: str) -> str:
    """A text field as _console_fields writes it."""
    if value.isalnum() or value.isidentifier():
        return value
    return _console_value(value)


def _console_fields(values: dict[str, Any]) -> str:
    out = []
    for k, v in values.items():
        kind = type(v)
        # (_console_value's short paths, without a call per value.)
        if kind is str and (v.isalnum() or v.isidentifier()):
            out.append(f" {k}={v}")
        elif kind is int or kind is float:
            out.append(f" {k}={v!r}")
        elif v is not None:
            out.append(f" {k}={_console_value(v)}")
    return "".join(out)


class OneLineFormatter(logging.Formatter):
    """Formats the message with its control characters escaped, then the
    record's fields as key=value (values with spaces quoted)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        values = getattr(record, "fields", None)
        if values:
            record.message += _console_fields(values)
        return super().formatMessage(record)

    def standard(self) -> bool:
        """Set up as setup() sets it: FORMAT, no date format, local time
        (what delivered_line writes; otherwise the line is a LogRecord)."""
        return self._fmt == FORMAT and not self.datefmt and self.converter is time.localtime

    def delivered_line(self, d: Delivered) -> str:
        """What format() makes of the record `delivered` would have logged,
        from its fields alone (a standard() formatter only). The fields
        are written as _console_fields writes them: an id, a key or a name
        of letters, digits and "_" as it is, anything else through
        _console_value; numbers as repr."""
        _, created, name, message_id, destination, key, attempt, duration_ms = d
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, time.localtime(created))
            self._second = second
        msecs = int((created - second) * 1000)
        # (_field_text's test inline for the id and the key: every line has them.)
        if not (message_id.isalnum() or message_id.isidentifier()):
            message_id = _console_value(message_id)
        if not (key.isalnum() or key.isidentifier()):
            key = _console_value(key)
        return redaction.known(
            f"{self._stamp},{msecs:03d} INFO {name}: delivered message_id={message_id}"
            f" destination={_field_text(destination)} key={key} attempt={attempt!r}"
            f" outcome=ok duration_ms={duration_ms!r}"
        )

    _second = -1  # the second _stamp shows (delivered_line's cache of strftime)
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        # Another handler may have cached its own rendering of the traceback
        # in exc_text (logging does); render ours, and leave theirs.
        cached = record.exc_text
        record.exc_text = None
        try:
            return redaction.known(super().format(record))
        finally:
            record.exc_text = cached

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    # splitlines() splits on every line break (\u2028 too); what is left of
    # each line is escaped like a message.
    return "\n".join(TRACEBACK_PREFIX + escape(line) for line in text.splitlines())


# Query parameters that carry a secret in a URL a client calls (Meta's
# webhook verification sends the verify token in the query).
_SECRET_QUERY = re.compile(r"((?:^|[?&])hub\.verify_token=)[^&\s]*", re.IGNORECASE)


class _AccessLogSecrets(logging.Filter):
    """`--access-log` writes every request line: the verify token of a
    WhatsApp route's GET handshake must not reach the log with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: control characters are JSON escapes, so
    no value can start a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        values = getattr(record, "fields", None)
        if values:
            out.update((k, v) for k, v in values.items() if v is not None and k not in out)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: \u2028 and friends escaped too (some readers split on them).
        return redaction.known(_json(out))

    def line(
        self, created: float, level: str, name: str, message: str, values: dict[str, Any]
    ) -> str:
        """What format() makes of a record without arguments, exception or
        stack."""
        # datetime.fromtimestamp's own rounding to microseconds, then the
        # second's text cached: isoformat cuts to milliseconds.
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            self._second = second
        stamp = f"{self._stamp[:-6]}.{micros // 1000:03d}{self._stamp[-6:]}"
        out: dict[str, Any] = {
            "time": stamp,
            "level": level.lower(),
            "logger": name,
            "message": message,
        }
        out.update((k, v) for k, v in values.items() if v is not None and k not in out)
        return redaction.known(_json(out))

    def delivered_line(self, d: Delivered) -> str:
        """What format() makes of the record `delivered` would have logged."""
        _, created, name, message_id, destination, key, attempt, duration_ms = d
        values = _delivered_fields(message_id, destination, key, attempt, duration_ms)
        return self.line(created, "INFO", name, "delivered", values)

    _second = -1  # the second _stamp shows
    _stamp = ""


_json = json.JSONEncoder(default=str).encode  # json.dumps(..., default=str), built once


# How long a line per delivery may wait to be written, and how many may
# wait at most. A write per turn of the event loop cost as much as making
# the line (a turn holds one to a few of them at 64 in flight: 13 us a
# line, against 6 at 64 lines a write); every 0.1 s it is one write per
# hundreds of lines. The lines still come out in the order they were
# logged, before any record after them. The router writes what waits when
# its workers stop (flush()) and logging.shutdown() at exit; a process
# killed with SIGKILL loses at most this window of them (the message log
# and Redis keep the delivery's outcome).
LINE_WRITE_SECONDS = 0.1
LINES_PER_WRITE = 1000


class _LineHandler(logging.StreamHandler):
    """The stream handler setup() installs: besides records, it takes the
    lines `delivered` logs (their fields) and writes them together,
    LINE_WRITE_SECONDS after the first of them (or at once when
    LINES_PER_WRITE wait), always before anything else it writes, so the
    order of the lines stays the order they were logged in. Their text is
    made then, for all of them in one go: a line per delivery made one at
    a time cost a worker about 10 µs a message (paired workers, issue 23),
    most of it in the making. (A write of LINES_PER_WRITE lines holds the
    loop for about 3 ms, once per 0.1 s at 10,000 deliveries a second.)"""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[Delivered] = []  # waiting to be made and written
        self._first = 0.0  # when the first waiting line was added
        # The loop whose timer will write the waiting lines (None: no timer).
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def add_line(self, line: Delivered) -> None:
        """Adds the fields of a line (its formatter makes its text)."""
        now = line[1]
        with self.lock:  # type: ignore[union-attr]
            lines = self._lines
            lines.append(line)
            if len(lines) == 1:
                self._first = now
            elif len(lines) >= LINES_PER_WRITE or now - self._first >= 2 * LINE_WRITE_SECONDS:
                self._write_now()  # many lines, or their write is late
                return
            timer_loop = self._timer_loop
            if timer_loop is not None and timer_loop.is_running():
                return  # its timer writes them
            # No timer, or its loop stopped before it fired (a worker
            # stopped, asyncio.run() returned): one on the running loop.
            if not self._write_later():
                self._write_now()  # no loop runs in this thread: at once

    def _write_later(self) -> bool:
        """A write LINE_WRITE_SECONDS from now on the running loop; False
        when no loop runs in this thread."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_later(LINE_WRITE_SECONDS, self._timer_fired)
        self._timer_loop = loop
        return True

    def _timer_fired(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._timer_loop = None
            self.write_waiting()

    def write_waiting(self) -> None:
        """The waiting lines written, and the stream flushed, now. A stream
        that fails is reported as logging reports a failed write, never
        raised into the caller (a delivery, the runtime stopping)."""
        with self.lock:  # type: ignore[union-attr]
            try:
                self.flush()
            except Exception:
                self._failed_write()

    def _write_now(self) -> None:
        # On the caller's stack (a delivery's).
        try:
            self._write_lines()
        except Exception:
            self._failed_write()

    def _failed_write(self) -> None:
        # handleError reads the exception being handled; the record only names what failed.
        self.handleError(logging.makeLogRecord({"msg": "lines per delivery"}))

    def _write_lines(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            texts = []
            for d in lines:
                try:
                    texts.append(d[0].delivered_line(d))
                except Exception:  # (not the types `delivered` takes): this line only
                    self._failed_write()
            if texts:
                self.stream.write(self.terminator.join(texts) + self.terminator)

    def emit(self, record: logging.LogRecord) -> None:
        # (handle() holds the lock.)
        try:
            self._write_lines()
        except Exception:
            self.handleError(record)
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self._write_lines()
            finally:
                super().flush()


# The handler setup() installed on the root logger (`delivered` adds to it).
_handler: _LineHandler | None = None


def flush() -> None:
    """Write the lines per delivery still waiting: the router calls it when
    its delivery workers have stopped (uvicorn's spawned children end on a
    re-raised SIGTERM, without logging.shutdown)."""
    if _handler is not None:
        _handler.write_waiting()


def delivered(
    logger: logging.Logger,
    message_id: str,
    destination: str,
    key: str,
    attempt: int,
    duration_ms: float,
) -> None:
    """The line per delivered message: `logger.info("delivered",
    extra=fields(message_id=..., destination=..., key=..., attempt=...,
    outcome="ok", duration_ms=...))`. When the record would reach only the
    handler setup() installed (no other handler, no filter on the way: a
    test's capture handler sees a record), no LogRecord is built: the
    fields wait in that handler, which makes the same text its formatter
    makes of the record when it writes the lines of the next
    LINE_WRITE_SECONDS together."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is not None and _only_to(logger, handler):
        formatter = _line_formatter(handler.formatter)
        if formatter is not None:
            handler.add_line(
                (
                    formatter,
                    time.time(),
                    logger.name,
                    message_id,
                    destination,
                    key,
                    attempt,
                    duration_ms,
                )
            )
            return
    values = _delivered_fields(message_id, destination, key, attempt, duration_ms)
    logger.info("delivered", extra={"fields": values})


def _line_formatter(
    formatter: logging.Formatter | None,
) -> OneLineFormatter | JsonFormatter | None:
    """`formatter` when it can make the lines of `delivered`: exactly one
    of setup()'s kinds (a subclass may format otherwise), the console one
    as setup() sets it."""
    if type(formatter) is JsonFormatter:
        return formatter
    if type(formatter) is OneLineFormatter and formatter.standard():
        return formatter
    return None


def _only_to(logger: logging.Logger, handler: logging.Handler) -> bool:
    """A record of `logger` reaches `handler` alone, unfiltered."""
    root = logging.root
    if len(root.handlers) != 1 or root.handlers[0] is not handler:
        return False
    if root.filters or handler.filters or handler.level > logging.INFO or logger.disabled:
        return False
    node: logging.Logger | None = logger
    while node is not None and node is not root:
        if node.handlers or node.filters or not node.propagate:
            return False
        node = node.parent
    return True


def setup(level: str, format: str = "console") -> None:
    """Configure the root logger once per process; uvicorn's own loggers
    propagate to it (the CLI passes uvicorn log_config=None)."""
    global _handler
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else OneLineFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if old is _handler:
            old.flush()  # its lines not yet written
    root.addHandler(handler)
    _handler = handler
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Neither format shows the caller, thread or process of a record: not
    # looking them up halves the cost of the line per delivery attempt
    # (logging's own switches; _srcfile = None skips findCaller, as its
    # source says).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    access = logging.getLogger("uvicorn.access")
    for old_filter in [f for f in access.filters if isinstance(f, _AccessLogSecrets)]:
        access.removeFilter(old_filter)
    access.addFilter(_AccessLogSecrets())
    # One line per delivery from httpx would drown the router's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
