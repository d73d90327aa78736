"""Every connection waiting on the listening socket taken in one turn of the loop.

uvloop (libuv) accepts one connection each time the loop reports its listening socket
readable. A busy worker's turn takes milliseconds, so under overload new connections
were taken one a turn: measured with 5,000 sockets and a memory worker asked 6,000
changes/s, a new connection's first request waited up to 9.9 s in the kernel's accept
queue (the generator's p99 over all its commands 2.2 s), where kept-alive ones were
answered in milliseconds (BENCHMARKS.md, "New connections under overload"). A customer
opening the checkout in a flash sale is such a new connection, and so is a refusal that
must come back fast.

``Acceptor`` watches a duplicate of the listening socket beside the loop's own server
and, each time it is readable, accepts what is waiting, up to ``PER_TURN``; the rest is
reported again at the next turn. Each connection goes to the same protocol as the
server's (``loop.connect_accepted_socket``), so it is bounded and counted the same way.
The server keeps its own accept; whichever takes a connection serves it. Stopping the
acceptor (a draining worker) closes only the duplicate, never the shared socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# The most connections taken in one turn: a flood of connections waits a turn or two
# rather than holding this one for all of them.
PER_TURN = 256


class Acceptor:
    """Takes the connections waiting on the listening socket ``fd`` for ``protocol``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self._loop = loop
        self._protocol = protocol
        # A duplicate: the loop watches one file descriptor once, and the server's own
        # watch of the shared socket stays as it is; closing it closes only the copy.
        self._sock = socket.socket(fileno=os.dup(fd))
        self._sock.setblocking(False)
        self._starting: set[asyncio.Task[object]] = set()
        self._loop.add_reader(self._sock.fileno(), self._take)

    def _take(self) -> None:
        for _ in range(PER_TURN):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing left: the server or another worker took the rest
            except OSError as exc:
                # Out of file descriptors, or a connection reset while it waited: the
                # server's own accept reports and handles the same; try next turn.
                log.debug("accepting a connection failed: %s", exc)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            starting = self._loop.create_task(
                self._loop.connect_accepted_socket(self._protocol, conn)
            )
            self._starting.add(starting)
            starting.add_done_callback(functools.partial(self._started, conn))

    def _started(self, conn: socket.socket, task: asyncio.Task[object]) -> None:
        self._starting.discard(task)
        if task.cancelled() or task.exception() is not None:
            # A transport that took the socket and closed it has detached it (this close
            # is then nothing); one never made (the loop stopped first, the protocol
            # failed) left it to us.
            if not task.cancelled():
                log.warning("a connection could not start: %r", task.exception())
            conn.close()

    @property
    def stopped(self) -> bool:
        return self._sock.fileno() == -1

    def stop(self) -> None:
        """Take no more connections (the shared socket stays open for the others)."""
        if self.stopped:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def accept_for(
    loop: asyncio.AbstractEventLoop,
    servers: Sequence[asyncio.base_events.Server],
    protocol: Callable[[], asyncio.Protocol],
) -> list[Acceptor]:
    """An acceptor beside each listening socket of ``servers``."""
    return [
        Acceptor(loop, sock.fileno(), protocol)
        for server in servers
        for sock in server.sockets or ()
    ]
