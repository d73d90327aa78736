"""The door at the HTTP edge: which requests are commands, and the refusal of one too
many as an HTTP answer. The count itself (places, shares, the adaptive limit) is
``limits.admission``'s; what follows is the door as a whole.

Overload is shed at the door, by what is already in flight, not by how long a
request has waited: past ``max_in_flight`` commands being worked on by this worker,
a new one is refused at once (HTTP 503 ``overloaded`` with ``Retry-After``; on a
socket an ``error`` with that code), before it takes an idempotency key or waits for
an engine connection. So a refused command changes nothing, and the work already
accepted keeps the worker's time and is delivered on time.

When the worker is already full as a command's headers arrive, the connection
protocol (``server.connections``) answers it from the headers, with no task made and
no body read. A command the protocol has parsed whole and handed a task counts from
then (``hold``), so the commands waiting in the loop's queue for their task to run
count against the limit too; the door gives that place back for its own. Such a
place counts in its session's and address's share as well, and is held only within
them: one client pipelining commands on one connection takes no more than its share. A place is
held only once the command's body has arrived whole (the door reads it, by the body
deadline of ``web.bodies``, and hands it on; a request whose credentials name nobody
is answered 401 first, its body never read): a client sending its body slowly holds a
connection for at most that deadline and never a place. No one holds
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

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Refused
from ..limits.admission import ADDRESS_SHARE, OVERLOADED, SESSION_SHARE, Admission, Queued
from ..settings import BodySettings, Credentials
from . import bodies, validation
from .auth import PRINCIPAL, identify
from .errors import error_body, http_status

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


@functools.cache
def _prepared(retry_after_s: int) -> dict[str, tuple[Message, Message]]:
    """The HTTP answer of each refusal at the door, made once: under overload the
    refusals are most of the requests."""
    return {
        exc.message: _answer(exc, retry_after_s)
        for exc in (OVERLOADED, SESSION_SHARE, ADDRESS_SHARE)
    }


@functools.cache
def raw_refusal(retry_after_s: int) -> tuple[bytes, bytes]:
    """The HTTP/1.1 ``overloaded`` refusal as bytes for the connection protocol: kept
    alive, and closing."""
    body = json.dumps(error_body(OVERLOADED.code, OVERLOADED.message)).encode()
    head = b"HTTP/1.1 %d Service Unavailable\r\n" % http_status(OVERLOADED.code)
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    head += b"retry-after: %d\r\n" % retry_after_s
    return head + b"\r\n" + body, head + b"connection: close\r\n\r\n" + body


async def refuse(send: Send, door: Admission, refusal: Refused = OVERLOADED) -> None:
    """Answer an HTTP command refused at ``door``."""
    start, body = _prepared(door.retry_after_s)[refusal.message]
    await send(start)
    await send(body)


# This worker's admission, for the connection protocol (``server.connections``),
# which refuses a command when it is full before a task is made or its body is read.
_worker: Admission | None = None


def serve(admission: Admission | None) -> None:
    """Make ``admission`` the one the protocol asks (None: none any more)."""
    global _worker
    _worker = admission


def current() -> Admission | None:
    return _worker


# Where the connection protocol leaves the place it holds for a command parsed whole
# (``limits.admission.Queued``) until the door takes it back.
QUEUED = "paylive.queued"


def hold(scope: Scope, door: Admission, since: float) -> None:
    """The protocol has a command whole at ``since`` and hands it a task: it counts,
    when a place within its session's and address's share is left (``Admission.queue``)."""
    held = door.queue(since, session_of(scope), address_of(scope))
    if held is not None:
        scope[QUEUED] = held


def release(scope: Scope, door: Admission | None) -> Queued | None:
    """Give back the place held for the command of ``scope`` (the door reached it, or
    its connection is gone); what was held, if anything."""
    held: Queued | None = scope.pop(QUEUED, None)
    if held is not None and door is not None:
        door.unqueue(held)
    return held


class Door:
    """ASGI middleware: HTTP commands are read whole, then pass ``admission()`` (the
    worker's, once it runs) or are refused before anything else looks at them."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Callable[[], Admission | None],
        credentials: Credentials,
        body: BodySettings,
    ) -> None:
        self.app = app
        self._admission = admission
        self._credentials = credentials
        self._max_body = body.max_body_bytes
        self._body_timeout_s = body.header_timeout_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Before anything reads one of them: a refusal here has changed nothing.
            ambiguous = validation.repeated_header(scope.get("headers") or ())
            if ambiguous is None and scope.get("path", "").startswith("/api/"):
                ambiguous = validation.repeated_parameter(scope.get("query_string", b""))
            if ambiguous is not None:
                start, end = _answer(ambiguous, None)
                await send(start)
                await send(end)
                return
        door = self._admission() if scope["type"] == "http" and is_command(scope) else None
        if door is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._command(door, scope, receive, send)
        finally:
            release(scope, door)

    async def _command(self, door: Admission, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # A stranger is answered before its body is read: nobody holds a worker's
            # memory with bodies it was never going to be allowed to send.
            # The route asks who it is again (``web.http.authenticate``): it finds
            # the answer here instead of checking the credential a second time.
            scope[PRINCIPAL] = identify(_header(scope, b"authorization"), self._credentials)
            body = await bodies.read_all(scope, receive, self._max_body, self._body_timeout_s)
        except Refused as exc:
            start, end = _answer(exc, None)
            await send(start)
            await send(end)
            return
        except bodies.ClientGone:
            return
        # The place the protocol held for it since it was parsed whole, if it did, is
        # given back for the real one, which counts from then.
        held = release(scope, door)
        session, address = session_of(scope), address_of(scope)
        refusal = door.enter(session, address, None if held is None else held.since)
        if refusal is not None:
            await refuse(send, door, refusal)
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
