"""The HTTP transports of docs/protocol.md 4.2, for pages a WebSocket cannot reach:
Server-Sent Events (one session, and the admin feed) and long-polling.

Both are the hub's subscribers, as a socket is, and start with the socket's catch-up
(``sockets.catch_up``): any worker serves any request from the session's history, so
no request needs the worker of the one before it. An event stream is a slow client
like any socket: a bounded queue (past it, a ``close`` event with 1013 and the end of
the stream) and a bounded life (``PAYLIVE_STREAM_LIFETIME_MS``; EventSource reopens it
with ``Last-Event-ID``). A poll is held at most ``PAYLIVE_POLL_HOLD_MS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..core.codec import SSE, SSE_NO_IDS, Encoded, dumps_strict
from ..core.protocol import ErrorCode
from ..errors import Refused
from ..fanout.hub import Place, Subscriber, snapshot_message
from ..runtime import Runtime
from . import validation
from .auth import ADMIN, CUSTOMER, Principal
from .http import endpoint, runtime_of
from .sockets import ADMIN_QUEUE_FACTOR, FLUSH_TIMEOUT_S, catch_up
from .tickets import Admit, Opening, opening_of

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx buffers a proxied response unless told not to.
    (b"x-accel-buffering", b"no"),
]
# How long EventSource waits before it reopens a stream that ended (its `retry:`).
RECONNECT_MS = 1_000


def heartbeat(interval_ms: int) -> bytes:
    """What a stream sends every ``interval_ms`` (and once first): the ``: keep-alive``
    comment that protocol 4.2 promised, for proxies, in one event block with an
    ``event: ping`` saying the interval. EventSource never shows a page a comment, so
    a ping is the only way a page can tell a quiet stream from a dead one; a client that
    listens for no ``ping`` (every one before it) never sees it."""
    data = dumps_strict({"interval_ms": interval_ms})
    return b": keep-alive\nevent: ping\ndata: " + data + b"\n\n"


def close_event(code: int, reason: str) -> bytes:
    """The last event of a stream the server ends, with the close code a socket gets."""
    return b"event: close\ndata: " + dumps_strict({"code": code, "reason": reason}) + b"\n\n"


def _stream_opening(request: Request, *allowed: str, admit: Admit | None = None) -> Opening:
    """Who opens it, once the kind and ``admit`` let it through; its ticket, if it came
    with one, not spent yet (``Opening.spend``)."""

    def admit_kind(principal: Principal) -> None:
        if principal.kind not in allowed:
            raise Refused(ErrorCode.FORBIDDEN, f"a {principal.kind} credential cannot open this")
        if admit is not None:
            admit(principal)

    opening = opening_of(
        runtime_of(request), request.query_params, request.headers.get("authorization"), admit_kind
    )
    if opening is None:
        raise Refused(
            ErrorCode.UNAUTHORIZED,
            "send a ticket (POST /api/tickets), or Authorization: Bearer <client secret>",
        )
    return opening


def _session_principal(principal: Principal, session_id: str) -> None:
    if not principal.may_open(session_id):
        raise Refused(ErrorCode.FORBIDDEN, "this credential opens another session")


def _place(runtime: Runtime, session_id: str) -> Place:
    """A place on the session (``Hub.hold``), or Refused when all are taken."""
    cap = runtime.settings.max_sockets_per_session
    place = runtime.hub.hold(session_id, cap)
    if place is None:
        raise Refused(
            ErrorCode.TOO_MANY_SOCKETS,
            f"at most {cap} connections per session on one worker: close another one first",
        )
    return place


class EventStream(Response):
    """A ``text/event-stream`` response fed by a hub subscriber. Made (and joined to
    the hub, and caught up) by the route; what is queued before the response starts
    waits for it, so nothing is written ahead of the headers."""

    def __init__(self, runtime: Runtime, kind: str, staff: bool = False) -> None:
        super().__init__(status_code=200)
        self.runtime = runtime
        self._started = asyncio.Event()
        self._ended = asyncio.Event()
        self._lock = asyncio.Lock()
        self._send: Send | None = None
        size = runtime.settings.send_queue_size
        if kind == "admin":
            size *= ADMIN_QUEUE_FACTOR
        codec = SSE if kind == "customer" else SSE_NO_IDS
        self.subscriber = Subscriber(kind, codec, size, self._frame, self._close, staff)
        self.leave: Callable[[], Awaitable[None]] | None = None

    async def _write(self, chunk: bytes, last: bool = False) -> None:
        await self._started.wait()
        async with self._lock:
            if (self._ended.is_set() and not last) or self._send is None:
                raise ConnectionError("the stream has ended")
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _frame(self, frame: str | bytes) -> None:
        await self._write(frame if isinstance(frame, bytes) else frame.encode())

    async def _close(self, code: int, reason: str) -> None:
        # Ended first: a client too slow to take the close event is not waited for.
        self._ended.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._write(close_event(code, reason), last=True), FLUSH_TIMEOUT_S
            )

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._ended.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.runtime.settings
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            self._send = send
            beat_bytes = heartbeat(settings.sse_heartbeat_ms)
            # A ping first, ahead of any message: the page knows at once how long a
            # silence may last.
            await send(
                {
                    "type": "http.response.body",
                    "body": f"retry: {RECONNECT_MS}\n\n".encode() + beat_bytes,
                    "more_body": True,
                }
            )
            self._started.set()
            loop = asyncio.get_running_loop()
            ends_at = loop.time() + settings.stream_lifetime_ms / 1000
            beat = settings.sse_heartbeat_ms / 1000
            while not self._ended.is_set():
                left = ends_at - loop.time()
                if left <= 0:
                    break  # its bounded life: EventSource reopens it with Last-Event-ID
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), min(beat, left))
                    break
                if not self.subscriber.closing and not self._lock.locked():
                    # Bounded: a client that stopped reading cannot hold this loop.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._write(beat_bytes), beat)
        finally:
            watcher.cancel()
            if self.leave is not None:
                await self.leave()
            await self.subscriber.flush(FLUSH_TIMEOUT_S)
            self._ended.set()
            # A client that stopped reading gets no more than this: past it the app
            # returns and the server closes the connection.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    async with self._lock:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _since(request: Request) -> int | None:
    """``Last-Event-ID`` (EventSource's own resume) wins over ``since``."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        return validation.parse_digits(header.strip(), "Last-Event-ID", 0, 10**12)
    return validation.parse_since(request.query_params.get("since"))


@endpoint
async def session_stream(request: Request) -> Response:
    runtime = runtime_of(request)
    session_id: str = request.path_params["session_id"]
    since = _since(request)

    opening = _stream_opening(
        request, CUSTOMER, ADMIN, admit=lambda principal: _session_principal(principal, session_id)
    )
    # Staff watching one session see it whole, as on a socket.
    stream = EventStream(runtime, "customer", staff=opening.principal.kind == ADMIN)
    hub = runtime.hub

    async def leave() -> None:
        await hub.leave(session_id, stream.subscriber)

    place = _place(runtime, session_id)
    try:
        # Inside: a join whose subscription fails has still added the subscriber.
        await hub.join(session_id, stream.subscriber, place)
        # Its ticket is spent there, once the session is found.
        found = await catch_up(runtime, stream.subscriber, session_id, since, opening)
    except BaseException:
        await leave()
        raise
    if not found:
        await leave()
        raise Refused(ErrorCode.NOT_FOUND, "unknown session")
    stream.leave = leave
    return stream


@endpoint
async def admin_stream(request: Request) -> Response:
    runtime = runtime_of(request)
    opening = _stream_opening(request, ADMIN)
    stream = EventStream(runtime, "admin")
    hub = runtime.hub

    async def leave() -> None:
        await hub.leave_admin(stream.subscriber)

    try:
        await hub.join_admin(stream.subscriber)
        snapshot = await runtime.reads.admin_snapshot()
        # Spent once the engine answered: a 503 before leaves it good.
        await opening.spend()
    except BaseException:
        await leave()
        raise
    stream.subscriber.push(snapshot)
    stream.subscriber.begin(0)
    stream.leave = leave
    return stream


class _Waker(Subscriber):
    """A held poll's place in the hub: the first durable event (or snapshot) for the
    session, or the hub closing it, ends the wait. Nothing is queued."""

    __slots__ = ("woke",)

    def __init__(self) -> None:
        super().__init__("customer", SSE, 1, _nothing, _nothing_closed)
        self.woke = asyncio.Event()

    def push(self, event: Encoded) -> None:
        if event.durable or event.type == "snapshot":
            self.woke.set()

    def kill(self, code: int, reason: str) -> None:
        self.closing = True
        self.woke.set()


async def _nothing(frame: str | bytes) -> None:
    return None


async def _nothing_closed(code: int, reason: str) -> None:
    return None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@endpoint
async def poll_events(request: Request) -> Response:
    """Long-polling: the durable events after ``since`` at once when there are some
    (or a snapshot when they cannot all be replayed), else the first ones within
    ``wait`` ms (at most ``PAYLIVE_POLL_HOLD_MS``, which the answer's ``hold_ms`` says),
    else none."""
    runtime = runtime_of(request)
    settings = runtime.settings
    session_id: str = request.path_params["session_id"]
    since = validation.parse_since(request.query_params.get("since"))
    raw_wait = request.query_params.get("wait")
    hold = settings.poll_hold_ms
    if raw_wait is not None:
        hold = validation.parse_digits(raw_wait, "wait", 0, settings.poll_hold_ms)
    # Its ticket is spent only once the poll goes through: whether it would wait, and
    # so needs a place (too_many_sockets), and whether the session exists are known
    # only from the read.
    opening = _stream_opening(
        request, CUSTOMER, ADMIN, admit=lambda principal: _session_principal(principal, session_id)
    )
    start = await runtime.reads.catch_up(session_id, since)
    if start is None:
        raise Refused(ErrorCode.NOT_FOUND, "unknown session")
    if start.replay != [] or hold == 0:
        await opening.spend()
    else:
        place = _place(runtime, session_id)
        waker = _Waker()
        try:
            await runtime.hub.join(session_id, waker, place)
            # Joined first, then read again: an event saved in between is not missed.
            start = await runtime.reads.catch_up(session_id, since)
            if start is None:
                raise Refused(ErrorCode.NOT_FOUND, "unknown session")
            # Spent while the poll holds its place: no other open can take it meanwhile.
            await opening.spend()
            if start.replay == []:
                waker.begin(start.session.seq)
                gone = asyncio.ensure_future(_disconnected(request))
                woke = asyncio.ensure_future(waker.woke.wait())
                try:
                    await asyncio.wait(
                        {gone, woke}, timeout=hold / 1000, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    gone.cancel()
                    woke.cancel()
                if waker.woke.is_set() and not waker.closing:
                    start = await runtime.reads.catch_up(session_id, since)
                    if start is None:
                        raise Refused(ErrorCode.NOT_FOUND, "unknown session")
        finally:
            await runtime.hub.leave(session_id, waker)
    session, now = start.session, runtime.clock()
    if start.replay is None:
        events = [snapshot_message(session, now).wire]
    elif opening.principal.kind == ADMIN:  # staff watching the session: all of it
        events = [event.wire for event in start.replay]
    else:  # the customer's view, as its socket and stream get
        events = [event.customer.wire for event in start.replay]
    public = session.to_public()
    body = {
        "session": session.id,
        "events": events,
        "seq": session.seq,
        "status": public["status"],
        "deadline": public["deadline"],
        "retry_at": public["retry_at"],
        "server_time": now,
        # The longest this server holds a poll (``wait``'s default and bound): the
        # client cannot read PAYLIVE_POLL_HOLD_MS otherwise, and needs it to bound its
        # wait for a poll whose connection died without a word.
        "hold_ms": settings.poll_hold_ms,
    }
    return Response(
        dumps_strict(body),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/api/sessions/{session_id}/stream", session_stream, methods=["GET"]),
    Route("/api/sessions/{session_id}/events", poll_events, methods=["GET"]),
    Route("/api/admin/stream", admin_stream, methods=["GET"]),
]
