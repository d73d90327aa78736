"""One connection that carries a worker's hot commands, pipelined across tasks.

Every state change sends a script (and, on the worker that did not make the session's
last version, an ``HGET``) and waits for its reply. On a pool, each command takes a
connection of its own and a ``send`` of its own, and each send wakes Redis for one
command: at 1,000 changes/s py-spy put 9 % of a Redis worker's samples in those writes
(``StreamWriter.write``). Here the commands of one turn of the loop, from whichever
tasks, go out as one write on one connection, and Redis answers them in that order on
the same connection, so that one read hands out many replies. Redis runs commands one
at a time anyway: one connection costs no parallelism.

What a caller sees is what it saw on the pool:

- a reply, or the reply's error as redis-py raises it (``NoScriptError`` included);
- ``redis.exceptions.TimeoutError`` when the oldest command has waited
  ``timeout`` for its reply: the connection is then closed and every command on it
  fails, as a read timeout disconnected a pool connection; one clock for all, rather
  than a timer per command;
- ``redis.exceptions.ConnectionError`` when the connection breaks, or cannot be made
  (then the next command tries again);
- a caller cancelled while it waits leaves its command on the wire (it may have run,
  as on the pool); its reply is read and dropped in its turn, so the order holds.

The connection is made by redis-py (TLS, unix sockets, AUTH, SELECT and its
handshake as configured); only its reading and writing are done here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import hiredis
from redis import exceptions as rexc
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection

# Bytes asked of the socket at a time: many replies of a few hundred bytes each.
READ_SIZE = 1 << 16


def reply_parser() -> hiredis.Reader:
    """A RESP parser whose error replies come out as redis-py's exceptions (as values,
    for the reader to raise or hand on)."""
    return hiredis.Reader(protocolError=rexc.InvalidResponse, replyError=BaseParser.parse_error)


async def read_into(stream: asyncio.StreamReader, parser: hiredis.Reader) -> None:
    """The next read of ``stream`` fed to ``parser``; ``ConnectionError`` once Redis has
    closed the connection."""
    data = await stream.read(READ_SIZE)
    if not data:
        raise rexc.ConnectionError("Connection closed by Redis")
    parser.feed(data)


def whole_replies(parser: hiredis.Reader) -> Iterator[Any]:
    """Each reply the fed bytes complete, in order, as it is parsed."""
    while (reply := parser.gets()) is not False:
        yield reply


class _Link:
    """One connected socket, its commands awaiting replies (oldest first) and the
    bytes of this turn's commands not yet written."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.reader: asyncio.StreamReader = connection._reader  # type: ignore[assignment]
        self.writer: asyncio.StreamWriter = connection._writer  # type: ignore[assignment]
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.out: list[bytes] = []
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def flush(self) -> None:
        out, self.out = self.out, []
        if out and self.error is None:
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))

    def fail(self, error: BaseException) -> None:
        """The connection is done: every command still waiting gets ``error``."""
        if self.error is None:
            self.error = error
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.out.clear()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        with contextlib.suppress(Exception):
            self.connection._close()  # closed, and known to redis-py as closed


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a connect's failure as seen, for when every caller was cancelled."""
    if not future.cancelled():
        future.exception()


class Pipe:
    """Commands on one shared connection (see the module docstring)."""

    def __init__(self, make: Callable[[], AbstractConnection], timeout: float) -> None:
        # ``make`` gives a new, unconnected redis-py connection.
        self._make = make
        self.timeout = timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None
        self._closed = False

    async def call(self, packed: bytes) -> Any:
        """Send one command (packed by ``hiredis.pack_command``) and wait for its reply."""
        link = self._link
        if link is None or link.error is not None:
            link = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        link.waiting.append((future, loop.time() + self.timeout))
        if not link.out:
            loop.call_soon(link.flush)
        link.out.append(packed)
        if link.timer is None:
            link.timer = loop.call_at(loop.time() + self.timeout, self._check, link)
        return await future

    def _check(self, link: _Link) -> None:
        """The watchdog: fail the link once its oldest command is past its time."""
        link.timer = None
        if not link.waiting or link.error is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = link.waiting[0][1]
        if deadline <= loop.time():
            link.fail(rexc.TimeoutError("Timeout reading from Redis"))
            return
        link.timer = loop.call_at(deadline, self._check, link)

    async def _connect(self) -> _Link:
        if self._closed:
            raise rexc.ConnectionError("the client is closed")
        connecting = self._connecting
        if connecting is None or connecting.done():
            # Made once for every caller that finds the link down; awaited through a
            # shield, so that a caller's cancel does not cancel the others' connect.
            connecting = self._connecting = asyncio.ensure_future(self._open())
            connecting.add_done_callback(_retrieved)
        return await asyncio.shield(connecting)

    async def _open(self) -> _Link:
        connection: AbstractConnection = self._make()
        try:
            async with asyncio.timeout(2 * self.timeout):
                await connection.connect()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            if isinstance(exc, TimeoutError) and not isinstance(exc, rexc.RedisError):
                raise rexc.TimeoutError("Timeout connecting to Redis") from None
            if isinstance(exc, OSError):
                raise rexc.ConnectionError(f"Error connecting to Redis: {exc}") from exc
            raise
        link = _Link(connection)
        link.task = asyncio.create_task(self._read(link), name="paylive-redis-pipe")
        self._link = link
        return link

    async def _read(self, link: _Link) -> None:
        parser = reply_parser()
        waiting = link.waiting
        try:
            while True:
                await read_into(link.reader, parser)
                for reply in whole_replies(parser):
                    if not waiting:
                        raise rexc.InvalidResponse("a reply that no command asked for")
                    future, _ = waiting.popleft()
                    if future.done():
                        continue  # its caller was cancelled
                    if isinstance(reply, Exception):  # an error reply, as redis-py maps it
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            link.fail(rexc.ConnectionError("the client is closed"))
            raise
        except (rexc.RedisError, OSError, hiredis.ProtocolError) as exc:
            error = exc if isinstance(exc, rexc.RedisError) else rexc.ConnectionError(str(exc))
            link.fail(error)

    async def close(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is None:
            return
        link.fail(rexc.ConnectionError("the client is closed"))
        if link.task is not None:
            link.task.cancel()
            await asyncio.wait({link.task})
