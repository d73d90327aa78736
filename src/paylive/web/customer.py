"""The customer API (docs/protocol.md section 3): what a checkout page may do with its
session's client secret. Read the session, start an attempt, interrupt, cancel,
check with the provider, say the outcome was seen; and the checkout's configuration.

The shop's API key may do each of these too (the session routes also take
``MERCHANT``); a client secret opens its own session only, and its commands are rate
limited per session (``http.rate_limit``). Tickets (``web.tickets``), streams
(``web.streams``) and sockets (``web.sockets``) are the customer's other doors.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.machine import Cancel, Interrupt, SeeOutcome, StartAttempt
from ..service.idempotency import Answer
from . import validation
from .auth import ADMIN, CUSTOMER, MERCHANT
from .http import (
    answer,
    asked,
    endpoint,
    json_body,
    once,
    optional_json_body,
    rate_limit,
    run_command,
    runtime_of,
    session_principal,
)


@endpoint
async def get_session(request: Request) -> Response:
    _, session_id = session_principal(request, MERCHANT, CUSTOMER, ADMIN)
    # From the engine, or from the archive once the engine has forgotten it.
    return JSONResponse(await runtime_of(request).reads.public(session_id))


@endpoint
async def start_attempt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await json_body(request)
    # Before the key: a refusal of the body is kept for it for a day, and a checkout
    # sending a new key with each bad body would store one record a request.
    rate_limit(request, principal, session_id)

    async def handler() -> Answer:
        runtime = runtime_of(request)
        method = validation.parse_attempt(body, runtime.settings.gateway)
        command = StartAttempt(method, asked(request, body))
        return answer(await runtime.service.run(session_id, command), 202)

    return await once(request, f"POST /api/sessions/{session_id}/attempts", body, handler)


@endpoint
async def interrupt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await json_body(request)
    return await run_command(
        request,
        principal,
        session_id,
        "interrupt",
        body,
        lambda asked: Interrupt(validation.parse_interrupt(body), asked),
    )


@endpoint
async def cancel(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await optional_json_body(request)
    return await run_command(request, principal, session_id, "cancel", body, Cancel)


@endpoint
async def seen(request: Request) -> Response:
    """The checkout drew the session's outcome: the receipt (protocol section 10)."""
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await json_body(request)
    return await run_command(
        request,
        principal,
        session_id,
        "seen",
        body,
        lambda asked: SeeOutcome(validation.parse_seen(body), asked),
    )


@endpoint
async def check(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await optional_json_body(request)
    rate_limit(request, principal, session_id)

    async def handler() -> Answer:
        return 200, (await runtime_of(request).service.check(session_id)).to_public()

    return await once(request, f"POST /api/sessions/{session_id}/check", body, handler)


async def checkout_config(request: Request) -> Response:
    """What a checkout page needs to collect a payment method (no secret in it)."""
    settings = runtime_of(request).settings
    body: dict[str, Any] = {"gateway": settings.gateway}
    if settings.gateway == "stripe":
        base = settings.stripe_api_base
        body["stripe"] = {
            "publishable_key": settings.stripe_publishable_key or None,
            # Stripe.js comes from Stripe; a stand-in server serves its own at this path.
            "js": f"{base}/js.stripe.com/v3/" if base else "https://js.stripe.com/v3/",
        }
    return JSONResponse(body)


routes = [
    Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}/attempts", start_attempt, methods=["POST"]),
    Route("/api/sessions/{session_id}/interrupt", interrupt, methods=["POST"]),
    Route("/api/sessions/{session_id}/cancel", cancel, methods=["POST"]),
    Route("/api/sessions/{session_id}/check", check, methods=["POST"]),
    Route("/api/sessions/{session_id}/seen", seen, methods=["POST"]),
    Route("/api/checkout/config", checkout_config, methods=["GET"]),
]
