"""The ASGI application: routes, error format, and the worker's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..core.protocol import CloseCode, ErrorCode
from ..limits.admission import Admission
from ..runtime import Runtime
from ..settings import Settings, load_settings
from ..telemetry import context, tracing
from ..web import (
    clients,
    customer,
    merchant,
    observe,
    operations,
    pages,
    sockets,
    staff,
    streams,
    tickets,
    webhooks,
)
from ..web.admission import Door
from ..web.admission import serve as serve_admission
from ..web.clients import TrustedProxies
from ..web.errors import error_body
from ..web.observe import Observe
from . import shutdown
from .looplag import LoopLag

# The HTTP API by audience, each module's routes (docs/openapi.json describes exactly
# these): the checkout with its client secret, its streams and tickets; the shop with
# its API key; staff; the providers; whoever runs paylive.
API_ROUTES: list[BaseRoute] = [
    *customer.routes,
    *streams.routes,
    *tickets.routes,
    *merchant.routes,
    *staff.routes,
    *webhooks.routes,
    *operations.routes,
]
SOCKET_ROUTES = [
    WebSocketRoute("/ws/sessions/{session_id}", sockets.customer_socket),
    WebSocketRoute("/ws/admin", sockets.admin_socket),
]

_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    400: ErrorCode.INVALID_REQUEST,
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


class SocketsFirst:
    """WebSockets go straight to their endpoint; HTTP (through the door of
    ``web.admission``) and the lifespan go to Starlette.

    A socket lives for minutes or hours, and every middleware and router layer it
    passes through keeps a coroutine frame (and its locals) alive all that time:
    measured with tracemalloc at 2,000 idle sockets, Starlette's layers held about
    6 KB of each socket's 28 KB. Here a socket costs one frame of ours. The app
    (``scope["app"]``) is still the Starlette one, for its state.
    """

    def __init__(
        self,
        http: ASGIApp,
        app: Starlette,
        sockets: list[WebSocketRoute],
        proxies: TrustedProxies,
    ) -> None:
        self.http = http
        self.app = app
        self._sockets = sockets
        self._proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Who the client is, behind a trusted proxy (``web.clients``): here and not in a
        # middleware of its own, which would keep a frame alive for each socket.
        if scope["type"] != "lifespan":
            clients.decide(scope, self._proxies)
        if scope["type"] == "websocket":
            for route in self._sockets:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["app"] = self.app
                    # No middleware sees a socket: its ids are set here, for its task.
                    request_id, parent = observe.request_ids(scope)
                    session = child.get("path_params", {}).get("session_id")
                    with context.bound(request=request_id, session=session):
                        token = context.trace.set(parent)
                        try:
                            await route.endpoint(WebSocket(scope, receive, send))
                        finally:
                            context.trace.reset(token)
                    return
        await self.http(scope, receive, send)


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Build the app; settings default to the environment (docs/protocol.md section 1)."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing.install(settings.telemetry)
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        lag = LoopLag(settings.loop_lag_interval_ms, runtime.admission.lagged)
        lag.start()
        serve_admission(runtime.admission)
        shutdown.register(runtime.drain)
        try:
            yield
        finally:
            shutdown.unregister(runtime.drain)
            lag.stop()
            serve_admission(None)
            if not runtime.shutting_down:
                # Stopped without the server's shutdown (an embedding app): no window.
                runtime.shutting_down = True
                runtime.hub.close_all(CloseCode.GOING_AWAY, "server shutting down: reconnect")
            await runtime.stop()
            tracing.shutdown()

    # Pages last: their static mount takes every path under /client.
    routes = [*API_ROUTES, *SOCKET_ROUTES, *pages.routes]
    middleware = []
    if settings.allowed_origins:
        # Checkout pages on the shop's own origin call the customer API with their
        # client secret; the same allow-list as for sockets decides who may.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "Last-Event-ID",
                    "X-Request-Id",
                    "traceparent",
                ],
                expose_headers=["X-Request-Id", "traceparent"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )

    def admission() -> Admission | None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        return None if runtime is None else runtime.admission

    return SocketsFirst(
        Observe(Door(app, admission, settings.credentials, settings.bodies)),
        app,
        SOCKET_ROUTES,
        TrustedProxies(settings.trusted_proxies),
    )
