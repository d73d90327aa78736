"""The door: commands in flight on this worker, and the refusal of one too many.

Overload is shed at the door, by what is already in flight, not by how long a
request has waited: past ``max_in_flight`` commands being worked on by this worker,
a new one is refused at once (HTTP 503 ``overloaded`` with ``Retry-After``; on a
socket an ``error`` with that code), before it takes an idempotency key or waits for
an engine connection. So a refused command changes nothing, and the work already
accepted keeps the worker's time and is delivered on time.

When the worker is already full as a command's headers arrive, the connection
protocol (``server.connections``) answers it from the headers, with no task made and
no body read. Otherwise a place is taken only once the command's body has arrived whole (the door reads it,
by the body deadline of ``web.bodies``, and hands it on; a request whose credentials
name nobody is answered 401 first, its body never read): a client sending its body
slowly holds a connection for at most that deadline and never a place. No one holds
every place either: one session (one client secret) holds at most
``max_in_flight_per_session`` of them and one client address at most
``max_in_flight_per_address``; past its share a command is refused 429
``rate_limited`` with ``Retry-After``, and the others still get in.

The HTTP door stands in front of the whole app (``Door``): a refusal is two prepared
messages, with no routing, middleware or JSON on its way, because under overload the
refusals are most of the requests and must cost next to nothing.

Session creation and the commands on a session pass the door; webhooks, timers,
effects and reads do not: a provider's result is work already accepted, and reads are
cheap. (``server.connections`` bounds the connections a worker holds; this bounds the
work they ask of it.)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from ..settings import Settings
from . import bodies
from .auth import identify
from .errors import error_body, http_status
from .limit import GradientLimit

OVERLOADED = Refused(ErrorCode.OVERLOADED, "this worker has too much work in flight; retry shortly")
SESSION_SHARE = Refused(
    ErrorCode.RATE_LIMITED, "this session has too many commands in flight; wait for them"
)
ADDRESS_SHARE = Refused(
    ErrorCode.RATE_LIMITED, "this address has too many commands in flight; wait for them"
)
# POST /api/sessions, and POST /api/sessions/{id}/<command>.
_COMMANDS = re.compile(
    r"/api/sessions(?:/([^/]+)/(?:attempts|interrupt|cancel|complete|check|seen))?/?"
)


def is_command(scope: Scope) -> bool:
    """Whether an HTTP request is one that passes the door."""
    return scope.get("method") == "POST" and _COMMANDS.fullmatch(scope.get("path", "")) is not None


def session_of(scope: Scope) -> str | None:
    """The session a command is for (None: a session creation)."""
    found = _COMMANDS.fullmatch(scope.get("path", ""))
    return found.group(1) if found else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


def address_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _answer(exc: Refused, retry_after_s: int | None) -> tuple[Message, Message]:
    body = json.dumps(error_body(exc.code, exc.message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    start = {"type": "http.response.start", "status": http_status(exc.code), "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class Admission:
    """Commands in flight with a limit, and each session's and address's share of it
    (one per worker)."""

    def __init__(
        self,
        limit: int,
        retry_after_s: int,
        per_session: int | None = None,
        per_address: int | None = None,
        adaptive: GradientLimit | None = None,
    ) -> None:
        # The limit is fixed, or (with ``adaptive``) follows the commands' measured
        # latency (``web.limit``); the shares are of the most it may be.
        self._fixed = limit
        self.adaptive = adaptive
        # When each command in flight came in, by the task that runs it (the one that
        # calls enter and leave): its latency feeds the adaptive limit.
        self._started: dict[asyncio.Task[Any] | None, float] = {}
        self.per_session = per_session or limit
        self.per_address = per_address or limit
        self.in_flight = 0
        # Shown from the start: a fixed bound never changes, so nothing else sets it.
        metrics.IN_FLIGHT_LIMIT.set(self.limit)
        self._sessions: dict[str, int] = {}
        self._addresses: dict[str, int] = {}
        self._refusals = {
            exc.message: _answer(exc, retry_after_s)
            for exc in (OVERLOADED, SESSION_SHARE, ADDRESS_SHARE)
        }
        body = json.dumps(error_body(OVERLOADED.code, OVERLOADED.message)).encode()
        head = b"HTTP/1.1 %d Service Unavailable\r\n" % http_status(OVERLOADED.code)
        head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        head += b"retry-after: %d\r\n" % retry_after_s
        self._raw = (head + b"\r\n" + body, head + b"connection: close\r\n\r\n" + body)

    @classmethod
    def of(cls, settings: Settings) -> Admission:
        return cls(
            settings.max_in_flight,
            settings.overload_retry_after_s,
            settings.max_in_flight_per_session,
            settings.max_in_flight_per_address,
            in_flight_limit(settings),
        )

    @property
    def limit(self) -> int:
        return self.adaptive.limit if self.adaptive is not None else self._fixed

    @property
    def full(self) -> bool:
        """No place left: the next command is refused (the protocol asks this before
        it reads a body or makes a task)."""
        return self.in_flight >= self.limit

    @property
    def refusal(self) -> tuple[bytes, bytes]:
        """The HTTP/1.1 refusal as bytes for the protocol: kept alive, and closing."""
        return self._raw

    def enter(self, session: str | None = None, address: str | None = None) -> Refused | None:
        """Take a place for one command of ``session`` from ``address``; the refusal
        (counted) when the worker is full or their share is taken."""
        if self.full:
            metrics.OVERLOADED.inc()
            return OVERLOADED
        if session is not None and self._sessions.get(session, 0) >= self.per_session:
            return SESSION_SHARE
        if address is not None and self._addresses.get(address, 0) >= self.per_address:
            return ADDRESS_SHARE
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        if self.adaptive is not None:
            self._started[_task()] = time.monotonic()
        if session is not None:
            self._sessions[session] = self._sessions.get(session, 0) + 1
        if address is not None:
            self._addresses[address] = self._addresses.get(address, 0) + 1
        return None

    def leave(self, session: str | None = None, address: str | None = None) -> None:
        if self.adaptive is not None:
            started = self._started.pop(_task(), None)
            if started is not None:
                self.adaptive.sample(time.monotonic() - started, self.in_flight)
                metrics.IN_FLIGHT_LIMIT.set(self.adaptive.limit)
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        for counts, key in ((self._sessions, session), (self._addresses, address)):
            if key is not None:
                left = counts.get(key, 0) - 1
                if left > 0:
                    counts[key] = left
                else:
                    counts.pop(key, None)

    async def refuse(self, send: Send, refusal: Refused = OVERLOADED) -> None:
        """Answer an HTTP command refused at the door."""
        start, body = self._refusals[refusal.message]
        await send(start)
        await send(body)


def in_flight_limit(settings: Settings) -> GradientLimit | None:
    """The adaptive bound on commands in flight (None: the fixed ``max_in_flight``). It
    starts at half the maximum and finds its level from the commands' latency."""
    if not settings.adaptive_in_flight:
        return None
    high = settings.max_in_flight
    low = min(settings.min_in_flight, high)
    return GradientLimit(initial=max(low, high // 2), min_limit=low, max_limit=high)


# This worker's admission, for the connection protocol (``server.connections``),
# which refuses a command when it is full before a task is made or its body is read.
_worker: Admission | None = None


def serve(admission: Admission | None) -> None:
    """Make ``admission`` the one the protocol asks (None: none any more)."""
    global _worker
    _worker = admission


def current() -> Admission | None:
    return _worker


def _task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class Door:
    """ASGI middleware: HTTP commands are read whole, then pass ``admission()`` (the
    worker's, once it runs) or are refused before anything else looks at them."""

    def __init__(
        self, app: ASGIApp, admission: Callable[[], Admission | None], settings: Settings
    ) -> None:
        self.app = app
        self._admission = admission
        self._settings = settings
        self._max_body = settings.max_body_bytes
        self._body_timeout_s = settings.header_timeout_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self._admission() if scope["type"] == "http" and is_command(scope) else None
        if door is None:
            await self.app(scope, receive, send)
            return
        try:
            # A stranger is answered before its body is read: nobody holds a worker's
            # memory with bodies it was never going to be allowed to send.
            identify(_header(scope, b"authorization"), self._settings)
            body = await bodies.read_all(scope, receive, self._max_body, self._body_timeout_s)
        except Refused as exc:
            start, end = _answer(exc, None)
            await send(start)
            await send(end)
            return
        except bodies.ClientGone:
            return
        session, address = session_of(scope), address_of(scope)
        refusal = door.enter(session, address)
        if refusal is not None:
            await door.refuse(send, refusal)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            await self.app(scope, replay, send)
        finally:
            door.leave(session, address)
