"""For whoever runs paylive: liveness, readiness, the Prometheus metrics and the API
description (docs/protocol.md sections 3.6 and 9). No credential but the metrics
token, when one is set.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from . import openapi
from .auth import bearer, matches_any
from .errors import error_response
from .http import runtime_of


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks = await runtime.readiness()
    ready = (
        checks["engine"]
        and checks["engine_writable"]
        and checks["subscription"]
        and not checks["shutting_down"]
        and not checks["overloaded"]
    )
    body: dict[str, object] = {"ready": ready, "checks": checks}
    archive = runtime.archive_status()
    if archive is not None:
        body["archive"] = archive  # said, never counted in ``ready``
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    """Counts of payments are the shop's business: with ``PAYLIVE_METRICS_TOKEN`` set (and
    always in production) the scraper must send one of its entries as a bearer token
    (a list, so that the token is rotated without a gap in the scrapes)."""
    settings = runtime_of(request).settings
    if settings.metrics_tokens or settings.production:
        given = bearer(request.headers.get("authorization"))
        if not settings.metrics_tokens:
            message = "set PAYLIVE_METRICS_TOKEN to read the metrics in production"
        elif given is None:
            message = "send Authorization: Bearer <metrics token>"
        elif matches_any(given, settings.metrics_tokens):
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
