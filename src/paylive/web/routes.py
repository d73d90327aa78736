"""The HTTP API of docs/protocol.md section 3: parse, authorise, call the service, answer.

No business rule lives here: a route validates its input, checks who is asking and
hands a command or a read to the service. Refusals travel as ``Refused``; the
``endpoint`` decorator turns them into answers through ``web.errors``.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..core.machine import (
    Cancel,
    Command,
    Interrupt,
    ProviderResult,
    Refund,
    SeeOutcome,
    StartAttempt,
)
from ..core.protocol import TEMPORARY_CODES, ErrorCode
from ..core.session import Session
from ..core.signature import SignatureError, verify
from ..engine import EngineUnavailable
from ..errors import Refused
from ..runtime import Runtime
from ..service.idempotency import Answer, Handler
from ..service.payments import Outcome
from ..telemetry import context, tracing
from . import bodies, openapi, validation
from .auth import (
    ADMIN,
    CUSTOMER,
    MERCHANT,
    OPERATOR,
    VIEWER,
    Principal,
    bearer,
    client_secret,
    identify,
)
from .errors import ENGINE_DOWN, error_reply, error_response

Endpoint = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def endpoint(handler: Endpoint) -> Endpoint:
    """Answer a refusal with its error; an engine outage with 503 ``engine_unavailable``."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return error_response(exc)
        except EngineUnavailable:
            metrics.ENGINE_ERRORS.inc()
            return error_response(ENGINE_DOWN)
        except bodies.ClientGone:
            return Response(status_code=400)  # nobody is there to read it

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The raw body, at most ``limit`` (``max_body_bytes`` by default), all of it
    arrived by the request's body deadline (``web.bodies``)."""
    settings = runtime_of(request).settings
    limit = settings.max_body_bytes if limit is None else limit
    return await bodies.read_all(
        request.scope, request.receive, limit, settings.header_timeout_ms / 1000
    )


async def json_body(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    return validation.parse_json(raw, runtime_of(request).settings.max_json_depth)


def authenticate(request: Request, *allowed: str) -> Principal:
    principal = identify(request.headers.get("authorization"), runtime_of(request).settings)
    if principal.kind not in allowed:
        raise Refused(ErrorCode.FORBIDDEN, f"a {principal.kind} credential cannot do this")
    return principal


def require_role(principal: Principal, role: str) -> None:
    """Staff must hold ``role`` (or one above it); anyone else passed ``authenticate``."""
    if principal.kind == ADMIN and not principal.at_least(role):
        raise Refused(
            ErrorCode.ROLE_NOT_ALLOWED,
            f"{principal.who} is a {principal.role}; this needs the {role} role or above",
        )


def staff(request: Request, role: str = VIEWER) -> Principal:
    """A staff member holding ``role``: 401 without a staff token, 403 ``forbidden`` for
    another credential, 403 ``role_not_allowed`` for a role below it."""
    principal = authenticate(request, ADMIN)
    require_role(principal, role)
    return principal


def audit_of(
    request: Request, principal: Principal, action: str, **details: object
) -> dict[str, object]:
    """An entry of the audit trail (docs/protocol.md section 6.13), but its time, which
    the service sets when it saves the change."""
    return {
        "id": "aud_" + secrets.token_urlsafe(12),
        "staff": principal.who,
        "role": principal.role or principal.kind,
        "action": action,
        "address": request.client.host if request.client else None,
        "details": details,
    }


async def run_audited(
    runtime: Runtime,
    session_id: str,
    command: Command,
    audit: dict[str, object],
    view: Callable[[Session], dict[str, Any]],
) -> Session:
    """Run a staff or shop action with its audit entry, then copy that entry to the
    trail; a refusal is raised with the session as ``view`` shows it to the caller."""
    outcome = await runtime.service.run(session_id, command, audit)
    refusal = outcome.decision.refusal
    if refusal is not None:
        raise Refused(refusal.code, refusal.message, session=view(outcome.session))
    await runtime.audit.added(outcome.session.audit[-1])
    return outcome.session


def session_principal(request: Request, *allowed: str) -> tuple[Principal, str]:
    principal = authenticate(request, *allowed)
    session_id = request.path_params["session_id"]
    if not principal.may_open(session_id):
        raise Refused(ErrorCode.FORBIDDEN, "this client secret opens another session")
    return principal, session_id


def kept(handler: Handler) -> Handler:
    """For an Idempotency-Key: a final refusal is an answer to keep; a temporary one
    (``TEMPORARY_CODES``: not yet, not now) and a server error are not, so the same
    key tries again."""

    async def answer() -> Answer:
        try:
            return await handler()
        except Refused as exc:
            status, body = error_reply(exc)
            if status >= 500 or exc.code in TEMPORARY_CODES:
                raise
            return status, body

    return answer


def answer(outcome: Outcome, status: int) -> Answer:
    """The session, or the machine's refusal with the session beside it."""
    refusal = outcome.decision.refusal
    if refusal is not None:
        raise Refused(refusal.code, refusal.message, session=outcome.session.to_public())
    return status, outcome.session.to_public()


# Routes ---------------------------------------------------------------------


@endpoint
async def create_session(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, MERCHANT)
    body = await json_body(request)

    async def handler() -> Answer:
        order_id, amount, currency, metadata = validation.parse_create(body)
        session = await runtime.service.create(order_id, amount, currency, metadata)
        payload = session.to_public()
        payload["client_secret"] = client_secret(runtime.settings.secret, session.id)
        return 201, payload

    status, payload = await runtime.idempotency.run_once(
        "POST /api/sessions", request.headers.get("idempotency-key"), body, kept(handler)
    )
    return JSONResponse(payload, status_code=status)


@endpoint
async def get_session(request: Request) -> Response:
    _, session_id = session_principal(request, MERCHANT, CUSTOMER, ADMIN)
    # From the engine, or from the archive once the engine has forgotten it.
    return JSONResponse(await runtime_of(request).records.session(session_id))


async def _command(
    request: Request, principal: Principal, session_id: str, command: Command, status: int
) -> Answer:
    _rate_limit(request, principal, session_id)
    return answer(await runtime_of(request).service.run(session_id, command), status)


def _rate_limit(request: Request, principal: Principal, session_id: str) -> None:
    if principal.kind == CUSTOMER and not runtime_of(request).limiter.take(session_id):
        raise Refused(ErrorCode.RATE_LIMITED, "too many commands for this session; slow down")


@endpoint
async def start_attempt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await json_body(request)

    async def handler() -> Answer:
        method = validation.parse_attempt(body, runtime_of(request).settings.gateway)
        return await _command(request, principal, session_id, StartAttempt(method), 202)

    status, payload = await runtime_of(request).idempotency.run_once(
        f"POST /api/sessions/{session_id}/attempts",
        request.headers.get("idempotency-key"),
        body,
        kept(handler),
    )
    return JSONResponse(payload, status_code=status)


@endpoint
async def interrupt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    reason = validation.parse_interrupt(await json_body(request))
    status, payload = await _command(request, principal, session_id, Interrupt(reason), 200)
    return JSONResponse(payload, status_code=status)


@endpoint
async def cancel(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    raw = await read_body(request)
    if raw.strip():
        # An optional body must still be JSON.
        validation.parse_json(raw, runtime_of(request).settings.max_json_depth)
    status, payload = await _command(request, principal, session_id, Cancel(), 200)
    return JSONResponse(payload, status_code=status)


@endpoint
async def seen(request: Request) -> Response:
    """The checkout drew the session's outcome: the receipt (protocol section 6.17)."""
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    status_seen = validation.parse_seen(await json_body(request))
    status, payload = await _command(request, principal, session_id, SeeOutcome(status_seen), 200)
    return JSONResponse(payload, status_code=status)


@endpoint
async def complete(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT)
    result = validation.parse_complete(await json_body(request))
    status, payload = await _command(request, principal, session_id, result, 200)
    return JSONResponse(payload, status_code=status)


@endpoint
async def check(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    raw = await read_body(request)
    if raw.strip():
        validation.parse_json(raw, runtime_of(request).settings.max_json_depth)
    _rate_limit(request, principal, session_id)
    session = await runtime_of(request).service.check(session_id)
    return JSONResponse(session.to_public())


@endpoint
async def refund(request: Request) -> Response:
    """``POST /api/sessions/{id}/refunds``: the shop, or staff from operator up."""
    principal, session_id = session_principal(request, MERCHANT, ADMIN)
    require_role(principal, OPERATOR)
    body = await json_body(request)
    runtime = runtime_of(request)

    async def handler() -> Answer:
        amount, reason = validation.parse_refund(body)
        command = Refund(amount, reason, principal.who)
        audit = audit_of(request, principal, "refund", amount=amount, reason=reason)
        session = await run_audited(runtime, session_id, command, audit, Session.to_public)
        made = session.refunds[-1]
        return 202, {"refund": made.to_public(session_id), "session": session.to_public()}

    status, payload = await runtime.idempotency.run_once(
        f"POST /api/sessions/{session_id}/refunds",
        request.headers.get("idempotency-key"),
        body,
        kept(handler),
    )
    return JSONResponse(payload, status_code=status)


def _only_with(runtime: Runtime, gateway: str) -> None:
    if runtime.settings.gateway != gateway:
        raise Refused(ErrorCode.NOT_FOUND, f"the {gateway} gateway is not the one configured")


async def _apply_webhook(
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
    return await _apply_webhook(runtime, *validation.parse_webhook(body))


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
    return await _apply_webhook(runtime, *found, stripe_gateway.event_trace(event))


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


def limit_of(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    return validation.parse_digits(raw, "limit", 1, maximum)


@endpoint
async def admin_sessions(request: Request) -> Response:
    runtime = runtime_of(request)
    staff(request)
    which = request.query_params.get("status", "active")
    if which not in ("active", "all", "needs_review"):
        raise validation.invalid("status", "must be active, all or needs_review")
    limit = limit_of(request, 100, runtime.settings.admin_list_max)
    sessions = await runtime.reads.sessions(which, limit)
    return JSONResponse({"sessions": [s.to_public() for s in sessions]})


@endpoint
async def admin_summary(request: Request) -> Response:
    staff(request)
    return JSONResponse(await runtime_of(request).reads.summary())


@endpoint
async def admin_chart(request: Request) -> Response:
    staff(request)
    return JSONResponse(await runtime_of(request).reads.chart())


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    checks = await runtime_of(request).readiness()
    ready = (
        checks["engine"]
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
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}/attempts", start_attempt, methods=["POST"]),
    Route("/api/sessions/{session_id}/interrupt", interrupt, methods=["POST"]),
    Route("/api/sessions/{session_id}/cancel", cancel, methods=["POST"]),
    Route("/api/sessions/{session_id}/complete", complete, methods=["POST"]),
    Route("/api/sessions/{session_id}/check", check, methods=["POST"]),
    Route("/api/sessions/{session_id}/seen", seen, methods=["POST"]),
    Route("/api/sessions/{session_id}/refunds", refund, methods=["POST"]),
    Route("/api/checkout/config", checkout_config, methods=["GET"]),
    Route("/webhooks/sandbox", sandbox_webhook, methods=["POST"]),
    Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
    Route("/api/admin/sessions", admin_sessions, methods=["GET"]),
    Route("/api/admin/summary", admin_summary, methods=["GET"]),
    Route("/api/admin/chart", admin_chart, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
]
