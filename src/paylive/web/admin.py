"""The admin API for staff closing cases (docs/protocol.md section 6): the outbox of
gateway effects, a session's durable history, resolving reviews, and the sandbox's
outage switch and ledger (development only: 404 in production).

Every route here needs the admin token. As in ``routes``, no business rule lives
here: a review is a command to the machine, which refuses it while effects pend.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.outbox import ResolveReview
from ..core.protocol import ErrorCode
from ..errors import Refused
from ..gateway.sandbox import SandboxGateway
from ..service.effects import list_effects
from . import validation
from .auth import ADMIN
from .routes import authenticate, endpoint, json_body, limit_of, runtime_of

EFFECT_STATUSES = ("pending", "done", "all")


@endpoint
async def effects(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    status = request.query_params.get("status", "pending")
    if status not in EFFECT_STATUSES:
        raise validation.invalid("status", "must be pending, done or all")
    limit = limit_of(request, 100, runtime.settings.admin_list_max)
    raw_session = request.query_params.get("session")
    session_id = None if raw_session is None else validation.parse_session_id(raw_session)
    found = await list_effects(runtime.engine, status, limit, session_id)
    return JSONResponse({"effects": found})


@endpoint
async def session_events(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    session = await runtime.service.get(request.path_params["session_id"])
    held = await runtime.reads.history(session.id, 0)
    complete = held is not None
    if held is None:
        # The oldest events were trimmed (PAYLIVE_HISTORY_CAP): what is still held.
        since = max(0, session.seq - runtime.settings.history_cap)
        held = await runtime.reads.history(session.id, since) or []
    return JSONResponse(
        {
            "events": [json.loads(raw) for raw in held],
            "complete": complete,
            "session": session.to_admin(),
        }
    )


@endpoint
async def resolve_review(request: Request) -> Response:
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    session_id = request.path_params["session_id"]
    by, note = validation.parse_review(await json_body(request))
    outcome = await runtime.service.run(session_id, ResolveReview(by, note))
    refusal = outcome.decision.refusal
    if refusal is not None:
        raise Refused(refusal.code, refusal.message, session=outcome.session.to_admin())
    return JSONResponse(outcome.session.to_admin())


def _sandbox(request: Request) -> SandboxGateway:
    """The sandbox, for an admin, outside production; anything else is 404."""
    runtime = runtime_of(request)
    authenticate(request, ADMIN)
    gateway = runtime.gateway
    if runtime.settings.production or not isinstance(gateway, SandboxGateway):
        raise Refused(ErrorCode.NOT_FOUND, "the sandbox is not available here")
    return gateway


@endpoint
async def sandbox_outage(request: Request) -> Response:
    sandbox = _sandbox(request)
    maximum = runtime_of(request).settings.sandbox_outage_max_s
    seconds = validation.parse_outage(await json_body(request), maximum)
    until = await sandbox.set_outage(seconds)
    return JSONResponse({"outage_until": until})


@endpoint
async def sandbox_ledger(request: Request) -> Response:
    sandbox = _sandbox(request)
    session_id = validation.parse_session_id(request.query_params.get("session"))
    session = await runtime_of(request).service.get(session_id)
    return JSONResponse({"entries": await sandbox.ledger(session.id, session.attempt)})


routes = [
    Route("/api/admin/effects", effects, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/events", session_events, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/review", resolve_review, methods=["POST"]),
    Route("/api/admin/sandbox/outage", sandbox_outage, methods=["POST"]),
    Route("/api/admin/sandbox/ledger", sandbox_ledger, methods=["GET"]),
]
