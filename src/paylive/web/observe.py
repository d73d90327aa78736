"""Every HTTP request's ids, span and duration (ASGI middleware, in front of the door).

The request id is the caller's ``X-Request-Id`` when it sends a sensible one, else a
new one; the trace continues the caller's ``traceparent`` when it sends a valid one,
else starts. Both are answered in the response headers (``X-Request-Id``, and
``traceparent`` naming the request's own span), set for everything the request does
(``telemetry.context``: the access line and the service's lines carry them), and the
request's duration goes to ``paylive_http_request_duration_seconds`` by route.

Sockets do not come through here (``server.app.SocketsFirst``): ``socket_ids`` gives
a handshake the same ids.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..core.protocol import ErrorCode
from ..telemetry import context, tracing
from .errors import http_status

REQUEST_ID_HEADER = b"x-request-id"
TRACEPARENT_HEADER = b"traceparent"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            try:
                return value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
                return None
    return None


def request_ids(scope: Scope) -> tuple[str, context.TraceContext | None]:
    """The request id to use and the caller's trace context, if it sent one."""
    return (
        context.accepted_request_id(_header(scope, REQUEST_ID_HEADER)),
        context.parse_traceparent(_header(scope, TRACEPARENT_HEADER)),
    )


def response_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    headers = [(REQUEST_ID_HEADER, request_id.encode())]
    traceparent = context.current_traceparent()
    if traceparent is not None:
        headers.append((TRACEPARENT_HEADER, traceparent.encode()))
    return headers


def route_of(scope: Scope) -> str:
    """The route's template (bounded: a metric label), not the path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, parent = request_ids(scope)
        # Bounded: the span's name is an operation a tracing backend lists for ever.
        method = metrics.method_label(scope.get("method", "GET"))
        status = 500
        started = False
        extra: list[tuple[bytes, bytes]] = []

        async def answer(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
                session = _session_of(scope)
                if session is not None:
                    # For the access line, written as the answer starts (this task's
                    # context ends with the request).
                    context.session_id.set(session)
            await send(message)

        attributes = None
        if tracing.enabled():
            attributes = {
                "http.request.method": method if method != "other" else "_OTHER",
                "url.path": scope.get("path"),
                "paylive.request_id": request_id,
            }
            if method == "other":
                attributes["http.request.method_original"] = scope.get("method")
        with (
            context.bound(request=request_id),
            tracing.span(
                f"HTTP {method}", kind="server", parent=parent, attributes=attributes
            ) as span,
        ):
            extra.extend(response_headers(request_id))
            try:
                await self.app(scope, receive, answer)
            except asyncio.CancelledError:
                # Only a stopping worker cancels a request (``server.connections``
                # cuts it), and answers it 503 shutting_down if nothing was sent yet:
                # counted as that, not as a 500 (a bug).
                if not started:
                    status = http_status(ErrorCode.SHUTTING_DOWN)
                raise
            finally:
                route = route_of(scope)
                if tracing.enabled():
                    span.rename(f"{method} {route}")
                    span.set("http.route", route)
                    span.set("http.response.status_code", status)
                    span.set(tracing.SESSION_ATTRIBUTE, _session_of(scope))
                    if status >= 500:
                        span.fail(f"HTTP {status}")
                metrics.http_request(method, route, status, time.perf_counter() - started)


def _session_of(scope: Scope) -> str | None:
    params: Any = scope.get("path_params") or {}
    session = params.get("session_id") if isinstance(params, dict) else None
    return session if isinstance(session, str) else None
