"""The shop's side of the HTTP API (docs/protocol.md section 6): the events API for
reconciliation, webhook deliveries with "send again", and the search over live and
archived sessions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..archive import SessionQuery
from ..core.protocol import ErrorCode, Status
from ..errors import Refused
from . import validation
from .auth import MERCHANT, OPERATOR
from .routes import audit_of, authenticate, endpoint, runtime_of, staff

EVENTS_PAGE = 100
EVENTS_PAGE_MAX = 1_000
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def _number(params: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not _DIGITS.match(raw) or not lo <= int(raw) <= hi:
        raise validation.invalid(name, f"must be an integer from {lo} to {hi}")
    return int(raw)


def _text(params: Mapping[str, str], name: str) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not _ID.match(raw):
        raise validation.invalid(name, "must be 1 to 128 printable ASCII characters")
    return raw


@endpoint
async def events(request: Request) -> Response:
    """``GET /api/events?after=<cursor>&limit=N``: every merchant event, in order."""
    authenticate(request, MERCHANT)
    params = request.query_params
    after = _number(params, "after", 0, 2**62) or 0
    limit = _number(params, "limit", 1, EVENTS_PAGE_MAX) or EVENTS_PAGE
    page = await runtime_of(request).records.events(after, limit)
    return JSONResponse(page.to_public(limit))


@endpoint
async def deliveries(request: Request) -> Response:
    runtime = runtime_of(request)
    staff(request)
    which = request.query_params.get("status", "all")
    if which not in ("open", "all"):
        raise validation.invalid("status", "must be open or all")
    limit = _number(request.query_params, "limit", 1, runtime.settings.admin_list_max) or 100
    listed = await runtime.deliveries.deliveries(which == "open", limit)
    return JSONResponse({"deliveries": listed})


@endpoint
async def send_again(request: Request) -> Response:
    runtime = runtime_of(request)
    principal = staff(request, OPERATOR)
    event_id = request.path_params["event_id"]
    if not _ID.match(event_id):
        raise Refused(ErrorCode.NOT_FOUND, "no such event")
    body = await runtime.records.event_body(event_id)
    audit = audit_of(request, principal, "send_again", event=event_id)
    delivery, entry = await runtime.deliveries.send_again(event_id, body, audit)
    if entry is not None:
        await runtime.audit.added(entry)
    # 202: queued behind what its session still owes the shop; 200: its session was
    # forgotten, so it was posted once at once and this is the answer.
    status = 202 if delivery["status"] == "pending" else 200
    return JSONResponse({"delivery": delivery}, status_code=status)


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
        session_id=_text(params, "id"),
        order_id=_text(params, "order_id"),
        status=status,
        created_from=_number(params, "from", 0, 2**62),
        created_to=_number(params, "to", 0, 2**62),
        limit=_number(params, "limit", 1, runtime.settings.admin_list_max) or 50,
    )
    return JSONResponse({"sessions": await runtime.records.search(query)})


routes = [
    Route("/api/events", events, methods=["GET"]),
    Route("/api/admin/deliveries", deliveries, methods=["GET"]),
    Route("/api/admin/deliveries/{event_id}/retry", send_again, methods=["POST"]),
    Route("/api/admin/search", search, methods=["GET"]),
]
