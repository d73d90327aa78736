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
from starlette.routing import WebSocketRoute

from ..core.protocol import ErrorCode
from ..runtime import Runtime
from ..settings import Settings, load_settings
from ..web import admin, pages, shop, sockets
from ..web import routes as http_api
from ..web.errors import error_body
from . import shutdown

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


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; settings default to the environment (docs/protocol.md section 1)."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        shutdown.register(runtime.close_sockets)
        try:
            yield
        finally:
            shutdown.unregister(runtime.close_sockets)
            runtime.close_sockets()
            await runtime.stop()

    routes = [
        *http_api.routes,
        *admin.routes,
        *shop.routes,
        WebSocketRoute("/ws/sessions/{session_id}", sockets.customer_socket),
        WebSocketRoute("/ws/admin", sockets.admin_socket),
        *pages.routes(),
    ]
    middleware = []
    if settings.allowed_origins:
        # Checkout pages on the shop's own origin call the customer API with their
        # client secret; the same allow-list as for sockets decides who may.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                max_age=600,
            )
        )
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )
