"""The fan-out side: one subscription connection per engine, and its supervisor.

Plain PUBLISH/SUBSCRIBE works on one node and, broadcast over the bus, on Cluster,
where subscribing on any one node receives everything. Each engine holds exactly ONE
subscription connection, outside the command pool and without a read timeout. One
listener task reads it and hands the raw bytes to ``on_event`` (payloads are never
decoded here). Channels are subscribed on demand and the SUBSCRIBE is confirmed
before ``subscribe`` returns, so an event saved afterwards by any worker is delivered.

A subscription can die in two ways: loudly (the socket closes: the read fails) or
silently (no error, no delivery: a frozen server, a half-open TCP connection, a lost
cluster node). For the second, the supervisor sends a PING on the subscription
connection itself every ``redis_probe_interval_ms`` (answered in-band, never through
the command pool: a saturated pool is not a lost subscription) and expects its pong
within ``redis_probe_timeout_ms``, or at least other messages that show the
connection is still delivering. Either way: ``healthy`` goes False, the connection is
dropped, a new one is made with capped exponential backoff and jitter, every current
channel is subscribed again, and only then ``on_resync`` is called, so that the
catch-up it triggers (a replay from each session's history) cannot miss an event.
On Cluster the new connection goes to the next known node after each failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection

from ...settings import RedisSettings
from ..base import EventListener
from . import keys
from .client import Client
from .pipe import read_into, reply_parser, whole_replies

log = logging.getLogger(__name__)

# Channels per SUBSCRIBE command when a connection subscribes everything again.
SUBSCRIBE_CHUNK = 1_000


class _SubscriptionLost(Exception):
    """The subscription connection stopped delivering; make a new one."""


class Subscription:
    """What this engine should be subscribed to, and the connection that is."""

    def __init__(
        self,
        client: Client,
        settings: RedisSettings,
        on_event: EventListener,
        on_resync: Callable[[], None],
        connect: Callable[[int], AbstractConnection] | None = None,
        sharded: bool = False,
        home_tag: str | None = None,
    ) -> None:
        self._client = client
        # Sharded (Redis Cluster, one of these per node): SSUBSCRIBE to the channels
        # whose slots this node serves, on a connection to that node.
        self._connect = connect or client.subscriber_connection
        self.sharded = sharded
        self._verb, self._unverb = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self._message = b"smessage" if sharded else b"message"
        self._confirmation = b"ssubscribe" if sharded else b"subscribe"
        self._timeout = client.timeout
        self._probe_interval = settings.redis_probe_interval_ms / 1000
        self._probe_timeout = settings.redis_probe_timeout_ms / 1000
        self._backoff_base = settings.redis_backoff_base_ms / 1000
        self._backoff_cap = settings.redis_backoff_cap_ms / 1000
        self._on_event = on_event
        self._on_resync = on_resync
        # What should be subscribed (channel -> session id, None for the admin
        # channel); the listener delivers only what is in it.
        self._channels: dict[bytes, str | None] = {}
        # A channel of this engine's own, never published to: it keeps the connection
        # in subscribed mode (where PING is answered in-band) whatever else it follows.
        # Sharded, it must hash to a slot of the node: ``home_tag`` is such a hash tag.
        tag = f"{{{home_tag}}}:" if home_tag else ""
        self._home = f"{keys.PREFIX}:{tag}home:{uuid.uuid4().hex}".encode()
        self._probe_token: bytes | None = None
        self._probe_seen: asyncio.Future[bool] | None = None
        self.conn: AbstractConnection | None = None
        # SUBSCRIBE confirmations arrive in the order the channels were sent, so a
        # FIFO of (channel, waiter) pairs tells whom each confirmation is for.
        self._expect: deque[tuple[bytes, asyncio.Future[bool] | None]] = deque()
        self._send_lock = asyncio.Lock()
        self.healthy = False
        self.ready = asyncio.Event()
        self._lost = False  # a subscription was lost (or never made) since the last resync
        self._failures = 0
        self._reads = 0  # replies read so far: progress, which a silent connection makes none of
        self.closed = False

    # The API ------------------------------------------------------------------

    async def subscribe(self, session_id: str | None) -> None:
        """Subscribe, and wait (at most ~2 s) until Redis confirms it.

        While the subscription is down this returns at once: the channel is subscribed
        with all others when the connection is back, and ``on_resync`` follows.
        """
        await self.add(keys.channel(session_id, self.sharded), session_id)

    def channels(self) -> dict[bytes, str | None]:
        """What this subscription follows (a copy)."""
        return dict(self._channels)

    async def add(self, channel: bytes, session_id: str | None) -> None:
        """``subscribe`` by channel name (see there)."""
        if channel in self._channels:
            return
        self._channels[channel] = session_id
        conn = self.conn
        if conn is None:
            return
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            # Bounded: a send that cannot finish closes the connection (redis-py drops
            # it), and the supervisor then makes a new one with every channel.
            async with asyncio.timeout(2 * self._timeout):
                async with self._send_lock:
                    if conn is not self.conn:
                        return  # replaced meanwhile; the new connection subscribed it
                    self._expect.append((channel, waiter))
                    await conn.send_command(self._verb, channel)
                confirmed = await waiter
            if not confirmed:
                log.debug("subscription to %r not confirmed; it follows the reconnection", channel)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            # The supervisor notices a dead connection through the read loop or the
            # probe, subscribes everything again and calls on_resync.
            log.debug("subscribing to %r failed: %r", channel, exc)

    async def unsubscribe(self, session_id: str | None) -> None:
        await self.remove(keys.channel(session_id, self.sharded))

    async def remove(self, channel: bytes) -> None:
        if self._channels.pop(channel, False) is False:
            return
        conn = self.conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(2 * self._timeout), self._send_lock:
                if conn is self.conn:
                    await conn.send_command(self._unverb, channel)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            log.debug("unsubscribing from %r failed: %r", channel, exc)

    # The supervisor -------------------------------------------------------------

    def _backoff(self) -> float:
        """Capped exponential backoff with jitter: half fixed, half random."""
        delay = min(self._backoff_cap, self._backoff_base * 2.0 ** min(self._failures, 30))
        return delay / 2 + random.uniform(0, delay / 2)

    async def supervise(self) -> None:
        """Keep one subscription alive for the engine's life. Never returns by itself."""
        self._lost = False
        while not self.closed:
            conn: AbstractConnection | None = None
            try:
                conn = self._connect(self._failures)
                await self._run(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "reconnect"
                if self.healthy:
                    log.warning(
                        "Redis subscription lost (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                else:
                    log.debug("Redis subscription attempt failed (%s: %s)", type(exc).__name__, exc)
            finally:
                self.healthy = False
                self.ready.clear()
                self._lost = True
                await self._drop(conn)
            self._failures += 1
            await asyncio.sleep(self._backoff())

    async def _drop(self, conn: AbstractConnection | None) -> None:
        self.conn = None
        while self._expect:
            _, waiter = self._expect.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
        if self._probe_seen is not None and not self._probe_seen.done():
            self._probe_seen.set_result(False)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _run(self, conn: AbstractConnection) -> None:
        """Connect, subscribe every channel, then probe until the connection fails."""
        # The handshake reads have no timeout on this connection: bound them here, so
        # that a frozen server cannot hold the reconnection forever.
        async with asyncio.timeout(2 * self._timeout):
            await conn.connect()
        self.conn = conn
        reader = asyncio.create_task(self._read(conn), name="paylive-redis-reader")
        try:
            async with asyncio.timeout(2 * self._timeout):
                confirmed = await self._subscribe_all(conn)
            first: set[asyncio.Future[Any]] = {reader, confirmed}
            done, _ = await asyncio.wait(
                first, timeout=2 * self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if confirmed not in done or not confirmed.result():
                if reader in done:
                    reader.result()
                raise _SubscriptionLost("the subscriptions were not confirmed in time")
            self.healthy = True
            self.ready.set()
            if self._lost:
                self._lost = False
                self._resync()
            await self._probe_until_lost(reader)
        finally:
            reader.cancel()
            await asyncio.wait({reader})

    async def _subscribe_all(self, conn: AbstractConnection) -> asyncio.Future[bool]:
        """SUBSCRIBE every current channel; the future resolves with the last confirmation."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            channels = [self._home, *self._channels]
            for channel in channels[:-1]:
                self._expect.append((channel, None))
            self._expect.append((channels[-1], done))
            for i in range(0, len(channels), SUBSCRIBE_CHUNK):
                await conn.send_command(self._verb, *channels[i : i + SUBSCRIBE_CHUNK])
        return done

    async def _probe_until_lost(self, reader: asyncio.Task[None]) -> None:
        """Every probe interval, PING on the subscription connection itself.

        A subscribed RESP2 connection answers ``PING token`` in-band, as a ``pong``
        message in order with the published ones; it never touches the command pool,
        so a worker whose pool is saturated does not mistake that for a lost
        subscription. The connection is lost when the pong does not come back and
        nothing else arrived either for ``redis_probe_timeout_ms`` (silent: a frozen
        server, a half-open connection), or when the answer is not in-band (the
        connection was unsubscribed behind our back). A pong that is late behind a
        backlog of messages is not a loss: the connection is delivering.
        """
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait({reader}, timeout=self._probe_interval)
            if done:
                reader.result()
                raise _SubscriptionLost("the subscription connection closed")
            conn = self.conn
            assert conn is not None
            token = uuid.uuid4().hex.encode()
            seen: asyncio.Future[bool] = loop.create_future()
            self._probe_token, self._probe_seen = token, seen
            async with asyncio.timeout(2 * self._timeout), self._send_lock:
                await conn.send_command("PING", token)
            while True:
                reads = self._reads
                either: set[asyncio.Future[Any]] = {reader, seen}
                arrived, _ = await asyncio.wait(
                    either, timeout=self._probe_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if reader in arrived:
                    reader.result()
                    raise _SubscriptionLost("the subscription connection closed")
                if seen in arrived:
                    if not seen.result():
                        raise _SubscriptionLost("the connection is no longer subscribed")
                    break
                if self._reads == reads:
                    raise _SubscriptionLost("no answer to PING: the subscription is silent")
                # Busy, not silent: the pong is queued behind messages still being read.
            # Only a connection that answered resets the backoff: one that fails right
            # after subscribing must not reconnect (and resync) in a tight loop.
            self._failures = 0

    # The listener -----------------------------------------------------------------

    async def _read(self, conn: AbstractConnection) -> None:
        """The single listener: read replies and messages until the connection fails."""
        # Read and parsed here rather than by ``read_response``, which pays an await, a
        # timeout and redis-py's parser per message: every message a read brings is
        # handed on in one go (about 5 messages a state change on two workers).
        parser = reply_parser()
        stream = conn._reader
        assert stream is not None
        while True:
            await read_into(stream, parser)
            for reply in whole_replies(parser):
                self._on_reply(reply)

    def _on_reply(self, reply: Any) -> None:
        self._reads += 1
        if isinstance(reply, Exception):
            raise reply
        if not isinstance(reply, list):
            # Only a connection out of subscribed mode answers PING this way.
            self._pong(None)
            return
        kind = reply[0]
        if kind == self._message:
            self._deliver(reply[1], reply[2])
        elif kind == self._confirmation:
            self._confirm(reply[1])
        elif kind == b"pong":
            self._pong(reply[1])
        elif kind == b"sunsubscribe" and reply[1] in self._channels:
            # Redis unsubscribed a channel this still wants: its slot moved to
            # another node. The sharded supervisor routes it there.
            raise _SubscriptionLost(f"channel {reply[1]!r} moved to another node")
        # Other "unsubscribe" replies need nothing.

    def _pong(self, token: bytes | None) -> None:
        """The answer to a PING: in-band with its token, or (None) out of band."""
        seen = self._probe_seen
        if seen is not None and not seen.done() and token in (self._probe_token, None):
            seen.set_result(token is not None)

    def _confirm(self, channel: bytes) -> None:
        if not self._expect:
            log.warning("unexpected subscription confirmation for %r", channel)
            return
        expected, waiter = self._expect.popleft()
        if expected != channel:
            log.warning("subscription confirmed for %r, expected %r", channel, expected)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        if channel not in self._channels:
            return  # unsubscribed while the message was on its way
        try:
            self._on_event(self._channels[channel], payload)
        except Exception:
            log.exception("the event listener failed on %r", channel)

    def _resync(self) -> None:
        try:
            self._on_resync()
        except Exception:
            log.exception("the resync listener failed")
