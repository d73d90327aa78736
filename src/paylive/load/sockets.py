"""The customers' sockets: open them, read them, reconnect them as a page would, close them."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .accounting import Tally
from .dialect import OPEN_TIMEOUT_S, Dialect, Message
from .records import Customer, Roster, Tracked

MAX_RECONNECTS = 3  # per customer, as a page would (with backoff)
OPEN_CONCURRENCY = 200  # WebSocket handshakes in flight at once
RETIRE_WAIT_S = 3.0  # for a finished session's last event before its socket closes
SERVICE_RESTART = 1012  # a draining worker's close (docs/protocol.md section 4.3)
_HINT = re.compile(r"reconnect_within_ms=([0-9]{1,7})")


def now_ms() -> float:
    return time.time() * 1000.0


def restart_hint_ms(code: int | None, reason: str | None) -> int | None:
    """The reconnect hint of a draining worker's close (1012 with
    ``reconnect_within_ms=<n>``); None for any other close."""
    if code != SERVICE_RESTART:
        return None
    found = _HINT.search(reason or "")
    return int(found.group(1)) if found else None


def reconnect_delay_s(code: int | None, reason: str | None, reconnects: int) -> float:
    """How long a page waits before it reconnects: a random delay within a restarting
    server's hint, as the JS client does; else a short backoff."""
    hint = restart_hint_ms(code, reason)
    if hint is not None:
        return random.uniform(0, hint) / 1000
    return 0.2 * reconnects


class Watchers(Protocol):
    """Who watches the sessions: sockets, or pollers. The driver hands sessions over."""

    async def retire(self, customer: Customer, session: Tracked) -> None:
        """``session`` is over: stop watching it."""
        ...

    async def adopt(self, customer: Customer, fresh: Tracked) -> bool:
        """Watch ``fresh`` instead; True when it may be driven at once."""
        ...


async def dial(url: str, dialect: Dialect, max_size: int) -> ClientConnection:
    return await connect(
        url,
        subprotocols=dialect.subprotocols,  # type: ignore[arg-type]
        open_timeout=OPEN_TIMEOUT_S,
        ping_interval=None,  # the server pings; answering is automatic
        compression=None,
        max_size=max_size,
        close_timeout=2,
    )


class SocketFleet:
    """One socket per customer; every message goes through the session's accounting."""

    def __init__(self, dialect: Dialect, roster: Roster, tally: Tally) -> None:
        self.dialect = dialect
        self.roster = roster
        self.tally = tally
        self.counts = tally.sockets
        self.stopping = False
        self._waiters: dict[str, tuple[int, asyncio.Event]] = {}
        # Customers between a close by the server and their socket's return.
        self.reconnecting = 0
        self._back = asyncio.Event()

    def on_message(self, session: Tracked, message: Message) -> None:
        received = now_ms()
        self.tally.types[str(message.get("type"))] += 1
        latency = session.observe(message, received)
        if latency is not None:
            self.tally.latency.append(latency)
        waiter = self._waiters.get(session.id)
        if waiter is not None and session.last >= waiter[0]:
            waiter[1].set()

    async def open_socket(
        self, customer: Customer, purpose: str = "initial", since: int | None = None
    ) -> bool:
        """Open the customer's socket and read its first message; counted under ``purpose``
        (initial, replacement or reconnect)."""
        session = customer.session
        failed = self.counts.open_failed
        try:
            conn = await dial(
                self.dialect.customer_url(session, since), self.dialect, self.dialect.max_size
            )
        except InvalidStatus as exc:
            failed[f"{purpose}:http_{exc.response.status_code}"] += 1
            return False
        except Exception as exc:  # noqa: BLE001 - every failure is a counted outcome
            failed[f"{purpose}:{type(exc).__name__}"] += 1
            return False
        try:
            first = await self.dialect.greet_customer(conn, session, since)
        except ConnectionClosed:
            failed[f"{purpose}:closed_{conn.close_code}"] += 1
            return False
        except Exception as exc:  # noqa: BLE001
            failed[f"{purpose}:{type(exc).__name__}"] += 1
            await conn.close()
            return False
        customer.conn = conn
        customer.closing = False
        session.observed = True
        if first is not None:
            self.on_message(session, first)
        self.counts.opened[purpose] += 1
        customer.reader = asyncio.create_task(self.read(customer, conn))
        return True

    async def open_all(self) -> None:
        slots = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(customer: Customer) -> None:
            async with slots:
                opened = await self.open_socket(customer)
            if opened:
                self.roster.watch(customer, customer.session)

        await asyncio.gather(*(one(c) for c in self.roster.customers))

    async def read(self, customer: Customer, conn: ClientConnection) -> None:
        session = customer.session
        try:
            async for raw in conn:
                message = await self.dialect.frame(conn, raw)
                if message is not None:
                    self.on_message(session, message)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - counted, then treated as a close
            self.counts.close_codes[f"reader_{type(exc).__name__}"] += 1
        if customer.closing or self.stopping or customer.conn is not conn:
            return
        # The server (or the network) closed it: count it, then come back with
        # `since` as a page would, a bounded number of times.
        self.counts.close_codes[str(conn.close_code)] += 1
        self.counts.closed_at.append(time.time())
        customer.conn = None
        if customer.reconnects >= MAX_RECONNECTS or session.retired:
            return
        await self._reconnect(customer, conn)

    async def _come_back(self, customer: Customer, conn: ClientConnection) -> None:
        session = customer.session
        customer.reconnects += 1
        self.counts.reconnects += 1
        await asyncio.sleep(
            reconnect_delay_s(conn.close_code, conn.close_reason, customer.reconnects)
        )
        # A page whose reconnect fails tries again with backoff, a bounded number of times.
        # The reconnect counts when it first arrives at the server (its first try): that
        # is the load a restart puts on the other workers, however long they take.
        if not self.stopping and not customer.closing and not session.retired:
            self.counts.reconnect_tried_at.append(time.time())
        while not self.stopping and not customer.closing and not session.retired:
            if await self.open_socket(customer, "reconnect", since=session.last):
                return
            if customer.reconnects >= MAX_RECONNECTS:
                return
            customer.reconnects += 1
            await asyncio.sleep(0.5 * customer.reconnects)

    async def _reconnect(self, customer: Customer, conn: ClientConnection) -> None:
        """Come back after the server closed ``conn``; counted while under way, so that
        the end of the run waits for the customers still coming back."""
        self.reconnecting += 1
        self._back.clear()
        try:
            await self._come_back(customer, conn)
        finally:
            self.reconnecting -= 1
            if not self.reconnecting:
                self._back.set()

    async def close_customer(self, customer: Customer) -> None:
        customer.closing = True
        conn, reader = customer.conn, customer.reader
        customer.conn = None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 3)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        if reader is not None:
            reader.cancel()

    async def wait_caught_up(self, session: Tracked, target: int, timeout: float) -> None:
        if session.last >= target:
            return
        event = asyncio.Event()
        self._waiters[session.id] = (target, event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.pop(session.id, None)

    async def drain(self, timeout: float) -> None:
        """Give the customers still reconnecting, then the sockets, ``timeout`` seconds
        each to come back and to receive what the server says it sent."""
        if self.reconnecting:
            try:
                await asyncio.wait_for(self._back.wait(), timeout)
            except TimeoutError:
                pass
        behind = [
            s
            for s in self.roster.sessions
            if s.observed and not s.retired and s.final is not None and s.last < s.final
        ]
        if behind:
            await asyncio.wait(
                [
                    asyncio.ensure_future(self.wait_caught_up(s, s.final or 0, timeout))
                    for s in behind
                ],
                timeout=timeout + 1,
            )

    async def close_all(self) -> None:
        if self.stopping:
            return  # once: the second call (from the final cleanup) finds nothing open
        self.stopping = True
        open_ = [c for c in self.roster.customers if c.conn is not None]
        self.counts.held_at_end = len(open_)
        await asyncio.gather(*(self.close_customer(c) for c in open_))

    # Watchers: a retired session's socket closes once it has its last event, and the
    # customer opens a fresh socket for the fresh session.

    async def retire(self, customer: Customer, session: Tracked) -> None:
        await self.wait_caught_up(session, session.seq, RETIRE_WAIT_S)
        await self.close_customer(customer)
        self.counts.retired_closed += 1

    async def adopt(self, customer: Customer, fresh: Tracked) -> bool:
        customer.session = fresh
        customer.reconnects = 0
        return await self.open_socket(customer, "replacement")
