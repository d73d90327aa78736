"""Per-worker fan-out: which local sockets listen to which session.

One engine subscription per session channel with at least one local socket (and
one admin subscription while an admin feed is open), never one per socket. An
event arrives as bytes, is decoded once, and the same ``Encoded`` object (which
encodes each codec once) goes to every subscriber's bounded queue; a customer's
subscriber takes its customer view (``Encoded.customer``), which is that same object
unless the event carries a gateway effect (docs/protocol.md 4.1).

Slow-consumer policy, enforced in ``Subscriber.push``: a socket whose queue is full
is closed with 1013; it reconnects with ``since`` and is replayed what it missed.
Nobody else waits for it.

Ordering (``core.ordering``): each subscriber delivers durable events in ``seq``
order with no gaps. An event ahead of the next expected seq is held and the gap is
filled from the engine's history (or, when the history no longer has it, by a fresh
snapshot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..core.codec import Encoded, Message
from ..core.ordering import SeqOrder
from ..core.protocol import CloseCode
from ..core.session import PROCESSING, Session
from ..engine import Engine, EngineUnavailable

log = logging.getLogger("paylive.hub")

# A drain closes one slice of its sockets this often (at 10 s and 5,000 sockets: 25
# sockets every 50 ms).
DRAIN_SLICE_S = 0.05
# A fill whose history read failed is tried again after these pauses: a failure of a
# moment (the shared Redis connection timed out under load) must not leave a socket
# without what it missed, and no resync follows while the subscription is healthy.
# Past them the engine is down for longer, and its subscription's resync takes over.
FILL_RETRIES_S = (0.1, 0.5, 2.0)

# A coroutine function: ``Subscriber._send_now`` steps the coroutine itself.
Send = Callable[[str | bytes], Coroutine[Any, Any, None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]


def snapshot_message(session: Session, now: int) -> Encoded:
    return Encoded.of(
        Message("snapshot", {"session": session.to_public()}, session.id, session.seq, now)
    )


class Subscriber(SeqOrder[Encoded]):
    """One socket's side of the hub: its delivery order (``SeqOrder``), and a bounded
    queue drained by a writer task that runs only while there is something to send.

    An idle socket holds no task, no queue and no future: a writer task, its
    coroutine and a deque cost about 1.5 KB, which at 20,000 idle sockets is 30 MB."""

    __slots__ = (
        "kind",
        "subprotocol",
        "_slim",
        "_pending",
        "_limit",
        "_writer",
        "_send",
        "_close",
        "closing",
        "_closer",
        "after_begin",
    )

    def __init__(
        self,
        kind: str,
        subprotocol: str,
        queue_size: int,
        send: Send,
        close: Close,
        staff: bool = False,
    ) -> None:
        # A customer socket follows one session's seq; an admin feed interleaves all.
        super().__init__(ordered=kind == "customer")
        self.kind = kind
        self.subprotocol = subprotocol
        # A customer's channel is sent the customer's view of each message
        # (``Encoded.customer``); staff watching one session (``staff``) see all.
        self._slim = kind == "customer" and not staff
        self._pending: deque[Encoded] | None = None
        self._limit = queue_size
        self._writer: asyncio.Task[None] | None = None
        self._send = send
        self._close = close
        self.closing = False
        self._closer: asyncio.Task[None] | None = None
        # Set by a resync that found this subscriber still catching up: run once it
        # goes live, so that what the resync replayed to the others reaches it too.
        self.after_begin: Callable[[], None] | None = None

    def begin(self, last_seq: int) -> bool:
        gap = super().begin(last_seq)
        hook, self.after_begin = self.after_begin, None
        if hook is not None:
            hook()
        return gap

    # Called by the hub (synchronously, never blocking) --------------------

    def push(self, event: Encoded) -> None:
        if self.closing:
            return
        if self._slim:
            # Here, where every message to the socket passes (live, replayed, held in
            # order, a resync's): none reaches a customer whole by another way.
            event = event.customer
        pending = self._pending
        if self._writer is None and not pending:
            self._send_now(event)
            return
        if pending is None:
            pending = self._pending = deque()
        elif len(pending) >= self._limit:
            metrics.SLOW_CONSUMERS.inc()
            self.kill(CloseCode.TRY_LATER, "too slow to keep up: reconnect with since")
            return
        pending.append(event)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def _send_now(self, event: Encoded) -> None:
        """Send ``event`` on an idle socket without a writer task: the send coroutine
        is stepped here, and it almost always finishes in that one step (the server's
        send writes to the transport and returns unless its buffer is full). A task
        and its scheduling per message were the largest part of a countdown's cost.
        When the send must wait, a writer task takes it over where it stopped, and
        what is pushed meanwhile queues behind it, in order, as before."""
        send = self._send(event.frame(self.subprotocol))
        try:
            waiting = send.send(None)
        except StopIteration:
            _sent(event)
            return
        except Exception:
            # The peer is gone: the socket's reader sees the disconnect and leaves.
            self.closing = True
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._write(_Resumed(send, waiting, event))
        )

    def kill(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    # The writer task ---------------------------------------------------------

    async def _write(self, resumed: _Resumed | None = None) -> None:
        """Send what is queued, in order, then end (the next push starts another);
        first the send ``_send_now`` began, if it had to wait."""
        try:
            if resumed is not None:
                await resumed.finish()
                _sent(resumed.event)
            pending = self._pending
            while pending and not self.closing:
                event = pending.popleft()
                await self._send(event.frame(self.subprotocol))
                _sent(event)
        except Exception:
            # The peer is gone: the socket's reader sees the disconnect and leaves.
            self.closing = True
        finally:
            self._writer = None
            if not self._pending:
                self._pending = None  # an idle socket keeps no queue (nor its last message)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until what is queued has been sent, or the
        close that ``kill`` started has gone out; then stop."""
        for task in (self._writer, self._closer):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        self.closing = True


def _sent(event: Encoded) -> None:
    metrics.delivered(event.type)
    if event.durable and event.ts:
        metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - event.ts / 1000))


class _Resumed:
    """A send coroutine stepped once by ``Subscriber._send_now`` that stopped on
    ``waiting`` (what it awaits: a future, or None for a bare yield); ``finish`` runs
    it to its end inside the writer task, passing on each wait as the task would."""

    __slots__ = ("send", "waiting", "event")

    def __init__(self, send: Coroutine[Any, Any, None], waiting: object, event: Encoded) -> None:
        self.send, self.waiting, self.event = send, waiting, event

    async def finish(self) -> None:
        send, waiting = self.send, self.waiting
        while True:
            try:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    # As a task does with a future its coroutine yields: the flag says
                    # "yielded by an await" and is taken down by whoever waits on it,
                    # here before this task's own await raises it again.
                    waiting._asyncio_future_blocking = False  # type: ignore[attr-defined]
                    await waiting  # type: ignore[misc]
            except BaseException as exc:  # a cancel, or the future's error: pass it in
                try:
                    waiting = send.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting = send.send(None)
            except StopIteration:
                return


@dataclass
class Channel:
    """What this worker knows of one session with local sockets."""

    subscribers: set[Subscriber] = field(default_factory=set)
    status: str | None = None
    attempt: int = 0
    deadline: int | None = None
    seq: int = 0

    def learn(self, session: dict[str, Any], seq: int) -> None:
        if seq < self.seq:
            return
        self.seq = seq
        self.status = session.get("status")
        self.attempt = int(session.get("attempt") or 0)
        self.deadline = session.get("deadline")


class Place:
    """A place on one session's channel on this worker, held (``Hub.hold``) for an open
    still on its way: ``Hub.join`` passes it to the subscriber, ``release`` gives it
    back (after a join, or a second time, it does nothing)."""

    __slots__ = ("_hub", "session_id", "held")

    def __init__(self, hub: Hub, session_id: str) -> None:
        self._hub = hub
        self.session_id = session_id
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._hub._unhold(self.session_id)


# The admin feed's snapshot; True marks one sent after a resync.
AdminSnapshot = Callable[[bool], Awaitable[Encoded]]
Clock = Callable[[], int]


class Hub:
    def __init__(
        self,
        engine: Engine,
        admin_snapshot: AdminSnapshot,
        clock: Clock,
        resync_batch: int = 32,
        resync_pause_ms: int = 20,
        countdown_slices: int = 1,
    ) -> None:
        self._engine = engine
        self._resync_batch = max(1, resync_batch)
        self._resync_pause = resync_pause_ms / 1000
        self._resync_task: asyncio.Future[None] | None = None
        self._admin_snapshot = admin_snapshot
        self._clock = clock
        self.channels: dict[str, Channel] = {}
        # The same channels, by countdown slice: a sweep looks only at its own slice.
        self._slices: list[dict[str, Channel]] = [{} for _ in range(max(1, countdown_slices))]
        # Set while any channel is open: a worker with no customer socket has no
        # countdown to send, and its countdown loop sleeps on this instead of waking
        # fifty times a second for nothing.
        self._occupied = asyncio.Event()
        # The last event decoded, for its second arrival (a worker that follows both a
        # session's channel and the admin channel gets each event twice, back to back).
        self._last_payload = b""
        self._last_event: Encoded | None = None
        self.admins: set[Subscriber] = set()
        self._subscribed: set[str | None] = set()
        # Places held by opens on their way, by session: counted as sockets already.
        self._held: dict[str, int] = {}
        # One lock per channel being (un)subscribed, so a reconnect storm over many
        # sessions is not serialised behind one lock.
        self._locks: dict[str | None, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by a drain (or ``close_all``): the close every subscriber gets, those that
        # join afterwards too. An event stream or a long-poll that starts on a kept-alive
        # connection meanwhile was held past the window, until uvicorn cut it.
        self.closing: tuple[int, str] | None = None
        engine.set_listeners(self.on_event, self.on_resync)

    # Membership --------------------------------------------------------------

    async def join(
        self, session_id: str, subscriber: Subscriber, place: Place | None = None
    ) -> None:
        """Add a socket (not yet live: call ``subscriber.begin`` after the catch-up),
        in the ``place`` held for it if any."""
        if place is not None:
            # In the same step as the add below: the place is never counted twice, nor
            # free for a moment.
            place.release()
        channel = self.channels.get(session_id)
        if channel is None:
            channel = self.channels[session_id] = Channel()
            self._slice_of(session_id)[session_id] = channel
            self._occupied.set()
        channel.subscribers.add(subscriber)
        metrics.SOCKETS.labels("customer").inc()
        self._close_late(subscriber)
        await self._sync(session_id)

    async def leave(self, session_id: str, subscriber: Subscriber) -> None:
        channel = self.channels.get(session_id)
        if channel is None or subscriber not in channel.subscribers:
            return
        channel.subscribers.discard(subscriber)
        metrics.SOCKETS.labels("customer").dec()
        if not channel.subscribers:
            del self.channels[session_id]
            del self._slice_of(session_id)[session_id]
            if not self.channels:
                self._occupied.clear()
            await self._sync_quietly(session_id)

    async def join_admin(self, subscriber: Subscriber) -> None:
        self.admins.add(subscriber)
        metrics.SOCKETS.labels("admin").inc()
        self._close_late(subscriber)
        await self._sync(None)

    def _close_late(self, subscriber: Subscriber) -> None:
        """A subscriber that joins once the hub is closing is closed at once, as the
        ones it held are (a poll is answered with what it read)."""
        if self.closing is not None:
            subscriber.kill(*self.closing)

    async def leave_admin(self, subscriber: Subscriber) -> None:
        if subscriber in self.admins:
            self.admins.discard(subscriber)
            metrics.SOCKETS.labels("admin").dec()
            await self._sync_quietly(None)

    def sockets_on(self, session_id: str) -> int:
        """How many sockets on this worker follow ``session_id``, or hold a place to."""
        channel = self.channels.get(session_id)
        joined = len(channel.subscribers) if channel is not None else 0
        return joined + self._held.get(session_id, 0)

    def hold(self, session_id: str, cap: int) -> Place | None:
        """A place among the ``cap`` of ``session_id`` on this worker, or None when all
        are taken. An open awaits before it joins (its handshake, its ticket spent): it
        holds its place from its check on, so that opens in flight together cannot all
        pass the cap. Join with it, or release it."""
        if self.sockets_on(session_id) >= cap:
            return None
        self._held[session_id] = self._held.get(session_id, 0) + 1
        return Place(self, session_id)

    def _unhold(self, session_id: str) -> None:
        left = self._held.get(session_id, 0) - 1
        if left > 0:
            self._held[session_id] = left
        else:
            self._held.pop(session_id, None)

    def _slice_of(self, session_id: str) -> dict[str, Channel]:
        return self._slices[hash(session_id) % len(self._slices)]

    def learn(self, session: Session) -> None:
        channel = self.channels.get(session.id)
        if channel is not None:
            channel.learn(session.to_public(), session.seq)

    async def _sync(self, key: str | None) -> None:
        """Make the engine subscription for ``key`` match whether anyone local listens.
        Serialised per channel, so a leave and a join racing on one end subscribed."""
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                wanted = bool(self.admins) if key is None else key in self.channels
                if wanted and key not in self._subscribed:
                    await self._engine.subscribe(key)
                    self._subscribed.add(key)
                elif not wanted and key in self._subscribed:
                    self._subscribed.discard(key)
                    await self._engine.unsubscribe(key)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _sync_quietly(self, key: str | None) -> None:
        try:
            await self._sync(key)
        except EngineUnavailable:
            pass  # the engine forgets subscriptions when it reconnects anyway

    # From the engine -----------------------------------------------------------

    def on_event(self, session_id: str | None, payload: bytes) -> None:
        if payload == self._last_payload and self._last_event is not None:
            event = self._last_event
        else:
            try:
                event = Encoded.from_json(payload)
            except ValueError:
                log.error("dropped an undecodable event from the engine")
                return
            self._last_payload, self._last_event = payload, event
        if session_id is None:
            for admin in list(self.admins):
                admin.deliver(event)
            return
        channel = self.channels.get(session_id)
        if channel is None:
            return
        if event.type == "state":
            channel.learn(event.wire["data"]["session"], event.seq or 0)
        gap = False
        for subscriber in list(channel.subscribers):
            gap |= subscriber.deliver(event)
        if gap:
            self.request_fill(session_id)

    def request_fill(self, session_id: str, everyone: bool = False) -> None:
        """Fill the gaps of ``session_id``'s lagging subscribers from the history
        (``everyone``: replay to every live one, as a resync does)."""
        self._spawn(self._fill(session_id, everyone))

    def on_resync(self) -> None:
        """The engine lost its subscription for a while: catch everyone up (once; a
        resync that arrives during another starts it over)."""
        metrics.RESYNCS.inc()
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.ensure_future(self._resync())

    async def _fill(self, session_id: str, everyone: bool = False) -> None:
        """Replay the history to the subscribers with a gap (``everyone``: to all live
        ones, after a resync); a snapshot only to those the history cannot serve. A
        failed read is tried again (``FILL_RETRIES_S``)."""
        for pause in (*FILL_RETRIES_S, None):
            try:
                await self._fill_once(session_id, everyone)
                return
            except EngineUnavailable:
                if pause is None:
                    return  # down for longer: the resync after it comes back repairs it
                await asyncio.sleep(pause)

    async def _fill_once(self, session_id: str, everyone: bool) -> None:
        channel = self.channels.get(session_id)
        if channel is None:
            return
        if everyone:
            # A subscriber still catching up read the session before the resync, maybe
            # before the subscription was back: its replay may miss what was saved in
            # between. It is replayed to as well once it goes live.
            for waiting in channel.subscribers:
                if not waiting.live:
                    waiting.after_begin = lambda: self.request_fill(session_id, True)
        lagging = [s for s in channel.subscribers if s.live and (everyone or s.has_gap)]
        if not lagging:
            return
        since = min(s.last_seq for s in lagging)
        history = await self._engine.history(session_id, since)
        for raw in history or []:
            event = Encoded.from_json(raw)
            if event.type == "state":
                channel.learn(event.wire["data"]["session"], event.seq or 0)
            for subscriber in lagging:
                subscriber.deliver(event)
        still = lagging if history is None else [s for s in lagging if s.has_gap]
        if history:
            metrics.CATCH_UPS.labels("replay").inc()
        if still:
            metrics.CATCH_UPS.labels("snapshot").inc()
            await self._snapshot_to(session_id, still)

    async def _snapshot_to(self, session_id: str, subscribers: list[Subscriber]) -> None:
        session = await self._engine.load(session_id)
        if session is None:
            # Gone from the store (a Redis restarted without persistence): say so rather
            # than leave the sockets waiting for events that will never come.
            for subscriber in subscribers:
                subscriber.kill(CloseCode.UNKNOWN_SESSION, "the session no longer exists")
            return
        self.learn(session)
        snapshot = snapshot_message(session, self._clock())
        for subscriber in subscribers:
            subscriber.reset(snapshot, session.seq)

    async def _resync(self) -> None:
        """Every local channel replays what it missed from its history, a batch of
        channels at a time with a pause between batches, so that a worker with
        thousands of sockets neither floods the engine nor stalls its own loop. Admin
        feeds get a fresh snapshot marked ``resync``: the events in between may be
        missing from the feed, and the snapshot replaces what it showed."""
        batch, pause = self._resync_batch, self._resync_pause
        ids = list(self.channels)
        try:
            if self.admins:
                snapshot = await self._admin_snapshot(True)
                for admin in list(self.admins):
                    if admin.live:
                        admin.push(snapshot)
            for start in range(0, len(ids), batch):
                if start:
                    await asyncio.sleep(pause)
                await asyncio.gather(
                    *(
                        self._fill(session_id, everyone=True)
                        for session_id in ids[start : start + batch]
                    )
                )
        except EngineUnavailable:
            return  # the engine is down again: its next resync starts over

    # Sweeps, run by the worker's loops --------------------------------------

    async def occupied(self) -> None:
        """Return once this worker holds at least one customer channel."""
        await self._occupied.wait()

    def countdown_sweep(self, now: int, part: int = 0) -> int:
        """One ``countdown`` per processing session with local sockets in slice ``part``
        of the hub's ``countdown_slices``; returns how many. Slices let one loop spread
        a second's countdowns over the second instead of sending thousands in one burst."""
        sent = 0
        for session_id, channel in self._slices[part % len(self._slices)].items():
            if channel.status != PROCESSING or channel.deadline is None:
                continue
            # The wire map directly (as Message.to_wire makes it): thousands a second.
            message = Encoded(
                {
                    "type": "countdown",
                    "session": session_id,
                    "seq": channel.seq,
                    "ts": now,
                    "data": {
                        "attempt": channel.attempt,
                        "remaining_ms": max(0, channel.deadline - now),
                        "deadline": channel.deadline,
                    },
                }
            )
            for subscriber in channel.subscribers:
                if subscriber.live:
                    subscriber.push(message)
            sent += 1
        return sent

    def broadcast_admin(self, message: Encoded) -> None:
        for admin in list(self.admins):
            if admin.live:
                admin.push(message)

    async def drain(
        self, window_s: float, code: int, reason: str, forced: Callable[[], bool]
    ) -> int:
        """Close every socket held now evenly over ``window_s``, looking every
        ``DRAIN_SLICE_S`` which are due (customers first, admin feeds last); the rest
        at once when ``forced`` turns true. By the clock, not by counting slices: a
        busy loop that wakes late closes what is due by then, so the window holds.
        Returns how many were held."""
        self.closing = (code, reason)
        held = [s for channel in self.channels.values() for s in channel.subscribers]
        held += list(self.admins)
        loop = asyncio.get_running_loop()
        start = loop.time()
        closed = 0
        while closed < len(held) and not forced():
            elapsed = loop.time() - start
            due = min(len(held), int(len(held) * elapsed / window_s) + 1)
            for subscriber in held[closed:due]:
                subscriber.kill(code, reason)
            closed = max(closed, due)
            await asyncio.sleep(DRAIN_SLICE_S)
        for subscriber in held[closed:]:
            subscriber.kill(code, reason)
        return len(held)

    def close_all(self, code: int, reason: str) -> None:
        self.closing = (code, reason)
        for channel in self.channels.values():
            for subscriber in channel.subscribers:
                subscriber.kill(code, reason)
        for admin in self.admins:
            admin.kill(code, reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
