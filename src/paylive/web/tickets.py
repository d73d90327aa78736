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
from .auth import (
    ADMIN,
    CUSTOMER,
    Principal,
    Ticket,
    bearer,
    make_ticket,
    principal_for,
    read_ticket,
    still_listed,
)
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


class Opening:
    """Who opens a stream, a long-poll or a socket, let through by ``admit``, and the
    ticket that still has to be spent for it (none for a header or a token). The
    opener spends it (``spend``) once nothing else can refuse the open: a refusal
    before leaves the ticket good (bad input changes nothing, and a "not now" may be
    sent again as it was)."""

    def __init__(self, runtime: Runtime, principal: Principal, ticket: Ticket | None) -> None:
        self.principal = principal
        self._runtime = runtime
        self._ticket = ticket

    async def spend(self) -> Principal:
        """The holder, its ticket spent; Refused(unauthorized) when it was used already
        (by another open, on any worker)."""
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            now = self._runtime.clock()
            if not await self._runtime.tickets.first_use(ticket.nonce, ticket.expires_at, now):
                raise BAD_TICKET
        return self.principal


def opening_of(
    runtime: Runtime,
    query: Mapping[str, str],
    authorization: str | None,
    admit: Admit | None = None,
) -> Opening | None:
    """Who opens a stream, a long-poll or a socket: a ``ticket`` (not spent yet), else
    the ``Authorization`` header, else a ``token`` in the URL (kept for compatibility,
    discouraged), each put to ``admit``. None when nothing was sent or what was sent is
    not valid; Refused for a ticket that is not (so the caller can say which), or what
    ``admit`` refused."""
    ticket = query.get("ticket")
    if ticket:
        found = read_ticket(runtime.settings.signing_secrets, ticket, runtime.clock())
        if found is None or not still_listed(found.principal, runtime.settings.credentials):
            raise BAD_TICKET
        if admit is not None:
            admit(found.principal)
        return Opening(runtime, found.principal, found)
    token = bearer(authorization) or query.get("token")
    principal = principal_for(token, runtime.settings.credentials)
    if principal is None:
        return None
    if admit is not None:
        admit(principal)
    return Opening(runtime, principal, None)


routes = [Route("/api/tickets", create_ticket, methods=["POST"])]
