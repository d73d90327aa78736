"""The admin feeds: each receives every durable event of every session."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .accounting import Tally
from .dialect import Dialect, Message
from .records import FeedRecord
from .sockets import dial, now_ms

ADMIN_MAX_SIZE = 2**24


class AdminFeed:
    """One open admin feed and what it saw."""

    __slots__ = ("conn", "record", "reader", "closing")

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.record = FeedRecord()
        self.reader: asyncio.Task[None] | None = None
        self.closing = False


class AdminFeeds:
    def __init__(self, dialect: Dialect, tally: Tally) -> None:
        self.dialect = dialect
        self.tally = tally
        self.feeds: list[AdminFeed] = []
        self.stopping = False

    @property
    def records(self) -> list[FeedRecord]:
        return [f.record for f in self.feeds]

    def on_message(self, feed: AdminFeed, message: Message) -> None:
        latency = feed.record.observe(message, now_ms())
        if latency is not None:
            self.tally.admin_latency.append(latency)

    async def open(self, count: int) -> None:
        failed = self.tally.sockets.open_failed
        for _ in range(count):
            try:
                conn = await dial(self.dialect.admin_url(), self.dialect, ADMIN_MAX_SIZE)
                feed = AdminFeed(conn)
                self.on_message(feed, await self.dialect.greet_admin(conn))
            except InvalidStatus as exc:
                failed[f"admin_http_{exc.response.status_code}"] += 1
                continue
            except ConnectionClosed as exc:
                failed[f"admin_closed_{exc.rcvd.code if exc.rcvd else None}"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is a counted outcome
                failed[f"admin_{type(exc).__name__}"] += 1
                continue
            feed.reader = asyncio.create_task(self.read(feed))
            self.feeds.append(feed)

    async def read(self, feed: AdminFeed) -> None:
        codes = self.tally.sockets.close_codes
        try:
            async for raw in feed.conn:
                message = await self.dialect.frame(feed.conn, raw)
                if message is not None:
                    self.on_message(feed, message)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001
            codes[f"admin_reader_{type(exc).__name__}"] += 1
        if not feed.closing and not self.stopping:
            feed.record.closed_code = feed.conn.close_code
            codes[f"admin_{feed.conn.close_code}"] += 1

    async def close_all(self) -> None:
        self.stopping = True
        for feed in self.feeds:
            feed.closing = True
            try:
                await asyncio.wait_for(feed.conn.close(), 3)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            if feed.reader is not None:
                feed.reader.cancel()
