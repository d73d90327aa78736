"""For whoever runs paylive: liveness, readiness, the Prometheus metrics and the API
description (docs/protocol.md sections 3.6 and 9). No credential but the metrics
token, when one is set.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from . import openapi
from .auth import bearer
from .errors import error_response
from .http import runtime_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    checks = await runtime_of(request).readiness()
    ready = (
        checks["engine"]
        and checks["engine_writable"]
        and checks["subscription"]
        and not checks["shutting_down"]
        and not checks["overloaded"]
    )
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    """Counts of payments are the shop's business: with ``PAYLIVE_METRICS_TOKEN`` set (and
    always in production) the scraper must send it as a bearer token."""
    settings = runtime_of(request).settings
    if settings.metrics_token or settings.production:
        given = bearer(request.headers.get("authorization"))
        if not settings.metrics_token:
            message = "set PAYLIVE_METRICS_TOKEN to read the metrics in production"
        elif given is None:
            message = "send Authorization: Bearer <metrics token>"
        elif hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            message = ""
        else:
            message = "the metrics token is not valid"
        if message:
            return error_response(
                Refused(ErrorCode.UNAUTHORIZED, message), {"WWW-Authenticate": "Bearer"}
            )
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


async def openapi_document(request: Request) -> Response:
    return Response(openapi.document_bytes(), media_type="application/json")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
]
