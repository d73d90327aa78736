"""The door: commands in flight on this worker, and the refusal of one too many.

Overload is shed at the door, by what is already in flight, not by how long a
request has waited: past ``max_in_flight`` commands being worked on by this worker,
a new one is refused at once (HTTP 503 ``overloaded`` with ``Retry-After``; on a
socket an ``error`` with that code), before it reads its body, takes an idempotency
key or waits for an engine connection. So a refused command changes nothing, and the
work already accepted keeps the worker's time and is delivered on time.

Webhooks, timers, effects and reads do not pass the door: a provider's result is
work already accepted, and reads are cheap. (``server.connections`` bounds the
connections a worker holds; this bounds the work they ask of it.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from .errors import error_response

OVERLOADED = Refused(ErrorCode.OVERLOADED, "this worker has too much work in flight; retry shortly")


class Admission:
    """A counter of commands in flight with a limit (one per worker)."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def enter(self) -> bool:
        """Take a place for one command; False (and counted) when the worker is full."""
        if self.in_flight >= self.limit:
            metrics.OVERLOADED.inc()
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> Response:
        return error_response(OVERLOADED, {"Retry-After": str(self.retry_after_s)})


Endpoint = Callable[[Request], Awaitable[Response]]


def admitted(endpoint: Endpoint) -> Endpoint:
    """Run ``endpoint`` only when the worker's door lets one more command in."""

    async def wrapped(request: Request) -> Response:
        door: Admission = request.app.state.runtime.admission
        if not door.enter():
            return door.refusal()
        try:
            return await endpoint(request)
        finally:
            door.leave()

    wrapped.__name__ = endpoint.__name__
    wrapped.__doc__ = endpoint.__doc__
    return wrapped
