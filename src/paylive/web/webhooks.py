"""Provider webhooks (``/webhooks/*``): the sandbox's and Stripe's results of a
charge, verified by their signature and applied once per event id (providers send at
least once). Only the configured gateway's route answers; the other is 404.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.machine import ProviderResult
from ..core.protocol import ErrorCode
from ..core.signature import SignatureError, verify
from ..errors import Refused
from ..runtime import Runtime
from ..telemetry import context, tracing
from . import validation
from .http import endpoint, read_body, runtime_of


def _only_with(runtime: Runtime, gateway: str) -> None:
    if runtime.settings.gateway != gateway:
        raise Refused(ErrorCode.NOT_FOUND, f"the {gateway} gateway is not the one configured")


async def _apply(
    runtime: Runtime,
    event_id: str,
    session_id: str,
    result: ProviderResult,
    carried: str | None = None,
) -> Response:
    """A provider's result, applied once per event id (providers send at least once).
    ``carried``: the charge's traceparent when the provider kept it (Stripe's metadata)."""
    with tracing.span(
        "webhook in",
        kind="consumer",
        parent=context.parse_traceparent(carried),
        attributes={
            "paylive.provider": runtime.settings.gateway,
            "paylive.event_id": event_id,
            tracing.SESSION_ATTRIBUTE: session_id,
        },
    ):
        outcome = await runtime.service.provider_event(event_id, session_id, result)
    if outcome is None:
        return JSONResponse({"received": True, "duplicate": True})
    refusal = outcome.decision.refusal
    if refusal is not None and refusal.code == ErrorCode.UNKNOWN_ATTEMPT:
        raise Refused(refusal.code, refusal.message)
    return JSONResponse({"received": True, "applied": outcome.decision.to_save})


@endpoint
async def sandbox_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    _only_with(runtime, "sandbox")
    raw = await read_body(request)
    try:
        verify(
            request.headers.get("paylive-signature"),
            raw,
            runtime.settings.webhook_secrets,
            int(time.time()),
            runtime.settings.webhook_tolerance_s,
        )
    except SignatureError as exc:
        raise Refused(ErrorCode.INVALID_SIGNATURE, str(exc)) from None
    body = validation.parse_json(raw, runtime.settings.max_json_depth)
    return await _apply(runtime, *validation.parse_webhook(body))


@endpoint
async def stripe_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    _only_with(runtime, "stripe")
    # Stripe's library is loaded only when it is the configured gateway.
    from ..gateway import stripe as stripe_gateway

    raw = await read_body(request, runtime.settings.stripe_webhook_max_bytes)
    try:
        stripe_gateway.verify_signature(
            raw,
            request.headers.get("stripe-signature"),
            runtime.settings.stripe_webhook_secrets,
            runtime.settings.webhook_tolerance_s,
        )
    except SignatureError as exc:
        raise Refused(ErrorCode.INVALID_SIGNATURE, str(exc)) from None
    event = validation.parse_json(raw, runtime.settings.max_json_depth)
    found = stripe_gateway.event_result(event)
    if found is None:
        # Not about one of paylive's payments, or nothing to act on: a 2xx, so that
        # Stripe does not send it again.
        return JSONResponse({"received": True, "ignored": True})
    return await _apply(runtime, *found, stripe_gateway.event_trace(event))


routes = [
    Route("/webhooks/sandbox", sandbox_webhook, methods=["POST"]),
    Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
]
