"""The HTTP API of docs/protocol.md section 3: parse, authorise, call the service, answer.

No business rule lives here: a route validates its input, checks who is asking and
hands a command to ``PaymentService``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..core import stats
from ..core.machine import Cancel, Command, Interrupt, StartAttempt
from ..core.signature import SignatureError, verify
from ..engine import EngineUnavailable
from ..errors import ApiError
from ..runtime import Runtime
from ..service import idempotency
from ..service.payments import Outcome
from . import validation
from .auth import ADMIN, CUSTOMER, MERCHANT, Principal, bearer, client_secret, principal_for

Endpoint = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def error_response(exc: ApiError, extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = exc.to_body()
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=exc.status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body may be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, runtime_of(request).settings.max_body_bytes)
    return validation.parse_json(raw)


def authenticate(request: Request, *allowed: str) -> Principal:
    runtime = runtime_of(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <api key or client secret>")
    principal = principal_for(token, runtime.settings)
    if principal is None:
        raise ApiError(401, "unauthorized", "the credentials are not valid")
    if principal.kind not in allowed:
        raise ApiError(403, "forbidden", f"a {principal.kind} credential cannot do this")
    return principal


def session_principal(request: Request, *allowed: str) -> tuple[Principal, str]:
    principal = authenticate(request, *allowed)
    session_id = request.path_params["session_id"]
    if not principal.may_open(session_id):
        raise ApiError(403, "forbidden", "this client secret opens another session")
    return principal, session_id


def handle_errors(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return error_response(exc)
        except EngineUnavailable:
            metrics.ENGINE_ERRORS.inc()
            return error_response(
                ApiError(
                    503, "engine_unavailable", "the session store is unavailable; retry shortly"
                )
            )

    return wrapped


def session_body(outcome: Outcome, status: int) -> tuple[int, dict[str, Any]]:
    refusal = outcome.decision.refusal
    if refusal is not None:
        body: dict[str, Any] = ApiError(refusal.status, refusal.code, refusal.message).to_body()
        body["session"] = outcome.session.to_public()
        return refusal.status, body
    return status, outcome.session.to_public()


# Routes ---------------------------------------------------------------------


@handle_errors
async def create_session(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, MERCHANT)
    body = await json_body(request)

    async def handler() -> tuple[int, dict[str, Any]]:
        order_id, amount, currency, metadata = validation.parse_create(body)
        session = await runtime.service.create(order_id, amount, currency, metadata)
        payload = session.to_public()
        payload["client_secret"] = client_secret(runtime.settings.secret, session.id)
        return 201, payload

    status, payload = await idempotency.run_once(
        runtime.engine,
        "POST /api/sessions",
        request.headers.get("idempotency-key"),
        body,
        runtime.settings.idempotency_ttl_ms,
        handler,
    )
    return JSONResponse(payload, status_code=status)


@handle_errors
async def get_session(request: Request) -> Response:
    _, session_id = session_principal(request, MERCHANT, CUSTOMER, ADMIN)
    session = await runtime_of(request).service.get(session_id)
    return JSONResponse(session.to_public())


async def _command(
    request: Request, principal: Principal, session_id: str, command: Command, status: int
) -> tuple[int, dict[str, Any]]:
    runtime = runtime_of(request)
    if principal.kind == CUSTOMER and not runtime.limiter.take(session_id):
        raise ApiError(429, "rate_limited", "too many commands for this session; slow down")
    outcome = await runtime.service.run(session_id, command)
    return session_body(outcome, status)


@handle_errors
async def start_attempt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    body = await json_body(request)

    async def handler() -> tuple[int, dict[str, Any]]:
        method = validation.parse_attempt(body)
        return await _command(request, principal, session_id, StartAttempt(method), 202)

    status, payload = await idempotency.run_once(
        runtime_of(request).engine,
        f"POST /api/sessions/{session_id}/attempts",
        request.headers.get("idempotency-key"),
        body,
        runtime_of(request).settings.idempotency_ttl_ms,
        handler,
    )
    return JSONResponse(payload, status_code=status)


@handle_errors
async def interrupt(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    reason = validation.parse_interrupt(await json_body(request))
    status, payload = await _command(request, principal, session_id, Interrupt(reason), 200)
    return JSONResponse(payload, status_code=status)


@handle_errors
async def cancel(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT, CUSTOMER)
    raw = await read_body(request, runtime_of(request).settings.max_body_bytes)
    if raw.strip():
        validation.parse_json(raw)  # an optional body must still be JSON
    status, payload = await _command(request, principal, session_id, Cancel(), 200)
    return JSONResponse(payload, status_code=status)


@handle_errors
async def complete(request: Request) -> Response:
    principal, session_id = session_principal(request, MERCHANT)
    result = validation.parse_complete(await json_body(request))
    status, payload = await _command(request, principal, session_id, result, 200)
    return JSONResponse(payload, status_code=status)


@handle_errors
async def sandbox_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    raw = await read_body(request, runtime.settings.max_body_bytes)
    try:
        verify(
            request.headers.get("paylive-signature"),
            raw,
            runtime.settings.webhook_secrets,
            int(time.time()),
            runtime.settings.webhook_tolerance_s,
        )
    except SignatureError as exc:
        raise ApiError(400, "invalid_signature", str(exc)) from None
    event_id, session_id, result = validation.parse_webhook(validation.parse_json(raw))
    seen_key = f"webhook:{event_id}"
    if await runtime.engine.get(seen_key) is not None:
        return JSONResponse({"received": True, "duplicate": True})
    outcome = await runtime.service.run(session_id, result)
    await runtime.engine.put(seen_key, b"1", runtime.settings.retention_after_end_ms)
    refusal = outcome.decision.refusal
    if refusal is not None and refusal.code == "unknown_attempt":
        raise ApiError(404, refusal.code, refusal.message)
    return JSONResponse({"received": True, "applied": outcome.decision.changed})


def limit_of(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise validation.invalid("limit", f"must be an integer from 1 to {maximum}")
    return int(raw)


@handle_errors
async def admin_sessions(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    which = request.query_params.get("status", "active")
    if which not in ("active", "all", "needs_review"):
        raise validation.invalid("status", "must be active, all or needs_review")
    limit = limit_of(request, 100, runtime.settings.admin_list_max)
    if which == "needs_review":
        sessions = await runtime.engine.list_review(limit)
    else:
        sessions = await runtime.engine.list_sessions(which == "active", limit)
    return JSONResponse({"sessions": [s.to_public() for s in sessions]})


@handle_errors
async def admin_summary(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    return JSONResponse(stats.summary(await runtime.engine.counters()))


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    checks: dict[str, bool] = {"engine": True, "subscription": True, "shutting_down": False}
    try:
        await runtime.engine.ping()
    except EngineUnavailable:
        checks["engine"] = False
    checks["subscription"] = runtime.engine.subscription_healthy
    checks["shutting_down"] = runtime.shutting_down
    ready = checks["engine"] and checks["subscription"] and not checks["shutting_down"]
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


routes = [
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}/attempts", start_attempt, methods=["POST"]),
    Route("/api/sessions/{session_id}/interrupt", interrupt, methods=["POST"]),
    Route("/api/sessions/{session_id}/cancel", cancel, methods=["POST"]),
    Route("/api/sessions/{session_id}/complete", complete, methods=["POST"]),
    Route("/webhooks/sandbox", sandbox_webhook, methods=["POST"]),
    Route("/api/admin/sessions", admin_sessions, methods=["GET"]),
    Route("/api/admin/summary", admin_summary, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]
