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

import json
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from .errors import error_body, http_status

OVERLOADED = Refused(ErrorCode.OVERLOADED, "this worker has too much work in flight; retry shortly")
# POST /api/sessions, and POST /api/sessions/{id}/<command>.
_COMMANDS = re.compile(r"/api/sessions(/[^/]+/(attempts|interrupt|cancel|complete|check|seen))?/?")


def is_command(scope: Scope) -> bool:
    """Whether an HTTP request is one that passes the door."""
    return scope.get("method") == "POST" and _COMMANDS.fullmatch(scope.get("path", "")) is not None


class Admission:
    """A counter of commands in flight with a limit (one per worker)."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
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

    def enter(self) -> bool:
        """Take a place for one command; False (and counted) when the worker is full."""
        if self.in_flight >= self.limit:
            metrics.OVERLOADED.inc()
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    async def refuse(self, send: Send) -> None:
        """Answer an HTTP request 503 ``overloaded`` (its body is never read)."""
        await send(self._start)
        await send(self._body)


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
