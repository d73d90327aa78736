"""The door: commands in flight on this worker, and the refusal of one too many.

Overload is shed at the door, by what is already in flight, not by how long a
request has waited: past ``max_in_flight`` commands being worked on by this worker,
a new one is refused at once (HTTP 503 ``overloaded`` with ``Retry-After``; on a
socket an ``error`` with that code), before it reads its body, takes an idempotency
key or waits for an engine connection. So a refused command changes nothing, and the
work already accepted keeps the worker's time and is delivered on time.

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

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from .errors import error_body, http_status
from .limit import GradientLimit

OVERLOADED = Refused(ErrorCode.OVERLOADED, "this worker has too much work in flight; retry shortly")
# POST /api/sessions, and POST /api/sessions/{id}/<command>.
_COMMANDS = re.compile(r"/api/sessions(/[^/]+/(attempts|interrupt|cancel|complete|check))?/?")


def is_command(scope: Scope) -> bool:
    """Whether an HTTP request is one that passes the door."""
    return scope.get("method") == "POST" and _COMMANDS.fullmatch(scope.get("path", "")) is not None


class Admission:
    """A counter of commands in flight with a limit (one per worker): fixed, or (with
    ``adaptive``) following the commands' measured latency (``web.limit``)."""

    def __init__(
        self, limit: int, retry_after_s: int, adaptive: GradientLimit | None = None
    ) -> None:
        self._fixed = limit
        self.adaptive = adaptive
        # When each command in flight came in, by the task that runs it (the one that
        # calls enter and leave): its latency feeds the adaptive limit.
        self._started: dict[asyncio.Task[Any] | None, float] = {}
        self.in_flight = 0
        body = json.dumps(error_body(OVERLOADED.code, OVERLOADED.message)).encode()
        self._start = {
            "type": "http.response.start",
            "status": http_status(OVERLOADED.code),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
        self._body = {"type": "http.response.body", "body": body}
        head = b"HTTP/1.1 %d Service Unavailable\r\n" % http_status(OVERLOADED.code)
        head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        head += b"retry-after: %d\r\n" % retry_after_s
        self._raw = (head + b"\r\n" + body, head + b"connection: close\r\n\r\n" + body)

    @property
    def limit(self) -> int:
        return self.adaptive.limit if self.adaptive is not None else self._fixed

    @property
    def full(self) -> bool:
        """No place left: the next command is refused (the protocol asks this before
        it reads a body or makes a task)."""
        return self.in_flight >= self.limit

    def enter(self) -> bool:
        """Take a place for one command; False (and counted) when the worker is full."""
        if self.full:
            metrics.OVERLOADED.inc()
            return False
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        if self.adaptive is not None:
            self._started[_task()] = time.monotonic()
        return True

    def leave(self) -> None:
        if self.adaptive is not None:
            started = self._started.pop(_task(), None)
            if started is not None:
                self.adaptive.sample(time.monotonic() - started, self.in_flight)
                metrics.IN_FLIGHT_LIMIT.set(self.adaptive.limit)
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()

    @property
    def refusal(self) -> tuple[bytes, bytes]:
        """The HTTP/1.1 refusal as bytes for the protocol: kept alive, and closing."""
        return self._raw

    async def refuse(self, send: Send) -> None:
        """Answer an HTTP request 503 ``overloaded`` (its body is never read)."""
        await send(self._start)
        await send(self._body)


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
    """ASGI middleware: HTTP commands pass ``admission()`` (the worker's, once it runs)
    or are refused before anything else looks at them."""

    def __init__(self, app: ASGIApp, admission: Callable[[], Admission | None]) -> None:
        self.app = app
        self._admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self._admission() if scope["type"] == "http" and is_command(scope) else None
        if door is None:
            await self.app(scope, receive, send)
            return
        if not door.enter():
            await door.refuse(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            door.leave()
