"""The nats sink's connection and what comes back on it (router_nats.sink):
the replies it waits for, the server's permission errors, and the markers
that confirm core publishes, one for every publish of a loop turn."""

from __future__ import annotations

import asyncio
import collections
import re
from typing import TYPE_CHECKING

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

if TYPE_CHECKING:
    from router_nats.sink import Listed


class Lost(Exception):
    """The connection closed while an attempt waited on it."""


class Refused(Exception):
    """The server refused the publish an attempt waited on (a permissions
    violation): no reply will come, and the connection stays open."""


# The subject of the server's -ERR for a refused publish, as nats-py hands
# it to error_cb (lowercased): 'permissions violation for publish to "x.y"'.
# (The server quotes it Go's way: a subject holding `"` or `\` does not
# match, and its attempt waits for its deadline, as before.)
_REFUSED_SUBJECT = re.compile(r'publish to "([^"]*)"')


class Link:
    """One connection and what comes back on it: a subscription on a
    private inbox (`inbox`.*) that gets every reply the sink waits for,
    each to the future registered under its subject, and the server's
    publish permission errors (nats-py hands them to error_cb only)."""

    def __init__(self) -> None:
        self.nc: NatsClient | None = None
        self.lost: str | None = None  # why the connection ended; None while open
        self.error = ""  # the last error nats-py reported on this connection
        # The STREAM.LIST running on this connection, which every attempt
        # needing it waits for (never one of another connection's: a list
        # stuck on a dropped connection must not hold the next one up).
        self.listing: asyncio.Task[Listed] | None = None
        self.inbox = ""
        # Asked once: on Python 3.11 every asyncio.get_running_loop() (and
        # current_task() without a loop) is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[str, asyncio.Future[Msg]] = {}
        # What each waiting reply answers: the subject its request was
        # published to, so that the server's refusal of that publish fails
        # it at once instead of at the attempt's deadline.
        self._asked: dict[str, str] = {}
        self._next_reply = 0
        self.denials = 0  # permission errors so far
        self._denied: collections.deque[tuple[int, str]] = collections.deque(maxlen=256)
        # The core publishes waiting for the marker not sent yet, one future
        # each (cancelling one attempt cancels only its own); None once it
        # is sent, and the next publish starts the next marker.
        self._joining: list[asyncio.Future[None]] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # markers being sent

    async def on_reply(self, msg: Msg) -> None:
        waiter = self.waiters.pop(msg.subject, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)

    def lose(self, why: str) -> None:
        """The connection ended: every attempt waiting on it fails now."""
        if self.lost is None:
            self.lost = why or "connection closed"
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(Lost(self.lost))
        # A marker stuck in nats-py's publish (a stalled connection) ends.
        for task in list(self._sending):
            task.cancel()

    def on_error(self, e: Exception) -> None:
        self.error = f"{type(e).__name__}: {e}"
        text = str(e)  # nats-py lowercases the server's -ERR text
        if "permissions violation" not in text.lower():
            return
        self.denials += 1
        self._denied.append((self.denials, text))
        if self.inbox and self.inbox.lower() in text.lower():
            # The replies cannot come back: nothing can be confirmed.
            self.lose(text)
            return
        refused = _REFUSED_SUBJECT.search(text.lower())
        if refused is None:
            return
        subject = refused.group(1)
        replies = [r for r, asked in self._asked.items() if asked.lower() == subject]
        if len({self._asked[r] for r in replies}) > 1:
            # nats-py lowercased the server's text: waiters on "ok.Ab" and
            # "ok.ab" cannot tell whose publish was refused, so their
            # deadline decides, as it did before refusals were read. (A
            # core publish's refusal is not told apart from a request's of
            # the same subject but for case: a JetStream publish failed so
            # is retried with its Nats-Msg-Id, which the stream's
            # duplicate window catches.)
            return
        for reply in replies:
            del self._asked[reply]
            waiter = self.waiters.pop(reply, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(Refused(text))

    def denied_since(self, mark: int, subject: str) -> str | None:
        """The server's permission error for a publish to `subject` after
        the `mark`-th, if any. Matched in lowercase (nats-py lowercases the
        text): the refusal of a subject equal to `subject` but for case
        fails this core publish too. That is the safe side of the doubt:
        the message is sent again (at least once, with its message id for
        the consumer to drop a copy), where passing it could ack a message
        the server refused."""
        quoted = f'"{subject}"'.lower()
        for n, text in self._denied:
            if n > mark and "publish" in text.lower() and quoted in text.lower():
                return text
        return None

    def done_with(self, reply: str, waiter: asyncio.Future[Msg]) -> None:
        """The attempt no longer waits on `reply`: its entry goes, and a
        loss nobody awaited is read (no "never retrieved" warning)."""
        self.waiters.pop(reply, None)
        self._asked.pop(reply, None)
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled():
            waiter.exception()

    def new_reply(self, asking: str = "") -> tuple[str, asyncio.Future[Msg]]:
        """A subject of the inbox to have an answer sent to, and its future;
        with `asking`, the subject the request goes to: the future fails
        with Refused if the server refuses that publish."""
        if self.lost is not None:
            raise Lost(self.lost)
        self._next_reply += 1
        subject = f"{self.inbox}.{self._next_reply}"
        waiter: asyncio.Future[Msg] = self.loop.create_future()
        self.waiters[subject] = waiter
        if asking:
            self._asked[subject] = asking
        return subject, waiter

    async def publish(
        self,
        subject: str,
        body: bytes,
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """nats-py's publish, cancellable: while it waits for its buffer to
        be written (over max_pending_size, the connection stalled) it
        swallows a CancelledError (client.py, _flush_pending) and returns,
        and the router's deadline cancels an attempt once. The cancellation
        is raised here again."""
        assert self.nc is not None
        task = asyncio.current_task(self.loop)
        asked = task.cancelling() if task is not None else 0
        await self.nc.publish(subject, body, reply=reply, headers=headers)
        if task is not None and task.cancelling() > asked:
            raise asyncio.CancelledError

    def processed(self) -> asyncio.Future[None]:
        """Done when the server has processed every message already in
        nats-py's buffer: a marker published to the inbox after them came
        back (the server handles a connection's messages in order). Fails
        with the connection. Every call of a loop turn shares one marker:
        it is published at the next turn, after the messages of all of
        them. A call after that waits for the next one: its message may
        have been buffered after the marker (nats-py's publish waited
        for room), so that marker says nothing of it."""
        if self.lost is not None:
            raise Lost(self.lost)
        joining = self._joining
        if joining is None:
            joining = self._joining = []
            task = self.loop.create_task(self._send_marker(joining))
            self._sending.add(task)
            task.add_done_callback(lambda t: self._sent(t, joining))
        mine: asyncio.Future[None] = self.loop.create_future()
        joining.append(mine)
        return mine

    def _sent(self, task: asyncio.Task[None], joining: list[asyncio.Future[None]]) -> None:
        """The marker's task ended: whoever it did not answer fails, with
        its error (Lost, or nats-py's publish refused), or as lost when
        lose() cancelled it (a task cancelled before its first step runs
        none of its code)."""
        self._sending.discard(task)
        if self._joining is joining:
            self._joining = None
        error = None if task.cancelled() else task.exception()
        if not isinstance(error, Exception):
            error = Lost(self.lost or "connection closed")
        for waiter in joining:
            if not waiter.done():
                waiter.set_exception(error)

    async def _send_marker(self, joining: list[asyncio.Future[None]]) -> None:
        """Publish the marker and wait for it; answer whoever joined it (a
        failure is answered by _sent)."""
        self._joining = None  # what is published from now on: the next marker
        marker, back = self.new_reply()
        try:
            await self.publish(marker, b"")
            await back
        finally:
            self.done_with(marker, back)
        for waiter in joining:
            if not waiter.done():  # not the future of a cancelled attempt
                waiter.set_result(None)
