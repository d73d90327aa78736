"""Tickets (docs/protocol.md 4.2): ``POST /api/tickets`` trades the client secret or
the admin token, sent in the ``Authorization`` header, for a short-lived single-use
ticket that opens one stream, long-poll or socket from a URL, so that no long-lived
secret is ever written in a URL (and so in no proxy's access log)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.protocol import ErrorCode
from ..errors import Refused
from ..runtime import Runtime
from .auth import ADMIN, CUSTOMER, Principal, bearer, make_ticket, principal_for, read_ticket
from .http import authenticate, endpoint, read_body, runtime_of
from .validation import parse_json

BAD_TICKET = Refused(
    ErrorCode.UNAUTHORIZED, "the ticket is not valid, has expired or was used already"
)


@endpoint
async def create_ticket(request: Request) -> Response:
    runtime = runtime_of(request)
    principal = authenticate(request, CUSTOMER, ADMIN)
    raw = await read_body(request)
    if raw.strip():
        # An optional body must still be JSON (nothing in it is read yet).
        parse_json(raw, runtime.settings.max_json_depth)
    expires_at = runtime.clock() + runtime.settings.ticket_ttl_ms
    ticket = make_ticket(runtime.settings.secret, principal, expires_at)
    return JSONResponse(
        {"ticket": ticket, "expires_at": expires_at, "session": principal.session_id},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


# What else a request must pass before it may spend a ticket: raises Refused.
Admit = Callable[[Principal], None]


async def redeem(runtime: Runtime, ticket: str, admit: Admit | None = None) -> Principal:
    """The holder of ``ticket``, spending it; Refused(unauthorized) when it cannot be.
    ``admit`` runs on the holder first: a request it refuses leaves the ticket unspent
    (bad input changes nothing, and a "not now" may be sent again as it was)."""
    now = runtime.clock()
    found = read_ticket(runtime.settings.signing_secrets, ticket, now)
    if found is None:
        raise BAD_TICKET
    if admit is not None:
        admit(found.principal)
    if not await runtime.tickets.first_use(found.nonce, found.expires_at, now):
        raise BAD_TICKET
    return found.principal


async def principal_of(
    runtime: Runtime,
    query: Mapping[str, str],
    authorization: str | None,
    admit: Admit | None = None,
) -> Principal | None:
    """Who opens a stream, a long-poll or a socket: a ``ticket`` (spent here, once
    ``admit`` let it through), else the ``Authorization`` header, else a ``token`` in
    the URL (kept for compatibility, discouraged), each then put to ``admit`` too. None
    when nothing was sent or what was sent is not valid; Refused for a ticket that is
    not (so the caller can say which), or what ``admit`` refused."""
    ticket = query.get("ticket")
    if ticket:
        return await redeem(runtime, ticket, admit)
    token = bearer(authorization) or query.get("token")
    principal = principal_for(token, runtime.settings.credentials)
    if principal is not None and admit is not None:
        admit(principal)
    return principal


routes = [Route("/api/tickets", create_ticket, methods=["POST"])]
