"""The bounds uvicorn does not have, on its httptools protocol: whatever a client
sends, and however slowly, no connection outlives them.

- A header timeout: a connection must finish its request headers (a socket, its
  handshake request) within ``header_timeout_ms`` of opening, and of the first byte of
  every later request on it, or it is closed. uvicorn only times out a connection
  idle *between* requests, so one that never sends, or sends a header a minute,
  holds a file descriptor for as long as it likes.
- A command refused before anything is made for it: while the worker's door
  (``web.admission``) is full, a command is answered 503 ``overloaded`` from its
  request line alone, before a task exists for it or its body is read. A command
  let through holds a place from the moment its body is whole (``admission.hold``),
  so the commands parsed in one turn of the loop and waiting for their tasks to run
  fill the door too, and the next ones are refused here at once rather than queued
  behind them. It holds one only within its session's and address's share and the
  places left: commands pipelined on one connection are let through whatever the
  door says (their answers go out in order), and each held a place of its own. One
  pipelined behind a request not yet answered holds none before its turn comes
  (a held poll or an SSE stream ahead of it may never be answered).
- A body deadline: the whole body must arrive within ``header_timeout_ms`` of the
  end of the headers, counted once, not between bytes. The deadline travels in the
  request's scope (``BODY_EXTENSION``) so that whoever reads the body (``web.admission``,
  ``web.http.read_body``) answers 408 by it; a second later the connection is
  closed here if nobody did.
- An idle connection stays idle: uvicorn restarts its keep-alive timer on every byte
  it receives, so a byte now and then (a CRLF between requests, the rest of a body
  nobody reads) kept a connection open for ever. Here only the start of a request
  stops the keep-alive timer, and its header timer takes over.
- An answered connection is closed: a request answered before its body arrived
  (401, 413, 408, 503) gets ``Connection: close``; the connection is then half-closed
  (the client reads the whole answer and an end of file) and what it still sends is
  read and dropped for at most ``LINGER_S`` (and never longer than the header
  timeout), then it is closed. Dropping rather than closing at once is what lets the
  client read the answer: a close with unread bytes resets the connection, and the
  reset can destroy the answer on its way. A lingering connection no longer counts
  against the limit below.
- Pipelined requests are parsed as their turn nears: at most ``MAX_PIPELINED`` wait
  parsed behind the one being answered, and what the client sent past them waits as
  the bytes it is (reading paused) until those ahead are answered. uvicorn parsed a
  whole read at once, a request cycle and a scope for each request in it: a client
  that sent 250 KB of the smallest requests and never read made a worker hold 14 MB.
- A write deadline: a client that reads nothing of what it is sent (an answer, a
  stream, answers to requests it pipelined) leaves the worker's writes waiting
  (uvicorn pauses the app until the buffer drains), and nothing else times a request
  being answered: it held its connection, and a command its place at the door, for
  ever. Once the writes have waited ``write_timeout_ms`` without the buffer draining,
  the connection is reset (aborted: a close would wait for the buffer to be sent).
- A connection limit per worker: past ``max_connections`` open connections (sockets
  included), a request is answered 503 ``overloaded`` and a socket handshake is
  refused with the same 503, then the connection is closed. uvicorn's own
  ``limit_concurrency`` lets socket handshakes through and answers in plain text.
  Liveness is the exception: ``GET /healthz`` past the limit is answered 200 here, as
  cheaply as the 503 and closed the same way, so a probe never restarts a worker for
  being busy (``/readyz`` is refused: a busy worker is not ready for more).

The timeout and the limit are the connections' part of the settings
(``Settings.connections``), carried to every worker in the uvicorn config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
import urllib.parse
from typing import Any, cast

import httptools
import uvicorn
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import PayliveError
from ..settings import ConnectionSettings, Settings
from ..web import admission
from ..web.bodies import BODY_EXTENSION, body_state
from ..web.clients import DECIDED, TrustedProxies
from ..web.errors import error_body, http_status
from .coalesce import Coalescing

# How long an answered connection's unread body is drained before it is closed.
LINGER_S = 1.0
# How long after the body deadline the connection is closed when nothing answered.
BODY_GRACE_S = 0.5
# Requests parsed and waiting behind the one being answered, at most (past it the rest
# of what the client sent waits unparsed), and the most the parser is given at once:
# httptools parses all it is given, and one read of the smallest requests made a
# request cycle and a scope of each, 55 times the bytes they came in.
MAX_PIPELINED = 16
FEED_BYTES = 1024
# SO_LINGER on, for no time: the close drops what is unsent and resets the connection.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _closing(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The headers of a prepared JSON answer after which the connection is closed."""
    length = (b"content-length", str(len(body)).encode())
    return [(b"content-type", b"application/json"), length, *extra, (b"connection", b"close")]


OVERLOADED_STATUS = http_status(ErrorCode.OVERLOADED)
OVERLOADED_BODY = json.dumps(
    error_body(ErrorCode.OVERLOADED, "this worker is at its connection limit; retry shortly")
).encode()
OVERLOADED_HEADERS = _closing(OVERLOADED_BODY, (b"retry-after", b"1"))


HEALTHY_BODY = json.dumps({"ok": True}).encode()
HEALTHY_HEADERS = _closing(HEALTHY_BODY)
HEALTHZ = b"/healthz"

# A request cut by a stop that no longer waits for it (docs/protocol.md section 4.3).
SHUTTING_DOWN_BODY = json.dumps(
    error_body(
        ErrorCode.SHUTTING_DOWN,
        "this worker stopped before it answered; the request may or may not have been "
        "applied: send it again (with the same Idempotency-Key)",
    )
).encode()
SHUTTING_DOWN_HEADERS = _closing(SHUTTING_DOWN_BODY)

HEADERS_TOO_LARGE_STATUS = http_status(ErrorCode.HEADERS_TOO_LARGE)
INVALID_REQUEST_STATUS = http_status(ErrorCode.INVALID_REQUEST)


class HeadersTooLarge(PayliveError):
    """Raised from a parser callback to stop parsing a request whose head is too big
    (it reaches ``data_received`` as httptools' own callback error)."""


def _headers_too_large(limit: int) -> bytes:
    body = json.dumps(
        error_body(
            ErrorCode.HEADERS_TOO_LARGE,
            f"the request line and headers may be at most {limit} bytes",
        )
    ).encode()
    head = b"HTTP/1.1 %d Request Header Fields Too Large\r\n" % HEADERS_TOO_LARGE_STATUS
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + b"connection: close\r\n\r\n" + body


class WriteDeadline:
    """A connection's writes waiting for its client to read: past ``timeout_s`` without
    the transport's buffer draining, the connection is reset. Not closed: a close sends
    what is buffered first, so it waits on the very client that does not read; and
    reset rather than aborted alone, which would leave the kernel a socket of its own
    sending that client what it buffered, and the client none the wiser."""

    # One per connection, sockets included: no dict of its own (an idle socket's bytes).
    __slots__ = ("_timeout_s", "_timer")

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None

    def paused(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._late, transport)

    def resumed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self, transport: asyncio.Transport) -> None:
        self._timer = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        transport.abort()  # connection_lost follows: the app hears its client is gone


class WritesTimed(asyncio.Protocol):
    """A protocol whose paused writes run against its ``WriteDeadline`` (``_writes``):
    the HTTP protocol and the socket's, which uvicorn pauses alike on a full buffer."""

    _writes: WriteDeadline
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def pause_writing(self) -> None:
        super().pause_writing()
        self._writes.paused(self.loop, self.transport)

    def resume_writing(self) -> None:
        self._writes.resumed()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writes.resumed()
        super().connection_lost(exc)


class PayliveConfig(uvicorn.Config):
    """uvicorn's config with paylive's settings, so that every worker's protocol has them."""

    def __init__(self, *args: Any, settings: ConnectionSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        # One per worker, so that its cache of addresses is shared by every connection.
        self.proxies = TrustedProxies(settings.trusted_proxies)


def write_deadline(config: uvicorn.Config) -> WriteDeadline:
    """The write deadline of a connection served under ``config`` (a socket's too)."""
    settings = config.settings if isinstance(config, PayliveConfig) else Settings().connections
    return WriteDeadline(settings.write_timeout_ms / 1000)


async def overloaded(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app that answers a request past the connection limit."""
    await send(
        {"type": "http.response.start", "status": OVERLOADED_STATUS, "headers": OVERLOADED_HEADERS}
    )
    await send({"type": "http.response.body", "body": OVERLOADED_BODY})


async def healthy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app that answers liveness past the connection limit."""
    await send({"type": "http.response.start", "status": 200, "headers": HEALTHY_HEADERS})
    await send({"type": "http.response.body", "body": HEALTHY_BODY})


# A pipelined command parsed whole before its turn: it takes its place at its turn.
_TURN_PENDING = "paylive.turn_pending"


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, told by its connection (``protocol``) what to do when
    the answer starts before the body has arrived."""

    protocol: BoundedHttpProtocol

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and self.more_body
            and not self.disconnected
        ):
            # The rest of the body will never be read: the connection cannot carry
            # another request. uvicorn writes "Connection: close" and closes the
            # transport after the answer; the close is the protocol's lingering one.
            self.keep_alive = False
            self.transport = _Lingering(self.protocol)  # type: ignore[assignment]
        await super().send(message)


class _Lingering:
    """The transport as a cycle answered early sees it: ``close`` lingers."""

    def __init__(self, protocol: BoundedHttpProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.linger()


class BoundedHttpProtocol(WritesTimed, HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if isinstance(config, PayliveConfig):
            settings, self._proxies = config.settings, config.proxies
        else:
            settings = Settings().connections
            self._proxies = TrustedProxies(settings.trusted_proxies)
        self._header_timeout = settings.header_timeout_ms / 1000
        self._writes = WriteDeadline(settings.write_timeout_ms / 1000)
        self._max_connections = settings.max_connections
        self._max_head = settings.max_header_bytes
        # The current request's line and headers so far: as parsed (``_head_parsed``),
        # and the bytes received while they were not whole (``_head_bytes``; None:
        # not in them). httptools holds a header until it ends, so the second bounds
        # what one endless header makes a worker hold.
        self._head_parsed = 0
        self._head_bytes: int | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        # What the client sent that is not parsed yet (the pipeline is full), and
        # whether that cut a body off (its deadline starts again when it is parsed on).
        self._unparsed = b""
        self._body_stopped = False
        # When the current request, a command let through, finished its headers
        # (None: not a command, or refused): it holds a place once whole.
        self._command_since: float | None = None
        # Whether the peer is a trusted proxy, whose X-Forwarded-For names the client
        # (asked once: the peer is the connection's).
        self._forwarding = False
        # The task running the app for this connection's request (one at a time: a
        # pipelined request starts when the one before is answered), and whether the
        # stop cut it (``cut``). uvicorn's own app call is wrapped: its cycle logs a
        # traceback and answers 500 for a task cancelled under it.
        self._app, self.app = self.app, self._app_or_cut
        self._running: asyncio.Task[None] | None = None
        self._cut = False

    async def _app_or_cut(self, scope: Scope, receive: Any, send: Any) -> None:
        self._running = asyncio.current_task()
        try:
            await self._app(scope, receive, send)
        except asyncio.CancelledError:
            if not self._cut or self._running is None:
                raise
            self._running.uncancel()
            await self._end_cut(send)
        finally:
            self._running = None

    async def _end_cut(self, send: Any) -> None:
        """A cut request's end: answered 503 ``shutting_down`` if its answer had not
        begun, else its connection closed (its client sees a short answer, never one
        made to look whole)."""
        # uvicorn calls the app with its request cycle's bound ``send``.
        cycle = cast(RequestResponseCycle, send.__self__)
        if not cycle.response_started:
            status = http_status(ErrorCode.SHUTTING_DOWN)
            await send(
                {"type": "http.response.start", "status": status, "headers": SHUTTING_DOWN_HEADERS}
            )
            await send({"type": "http.response.body", "body": SHUTTING_DOWN_BODY})
            return
        # Marked gone, so that uvicorn does not log the answer left unfinished.
        cycle.disconnected = True
        self.transport.close()

    def cut(self) -> asyncio.Task[None] | None:
        """Cut the request whose app is running, if any (the server is stopping and
        waits no longer): its task, to wait for its end."""
        task = self._running
        if task is None or task.done():
            return None
        self._cut = True
        task.cancel()
        return task

    @property
    def _over_limit(self) -> bool:
        # This connection is counted among them.
        return len(self.connections) > self._max_connections

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_late(self) -> None:
        # Whoever reads the body answers 408 by the deadline; this is the backstop for
        # a request whose body nobody reads and nobody answers.
        self._body_timer = None
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.transport.close()

    def linger(self) -> None:
        """Close a connection answered before its body arrived (see the module docstring)."""
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self._disarm()
        self._disarm_body()
        self.connections.discard(self)  # answered: it holds no place any more
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        wait = min(LINGER_S, self._header_timeout)
        self._linger_timer = self.loop.call_later(wait, self.transport.close)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Its writes in one turn of the loop go out as one (``server.coalesce``); a
        # socket upgraded from this connection writes through the same.
        self._coalescing = Coalescing(transport, self.loop)
        super().connection_made(self._coalescing)
        self._forwarding = self._proxies.trusts(self.client[0] if self.client else None)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._release_waiting()
        self._unparsed = b""
        super().connection_lost(exc)

    def _release_waiting(self) -> None:
        """Commands whose task never reached the door (pipelined behind another, or
        parsed as the client left) give their places back."""
        door = admission.current()
        for cycle in (self.cycle, *(cycle for cycle, _ in self.pipeline)):
            if cycle is not None:
                admission.release(cast(Scope, cycle.scope), door)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the unread rest of an answered request: dropped
        if self._unparsed:
            # Behind what waits already, in order; reading stops until it is parsed.
            self._unparsed += data
            self.flow.pause_reading()
            return
        self._parse(memoryview(data))

    def _parse(self, data: memoryview) -> None:
        """Feed the parser ``data`` a slice at a time, and stop while ``MAX_PIPELINED``
        requests wait: the rest is kept until one of them starts."""
        for start in range(0, len(data), FEED_BYTES):
            if len(self.pipeline) >= MAX_PIPELINED:
                self._unparsed = bytes(data[start:])
                self.flow.pause_reading()
                # The client is not late: the worker stopped reading it. The request
                # cut off, if any, is timed again when the worker reads on.
                self._disarm()
                self._body_stopped = self._body_timer is not None
                self._disarm_body()
                return
            if not self._feed(data[start : start + FEED_BYTES]):
                return

    def _parse_unparsed(self) -> None:
        if not self._unparsed or self._lingering or self.transport.is_closing():
            return
        if self._head_bytes is not None:
            self._arm()
        elif self._body_stopped:
            deadline = self.loop.time() + self._header_timeout
            held = body_state(self.scope)
            if held is not None:
                held["deadline"] = deadline
            self._body_timer = self.loop.call_at(deadline + BODY_GRACE_S, self._body_late)
        self._body_stopped = False
        waiting, self._unparsed = self._unparsed, b""
        self._parse(memoryview(waiting))
        if not self._unparsed:
            self.flow.resume_reading()

    def _feed(self, data: memoryview) -> bool:
        """As uvicorn's ``data_received``, except that a byte does not stop the
        keep-alive timer (see the module docstring): on_message_begin does, when a
        request really starts. False once the connection takes no more requests."""
        try:
            self.parser.feed_data(data)
            if self._head_bytes is not None:
                self._head_bytes += len(data)
                if self._head_bytes > self._max_head:
                    self._refuse_headers()
        except httptools.HttpParserError as exc:
            if self._head_parsed > self._max_head:  # _count_head's, through the parser
                self._refuse_headers()
                return False
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response(f"the request is not valid HTTP/1.1 ({exc})")
            return False
        except httptools.HttpParserUpgrade:
            if not all(value.isascii() for _, value in self.headers):
                # The socket libraries decode a handshake's headers as ASCII and raise
                # on anything else, after the connection is theirs: no answer at all.
                self.send_400_response("A socket handshake's headers must be ASCII.")
            elif self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False  # uvicorn drops what follows a handshake in the read too
        return not self._lingering and not self.transport.is_closing()

    def send_400_response(self, msg: str) -> None:
        """A request HTTP cannot parse (two Content-Lengths, a chunk size that is no
        number, a control byte in a header) is answered as every error is, 400
        ``invalid_request`` in JSON, not uvicorn's plain text; then the connection is
        closed, lingering so that the client reads the answer: the parser cannot tell
        where the next request would start."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A body that broke off mid-way (a bad chunk size): its app hears that the
            # client is gone, as on a lost connection, and writes nothing after this.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                # An answer is on its way (a stream): a second one would corrupt it.
                self.transport.close()
                return
        body = json.dumps(error_body(ErrorCode.INVALID_REQUEST, msg)).encode()
        head = b"HTTP/1.1 %d Bad Request\r\n" % INVALID_REQUEST_STATUS
        head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        self.transport.write(head + b"connection: close\r\n\r\n" + body)
        self.linger()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._arm()  # a later request on a kept-alive connection: its headers are timed too
        self._head_bytes = 0
        self._head_parsed = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self._max_head:
            raise HeadersTooLarge

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        self._command_since = None
        # The client, before anything counts by it: a command holds a place in its
        # address's share here, before the app (and its middleware) runs.
        scope = cast(Scope, self.scope)
        scope[DECIDED] = True
        if self._forwarding:
            self._proxies.apply(scope, self.headers)
        if self._refused_at_once():
            return
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        if upgrade:
            self._command_since = None  # a socket handshake: no door on its way
        else:
            deadline = self.loop.time() + self._header_timeout
            extensions = self.scope.setdefault("extensions", {})
            extensions[BODY_EXTENSION] = {"deadline": deadline}
            self._disarm_body()
            self._body_timer = self.loop.call_at(deadline + BODY_GRACE_S, self._body_late)
        if not self._over_limit:
            super().on_headers_complete()
        else:
            self._command_since = None  # answered 503 by the limit's app, not the door
            # Requests past the limit get the 503 app instead of paylive's (a socket
            # handshake never reaches an app: handle_websocket_upgrade refuses it),
            # except liveness. Either answer closes the connection: past the limit,
            # none stays.
            app, self.app = self.app, healthy if self._liveness() else overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if not upgrade and self.cycle is not None:
            self.cycle.__class__ = _Cycle
            self.cycle.protocol = self  # type: ignore[attr-defined]

    def on_message_complete(self) -> None:
        self._disarm_body()
        held = body_state(self.scope)
        if held is not None:
            held["arrived"] = True  # web.bodies reads it with no deadline to watch
        cycle, since = self.cycle, self._command_since
        self._command_since = None
        if since is not None and cycle is not None and not cycle.response_started:
            if any(waiting is cycle for waiting, _ in self.pipeline):
                # Pipelined behind a request not yet answered (a held poll, an SSE
                # stream: perhaps not for a long time): it cannot start before that, so
                # it takes its place when its turn comes (on_response_complete).
                cast(Scope, cycle.scope)[_TURN_PENDING] = True
            else:
                door = admission.current()
                if door is not None:
                    admission.hold(cast(Scope, cycle.scope), door, since)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self.pipeline and self.cycle is not None:
            # The answered request's place, if the door never took it back (answered
            # before the door ran): a place is never kept by an answered request.
            admission.release(cast(Scope, self.cycle.scope), admission.current())
        if self.pipeline and not self._lingering and not self.transport.is_closing():
            # uvicorn starts the next pipelined request now: a command parsed whole
            # while it waited counts from here.
            scope = cast(Scope, self.pipeline[-1][0].scope)
            door = admission.current()
            if scope.pop(_TURN_PENDING, False) and door is not None:
                admission.hold(scope, door, time.monotonic())
        if self._lingering:
            self.server_state.total_requests += 1
            self.flow.resume_reading()  # keep draining until the client stops or the bound
            return
        super().on_response_complete()
        if self._unparsed:
            # A place in the pipeline came free. Not from inside the answer's send,
            # which called this: the requests parsed now may start tasks of their own.
            self.loop.call_soon(self._parse_unparsed)

    def _refuse_headers(self) -> None:
        """Request line and headers past ``max_header_bytes``: 431, and the connection
        closed (lingering, so that the client reads the answer)."""
        self._head_bytes = None
        self.transport.write(_headers_too_large(self._max_head))
        self.linger()

    def _refused_at_once(self) -> bool:
        """A command while the worker's door is full: answered 503 ``overloaded`` here,
        from the request line and headers alone. No task is made for it and its body
        is never handed to anyone: the parser skips it (the request is marked
        answered), so the connection stays usable, unless the client waits for
        ``100 Continue``, whose body may never come: then it is closed."""
        door = admission.current()
        if door is None or self.parser.get_method() != b"POST":
            return False
        # The path as uvicorn puts it in the scope, decoded, which is what the door
        # reads: a place held here for a path that is a command only while encoded
        # ("a%2Fb") was never given back by the door, which did not see a command.
        path = httptools.parse_url(self.url).path.decode("ascii", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        path = self.root_path + path
        if not admission.is_command({"method": "POST", "path": path}):
            return False
        if not door.full or (self.cycle is not None and not self.cycle.response_complete):
            # Let through (a pipelined request too: answers must go out in order; it
            # holds a place once whole only within its share, see admission.hold).
            self._command_since = time.monotonic()
            return False
        metrics.OVERLOADED.inc()
        metrics.REFUSED_EARLY.inc()
        door.refused()
        self.scope["method"], self.scope["path"] = "POST", path
        keep_alive = (
            self.parser.get_http_version() == "1.1"
            and self.parser.should_keep_alive()
            and not self.expect_100_continue
        )
        self.cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        # Answered: on_body and on_message_complete drop what follows.
        self.cycle.response_complete = True
        kept, closing = admission.raw_refusal(door.retry_after_s)
        answer = kept if keep_alive else closing
        # At once, not at the start of the next turn behind the commands queued in
        # this one: under overload the refusal is the answer most clients get.
        self._coalescing.write_now(answer)
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()
        return True

    def _liveness(self) -> bool:
        return (
            self.parser.get_method() == b"GET"
            and self.url.partition(b"?")[0] == HEALTHZ
            and not self.parser.should_upgrade()
        )

    def handle_websocket_upgrade(self) -> None:
        # The connection becomes a socket's: what is pipelined before the handshake
        # never runs, and this protocol never hears of the connection again.
        self._release_waiting()
        if not self._over_limit:
            # The transport tells only its current protocol that its buffer drained:
            # a deadline armed here while an answer waited for the client would never
            # be stopped, and would reset the socket however well its client reads.
            # The socket's protocol keeps it instead, told that it starts waiting (the
            # transport, paused already, would not tell it).
            waiting = self.flow.write_paused
            self._writes.resumed()
            super().handle_websocket_upgrade()
            if waiting:
                self.transport.get_protocol().pause_writing()
            return
        head = [b"HTTP/1.1 %d Service Unavailable\r\n" % OVERLOADED_STATUS]
        head += [name + b": " + value + b"\r\n" for name, value in OVERLOADED_HEADERS]
        self.transport.write(b"".join(head) + b"\r\n" + OVERLOADED_BODY)
        self.transport.close()
