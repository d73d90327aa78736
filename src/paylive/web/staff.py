"""The staff API (``/api/admin/*``, docs/protocol.md sections 2.2, 3.3, 6
and 8): what the dashboard and staff closing cases read and do with a staff token.

Reading is for every role: the sessions, the summary and chart, the outbox of
gateway effects, a session's durable history, the audit trail, webhook deliveries,
the search over live and archived sessions, who is asking. Acting on a session
(resolving a review, marking an effect done by hand, sending a delivery again) is for
operators and admins, each action audited; the sandbox's outage switch and the
settings view for admins. The sandbox's switch and ledger exist outside production
only (404 in it). As everywhere at the edge, no business rule lives here: a review is
a command to the machine, which refuses it while effects pend.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..archive import AuditQuery, SessionQuery, audit_order
from ..core.machine import MarkDone
from ..core.outbox import ResolveReview
from ..core.protocol import ErrorCode, Status
from ..core.session import Session
from ..errors import Refused
from ..gateway.sandbox import SandboxGateway
from ..service.effects import list_effects
from ..service.idempotency import Answer
from ..settings import STAFF_NAME
from . import validation
from .auth import ADMIN, OPERATOR, ROLES, VIEWER, Principal
from .http import (
    asked,
    audit_of,
    endpoint,
    json_body,
    limit_of,
    once,
    run_audited,
    runtime_of,
    staff,
)

# Sessions and the dashboard's counts ---------------------------------------------


@endpoint
async def sessions(request: Request) -> Response:
    runtime = runtime_of(request)
    staff(request)
    which = request.query_params.get("status", "active")
    if which not in ("active", "all", "needs_review"):
        raise validation.invalid("status", "must be active, all or needs_review")
    limit = limit_of(request, 100, runtime.settings.admin_list_max)
    listed = await runtime.reads.listing(which, limit)
    return JSONResponse({"sessions": [s.to_public() for s in listed]})


@endpoint
async def summary(request: Request) -> Response:
    staff(request)
    return JSONResponse(await runtime_of(request).reads.summary())


@endpoint
async def chart(request: Request) -> Response:
    staff(request)
    return JSONResponse(await runtime_of(request).reads.chart())


# Cases: effects, history, reviews, the audit trail, who is asking, the sandbox -------


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
    session_id = request.path_params["session_id"]
    found = await runtime.reads.staff_history(session_id, runtime.settings.history_cap)
    return JSONResponse(found.to_public())


@endpoint
async def resolve_review(request: Request) -> Response:
    runtime = runtime_of(request)
    principal = staff(request, OPERATOR)
    session_id = request.path_params["session_id"]
    body = await json_body(request)

    async def handler() -> Answer:
        by, note = validation.parse_review(body)
        audit = audit_of(request, principal, "review_resolved", by=by, note=note)
        command = ResolveReview(by, note, asked(request, body))
        session = await run_audited(runtime, session_id, command, audit, Session.to_admin)
        return 200, session.to_admin()

    return await once(request, f"POST /api/admin/sessions/{session_id}/review", body, handler)


@endpoint
async def mark_done(request: Request) -> Response:
    """``POST /api/admin/effects/{effect_id}/done`` with ``{"note"}``: staff did the
    effect outside paylive; it stops retrying."""
    runtime = runtime_of(request)
    principal = staff(request, OPERATOR)
    session_id, attempt, kind, number = validation.parse_effect_id(request.path_params["effect_id"])
    effect_id = request.path_params["effect_id"]
    body = await json_body(request)

    async def handler() -> Answer:
        note = validation.parse_note(body)
        command = MarkDone(kind, attempt, number, principal.who, note, asked(request, body))
        audit = audit_of(request, principal, "effect_done_by_hand", effect=effect_id, note=note)
        session = await run_audited(runtime, session_id, command, audit, Session.to_admin)
        return 200, session.to_admin()

    return await once(request, f"POST /api/admin/effects/{effect_id}/done", body, handler)


# A time as the archive's bigint columns can hold it.
MAX_EPOCH_MS = 2**62


@endpoint
async def audit_trail(request: Request) -> Response:
    """``GET /api/admin/audit?session=&staff=&from=&to=&before=&after=&limit=``."""
    runtime = runtime_of(request)
    staff(request)
    params = request.query_params
    raw_session = params.get("session")
    raw_staff = params.get("staff")
    if raw_staff is not None and not STAFF_NAME.fullmatch(raw_staff):
        raise validation.invalid("staff", "must be a staff name (or merchant)")
    query = AuditQuery(
        session_id=None if raw_session is None else validation.parse_session_id(raw_session),
        staff=raw_staff,
        at_from=_epoch(params.get("from"), "from"),
        at_to=_epoch(params.get("to"), "to"),
        before=_place(params.get("before"), "before", "next"),
        after=_place(params.get("after"), "after", "prev"),
        limit=limit_of(request, 100, runtime.settings.admin_list_max),
    )
    entries = await runtime.audit.search(query)
    full = len(entries) == query.limit
    # Older entries may lie past a full page, and past any page read forwards (the
    # place it was read from at least); newer ones past any page read backwards, and
    # past a full page read forwards (its cut is the oldest).
    older = bool(entries) and (full or query.after is not None)
    newer = bool(entries) and (query.before is not None or (full and query.after is not None))
    return JSONResponse(
        {
            "entries": entries,
            "next": "{}:{}".format(*audit_order(entries[-1])) if older else None,
            "prev": "{}:{}".format(*audit_order(entries[0])) if newer else None,
        }
    )


def _place(raw: str | None, field: str, given_as: str) -> tuple[int, str] | None:
    """A place in the trail, ``<at>:<id>`` (an answer's ``next`` or ``prev``)."""
    if raw is None:
        return None
    at, _, entry_id = raw.partition(":")
    value = validation.ascii_int(at)
    if (
        value is None
        or value > MAX_EPOCH_MS
        or not entry_id.startswith("aud_")
        or not validation.PRINTABLE_ID.fullmatch(entry_id)
    ):
        raise validation.invalid(field, f"must be a page's {given_as} (<at>:aud_...)")
    return value, entry_id


def _epoch(raw: str | None, field: str) -> int | None:
    return None if raw is None else validation.parse_digits(raw, field, 0, MAX_EPOCH_MS)


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
    body = await json_body(request)

    async def handler() -> Answer:
        seconds = validation.parse_outage(body, maximum)
        until = await sandbox.set_outage(seconds)
        entry = audit_of(request, principal, "sandbox_outage", seconds=seconds)
        await runtime.audit.added({**entry, "at": runtime.clock(), "session": None})
        return 200, {"outage_until": until}

    return await once(request, "POST /api/admin/sandbox/outage", body, handler)


@endpoint
async def sandbox_ledger(request: Request) -> Response:
    sandbox, _ = _sandbox(request, VIEWER)
    session_id = validation.parse_session_id(request.query_params.get("session"))
    session = await runtime_of(request).reads.live(session_id)
    return JSONResponse({"entries": await sandbox.ledger(session.id, session.attempt)})


# The shop's deliveries and the search (section 6) -----------------------------------


@endpoint
async def deliveries(request: Request) -> Response:
    runtime = runtime_of(request)
    staff(request)
    which = request.query_params.get("status", "all")
    if which not in ("open", "all"):
        raise validation.invalid("status", "must be open or all")
    limit = (
        validation.query_int(request.query_params, "limit", 1, runtime.settings.admin_list_max)
        or 100
    )
    listed = await runtime.deliveries.deliveries(which == "open", limit)
    return JSONResponse({"deliveries": listed})


@endpoint
async def send_again(request: Request) -> Response:
    runtime = runtime_of(request)
    principal = staff(request, OPERATOR)
    event_id = request.path_params["event_id"]
    if not validation.PRINTABLE_ID.fullmatch(event_id):
        raise Refused(ErrorCode.NOT_FOUND, "no such event")

    async def handler() -> Answer:
        body = await runtime.reads.event_body(event_id)
        audit = audit_of(request, principal, "send_again", event=event_id)
        delivery, entry, saved = await runtime.deliveries.send_again(
            event_id, body, audit, asked(request, None)
        )
        if entry is not None:
            await (runtime.audit.recorded if saved else runtime.audit.added)(entry)
        # 202: queued behind what its session still owes the shop; 200: its session was
        # forgotten, so it was posted once at once and this is the answer.
        return (202 if delivery["status"] == "pending" else 200), {"delivery": delivery}

    # The route reads no body (it never did): the event names the whole request.
    return await once(request, f"POST /api/admin/deliveries/{event_id}/retry", None, handler)


@endpoint
async def search(request: Request) -> Response:
    """``GET /api/admin/search?id=&order_id=&status=&from=&to=&limit=``."""
    runtime = runtime_of(request)
    staff(request)
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in tuple(Status):
        raise validation.invalid("status", "must be one of " + ", ".join(Status))
    query = SessionQuery(
        session_id=validation.query_id(params, "id"),
        order_id=validation.query_id(params, "order_id"),
        status=status,
        created_from=validation.query_int(params, "from", 0, 2**62),
        created_to=validation.query_int(params, "to", 0, 2**62),
        limit=validation.query_int(params, "limit", 1, runtime.settings.admin_list_max) or 50,
    )
    return JSONResponse({"sessions": await runtime.reads.search(query)})


routes = [
    Route("/api/admin/sessions", sessions, methods=["GET"]),
    Route("/api/admin/summary", summary, methods=["GET"]),
    Route("/api/admin/chart", chart, methods=["GET"]),
    Route("/api/admin/search", search, methods=["GET"]),
    Route("/api/admin/effects", effects, methods=["GET"]),
    Route("/api/admin/effects/{effect_id}/done", mark_done, methods=["POST"]),
    Route("/api/admin/sessions/{session_id}/events", session_events, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/review", resolve_review, methods=["POST"]),
    Route("/api/admin/audit", audit_trail, methods=["GET"]),
    Route("/api/admin/deliveries", deliveries, methods=["GET"]),
    Route("/api/admin/deliveries/{event_id}/retry", send_again, methods=["POST"]),
    Route("/api/admin/me", me, methods=["GET"]),
    Route("/api/admin/settings", settings_view, methods=["GET"]),
    Route("/api/admin/sandbox/outage", sandbox_outage, methods=["POST"]),
    Route("/api/admin/sandbox/ledger", sandbox_ledger, methods=["GET"]),
]
