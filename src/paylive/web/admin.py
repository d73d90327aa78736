"""The admin API for staff closing cases (docs/protocol.md sections 3.3 and 8): the outbox of
gateway effects, a session's durable history, resolving reviews, marking an effect
done by hand, the audit trail, who is asking, and the sandbox's outage switch and
ledger (development only: 404 in production).

Every route here needs a staff token, and the role the action needs (section 8.1):
reading is for every role, acting on a session for operators and admins, the
sandbox's switch and the settings view for admins. As in ``routes``, no business
rule lives here: a review is a command to the machine, which refuses it while
effects pend.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..archive import AuditQuery
from ..core.machine import MarkDone
from ..core.outbox import ResolveReview
from ..core.protocol import ErrorCode
from ..core.session import Session
from ..errors import Refused
from ..gateway.sandbox import SandboxGateway
from ..service.effects import list_effects
from . import validation
from .auth import ADMIN, OPERATOR, ROLES, VIEWER, Principal
from .routes import audit_of, endpoint, json_body, limit_of, run_audited, runtime_of, staff

EFFECT_STATUSES = ("pending", "done", "all")


@endpoint
async def effects(request: Request) -> Response:
    runtime = runtime_of(request)
    staff(request)
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
    staff(request)
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
    principal = staff(request, OPERATOR)
    session_id = request.path_params["session_id"]
    by, note = validation.parse_review(await json_body(request))
    audit = audit_of(request, principal, "review_resolved", by=by, note=note)
    session = await run_audited(
        runtime, session_id, ResolveReview(by, note), audit, Session.to_admin
    )
    return JSONResponse(session.to_admin())


@endpoint
async def mark_done(request: Request) -> Response:
    """``POST /api/admin/effects/{effect_id}/done`` with ``{"note"}``: staff did the
    effect outside paylive; it stops retrying."""
    runtime = runtime_of(request)
    principal = staff(request, OPERATOR)
    session_id, attempt, kind, number = validation.parse_effect_id(request.path_params["effect_id"])
    note = validation.parse_note(await json_body(request))
    command = MarkDone(kind, attempt, number, principal.who, note)
    effect_id = request.path_params["effect_id"]
    audit = audit_of(request, principal, "effect_done_by_hand", effect=effect_id, note=note)
    session = await run_audited(runtime, session_id, command, audit, Session.to_admin)
    return JSONResponse(session.to_admin())


@endpoint
async def audit_trail(request: Request) -> Response:
    """``GET /api/admin/audit?session=&staff=&from=&to=&limit=``."""
    runtime = runtime_of(request)
    staff(request)
    params = request.query_params
    raw_session = params.get("session")
    raw_staff = params.get("staff")
    if raw_staff is not None and not validation.STAFF_NAME.match(raw_staff):
        raise validation.invalid("staff", "must be a staff name (or merchant)")
    query = AuditQuery(
        session_id=None if raw_session is None else validation.parse_session_id(raw_session),
        staff=raw_staff,
        at_from=_epoch(params.get("from"), "from"),
        at_to=_epoch(params.get("to"), "to"),
        limit=limit_of(request, 100, runtime.settings.admin_list_max),
    )
    return JSONResponse({"entries": await runtime.audit.search(query)})


def _epoch(raw: str | None, field: str) -> int | None:
    return None if raw is None else validation.parse_digits(raw, field, 0, 2**62)


@endpoint
async def me(request: Request) -> Response:
    """Who the staff token is and what its role may do: the dashboard hides the rest."""
    principal = staff(request)
    role = principal.role or ADMIN
    return JSONResponse(
        {
            "name": principal.who,
            "role": role,
            "may": {
                "read": True,
                "act": principal.at_least(OPERATOR),
                "sandbox": principal.at_least(ADMIN),
                "settings": principal.at_least(ADMIN),
            },
            "roles": list(ROLES),
        }
    )


@endpoint
async def settings_view(request: Request) -> Response:
    """What staff may see of the settings (admins only): never a secret."""
    staff(request, ADMIN)
    settings = runtime_of(request).settings
    return JSONResponse(
        {
            "env": settings.env,
            "gateway": settings.gateway,
            "engine": "redis" if settings.redis_url else "memory",
            "archive": settings.database_url is not None,
            "merchant_webhooks": settings.merchant_webhook_url is not None,
            "merchant_events": settings.merchant_events,
            "attempt_timeout_ms": settings.attempt_timeout_ms,
            "max_attempts": settings.max_attempts,
            "retry_delay_ms": settings.retry_delay_ms,
            "session_ttl_ms": settings.session_ttl_ms,
            "effect_review_after_ms": settings.effect_review_after_ms,
            "staff": [{"name": name, "role": role} for name, role, _ in settings.staff_tokens],
        }
    )


def _sandbox(request: Request, role: str) -> tuple[SandboxGateway, Principal]:
    """The sandbox, for staff holding ``role``, outside production; else 404."""
    runtime = runtime_of(request)
    principal = staff(request, role)
    gateway = runtime.gateway
    if runtime.settings.production or not isinstance(gateway, SandboxGateway):
        raise Refused(ErrorCode.NOT_FOUND, "the sandbox is not available here")
    return gateway, principal


@endpoint
async def sandbox_outage(request: Request) -> Response:
    sandbox, principal = _sandbox(request, ADMIN)
    runtime = runtime_of(request)
    maximum = runtime.settings.sandbox_outage_max_s
    seconds = validation.parse_outage(await json_body(request), maximum)
    until = await sandbox.set_outage(seconds)
    entry = audit_of(request, principal, "sandbox_outage", seconds=seconds)
    await runtime.audit.added({**entry, "at": runtime.clock(), "session": None})
    return JSONResponse({"outage_until": until})


@endpoint
async def sandbox_ledger(request: Request) -> Response:
    sandbox, _ = _sandbox(request, VIEWER)
    session_id = validation.parse_session_id(request.query_params.get("session"))
    session = await runtime_of(request).service.get(session_id)
    return JSONResponse({"entries": await sandbox.ledger(session.id, session.attempt)})


routes = [
    Route("/api/admin/effects", effects, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/events", session_events, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/review", resolve_review, methods=["POST"]),
    Route("/api/admin/effects/{effect_id}/done", mark_done, methods=["POST"]),
    Route("/api/admin/audit", audit_trail, methods=["GET"]),
    Route("/api/admin/me", me, methods=["GET"]),
    Route("/api/admin/settings", settings_view, methods=["GET"]),
    Route("/api/admin/sandbox/outage", sandbox_outage, methods=["POST"]),
    Route("/api/admin/sandbox/ledger", sandbox_ledger, methods=["GET"]),
]
