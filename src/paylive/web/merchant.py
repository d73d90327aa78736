"""The merchant API: what the shop's server does with its API key. Create a session
(with its client secret for the checkout), report a provider's result by hand
(``complete``), refund, and read the events log for reconciliation
(docs/protocol.md sections 3, 6 and 7).

Staff from operator up may refund too (with their token, audited as themselves). The
shop's other reads and actions on deliveries and searches are staff routes
(``web.staff``).
"""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.machine import Refund
from ..core.refunds import asked_by
from ..core.session import Session
from ..service.idempotency import Answer
from . import validation
from .auth import ADMIN, MERCHANT, OPERATOR, client_secret
from .http import (
    asked,
    audit_of,
    authenticate,
    endpoint,
    json_body,
    once,
    require_role,
    run_audited,
    run_command,
    runtime_of,
    session_principal,
)

EVENTS_PAGE = 100
EVENTS_PAGE_MAX = 1_000


@endpoint
async def create_session(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, MERCHANT)
    body = await json_body(request)

    async def handler() -> Answer:
        order_id, amount, currency, metadata = validation.parse_create(body)
        digest = asked(request, body)
        session = await runtime.service.create(order_id, amount, currency, metadata, digest)
        payload = session.to_public()
        payload["client_secret"] = client_secret(runtime.settings.secret, session.id)
        return 201, payload

    return await once(request, "POST /api/sessions", body, handler)


@endpoint
async def complete(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT)
    body = await json_body(request)
    return await run_command(
        request,
        principal,
        session_id,
        "complete",
        body,
        lambda asked: replace(validation.parse_complete(body), request=asked),
    )


@endpoint
async def refund(request: Request) -> Response:
    """``POST /api/sessions/{id}/refunds``: the shop, or staff from operator up."""
    principal, session_id = session_principal(request, MERCHANT, ADMIN)
    require_role(principal, OPERATOR)
    body = await json_body(request)
    runtime = runtime_of(request)

    async def handler() -> Answer:
        amount, reason = validation.parse_refund(body)
        digest = asked(request, body)
        command = Refund(amount, reason, principal.who, digest)
        audit = audit_of(request, principal, "refund", amount=amount, reason=reason)
        session = await run_audited(runtime, session_id, command, audit, Session.to_public)
        made = asked_by(session, digest) or session.refunds[-1]
        return 202, {"refund": made.to_public(session_id), "session": session.to_public()}

    return await once(request, f"POST /api/sessions/{session_id}/refunds", body, handler)


@endpoint
async def events(request: Request) -> Response:
    """``GET /api/events?after=<cursor>&limit=N``: every merchant event, in order."""
    authenticate(request, MERCHANT)
    params = request.query_params
    after = validation.query_int(params, "after", 0, 2**62) or 0
    limit = validation.query_int(params, "limit", 1, EVENTS_PAGE_MAX) or EVENTS_PAGE
    page = await runtime_of(request).reads.events(after, limit)
    return JSONResponse(page.to_public())


routes = [
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions/{session_id}/complete", complete, methods=["POST"]),
    Route("/api/sessions/{session_id}/refunds", refund, methods=["POST"]),
    Route("/api/events", events, methods=["GET"]),
]
