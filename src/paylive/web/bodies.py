"""Reading a request's body: whole, bounded in size, and by one deadline.

The deadline is set by the connection when the headers are complete
(``server.connections`` puts it in the scope as the ``paylive.body`` extension) and
counts the whole body, not the pause between two bytes: a client that trickles its
body a byte at a time is answered 408 ``request_timeout`` by then, however steadily
it sends. Without the extension (an app run by another server) the deadline starts
when the reading does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive, Scope

from ..core.protocol import ErrorCode
from ..errors import PayliveError, Refused
from . import validation

# The scope extension the connection sets: ``{"deadline": <event loop time>}``, and
# ``"arrived": True`` once the whole body is in.
BODY_EXTENSION = "paylive.body"


class ClientGone(PayliveError):
    """The client closed the connection before its body arrived: nobody to answer."""


def body_state(scope: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the connection noted of the request's body (``BODY_EXTENSION``), if it did."""
    held = (scope.get("extensions") or {}).get(BODY_EXTENSION)
    return held if isinstance(held, dict) else None


def deadline_of(scope: Mapping[str, Any], timeout_s: float) -> float:
    """The loop time by which the body must have arrived."""
    held = body_state(scope)
    if held is not None and isinstance(held.get("deadline"), int | float):
        return float(held["deadline"])
    return asyncio.get_running_loop().time() + timeout_s


def declared_length(scope: Mapping[str, Any], limit: int) -> None:
    """Refuse at once a body whose Content-Length says it is too large or is no number."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            size = validation.ascii_int(value.decode("latin-1").strip())
            if size is None:
                raise Refused(ErrorCode.INVALID_REQUEST, "Content-Length is not a number")
            if size > limit:
                raise Refused(ErrorCode.BODY_TOO_LARGE, f"the body may be at most {limit} bytes")


async def read_all(scope: Scope, receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole body, at most ``limit`` bytes, arrived by the deadline; raises Refused
    (``body_too_large``, ``request_timeout``, ``invalid_request``) or ClientGone."""
    declared_length(scope, limit)
    if arrived(scope):
        # Nothing to wait for, so no deadline to watch: a timeout's enter and exit
        # were 3 to 6 % of a worker's samples under load, twice a command (the door
        # reads the body, then the route reads it again from the door).
        return await _read(receive, limit)
    try:
        async with asyncio.timeout_at(deadline_of(scope, timeout_s)):
            return await _read(receive, limit)
    except TimeoutError:
        raise Refused(ErrorCode.REQUEST_TIMEOUT, "the body did not arrive in time") from None


def arrived(scope: Mapping[str, Any]) -> bool:
    """Whether the connection has the whole body already (``arrived`` in the
    extension), so that reading it cannot wait."""
    held = body_state(scope)
    return held is not None and held.get("arrived") is True


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client went away before its body arrived")
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise Refused(ErrorCode.BODY_TOO_LARGE, f"the body may be at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
