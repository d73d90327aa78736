"""What every HTTP route shares: the runtime, the ``endpoint`` wrapper that turns a
refusal into its error answer, body reading, who is asking, the Idempotency-Key
wrapper, the audit entry of a staff or shop action, and a session command's answer.

The routes themselves live by audience: ``customer`` (a client secret),
``merchant`` (the API key), ``staff`` (``/api/admin/*``), ``webhooks`` (providers),
``operations`` (probes, metrics, the API description) and ``pages`` (people).
No business rule lives in any of them: a route validates its input, checks who is
asking and hands a command or a read to the service. Refusals travel as
``Refused``; ``web.errors`` says which status each code gets.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..core.machine import Command
from ..core.protocol import TEMPORARY_CODES, ErrorCode
from ..core.session import Session
from ..engine import EngineUnavailable
from ..errors import Refused
from ..runtime import Runtime
from ..service.idempotency import Answer, Handler, request_digest
from ..service.payments import Outcome
from . import bodies, validation
from .auth import ADMIN, CUSTOMER, PRINCIPAL, VIEWER, Principal, identify
from .errors import ENGINE_DOWN, error_reply, error_response
from .responses import Json

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


# Bodies and queries ---------------------------------------------------------------


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


async def optional_json_body(request: Request) -> Any:
    """A body the route does not use, which may be empty (None) but if sent must be
    JSON: what it is names the request for an Idempotency-Key all the same."""
    raw = await read_body(request)
    if raw.strip():
        return validation.parse_json(raw, runtime_of(request).settings.max_json_depth)
    return None


def limit_of(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    return validation.parse_digits(raw, "limit", 1, maximum)


# Who is asking ----------------------------------------------------------------------


def authenticate(request: Request, *allowed: str) -> Principal:
    principal = request.scope.get(PRINCIPAL)  # the door's, from the same header
    if not isinstance(principal, Principal):
        credentials = runtime_of(request).settings.credentials
        principal = identify(request.headers.get("authorization"), credentials)
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


def session_principal(request: Request, *allowed: str) -> tuple[Principal, str]:
    """Who is asking, and the path's session, which a client secret must open."""
    principal = authenticate(request, *allowed)
    session_id = request.path_params["session_id"]
    if not principal.may_open(session_id):
        raise Refused(ErrorCode.FORBIDDEN, "this client secret opens another session")
    return principal, session_id


# Idempotency and session commands ----------------------------------------------------


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


def asked(request: Request, body: Any) -> str | None:
    """The digest naming this request when it has an ``Idempotency-Key`` (None without
    one), which the decision it makes keeps (``request_digest``): the same request sent
    again, its kept answer lost (the save's reply lost, the worker stopped or dead), is
    then answered with what it did instead of being decided again."""
    return request_digest(request.headers.get("idempotency-key"), body)


async def once(request: Request, name: str, body: Any, handler: Handler) -> Response:
    """Run ``handler`` at most once per ``Idempotency-Key`` (when the request has one)
    for the command ``name``, keeping what ``kept`` lets it keep."""
    status, payload = await runtime_of(request).idempotency.run_once(
        name, request.headers.get("idempotency-key"), body, kept(handler)
    )
    return Json(payload, status_code=status)


def answer(outcome: Outcome, status: int) -> Answer:
    """The session, or the machine's refusal with the session beside it."""
    refusal = outcome.decision.refusal
    if refusal is not None:
        raise Refused(refusal.code, refusal.message, session=outcome.session.to_public())
    return status, outcome.session.to_public()


def rate_limit(request: Request, principal: Principal, session_id: str) -> None:
    """A checkout's commands are rate limited per session; the shop's and staff's not."""
    if principal.kind == CUSTOMER and not runtime_of(request).limiter.take(session_id):
        raise Refused(ErrorCode.RATE_LIMITED, "too many commands for this session; slow down")


async def run_command(
    request: Request,
    principal: Principal,
    session_id: str,
    route: str,
    body: Any,
    command: Callable[[str | None], Command],
    status: int = 200,
) -> Response:
    """A command of the customer or the shop on the session (``POST
    /api/sessions/{id}/<route>``), run at most once per Idempotency-Key as an attempt
    is: it counts against the session's rate before its body is checked (``command``
    checks it, and raises the refusal) and its key looked up, so that a checkout
    sending a new key with each bad body stores nothing past its rate. ``command`` is
    given the request's digest (None without a key): the session remembers a keyed
    command that changed it, for when its kept answer is lost."""
    rate_limit(request, principal, session_id)

    async def handler() -> Answer:
        run = runtime_of(request).service.run
        return answer(await run(session_id, command(asked(request, body))), status)

    return await once(request, f"POST /api/sessions/{session_id}/{route}", body, handler)


# Staff and shop actions ----------------------------------------------------------


def audit_of(
    request: Request, principal: Principal, action: str, **details: object
) -> dict[str, object]:
    """An entry of the audit trail (docs/protocol.md section 8.2), but its time, which
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
    """Run a staff or shop action with its audit entry (saved with it, and on one node
    or in memory added to the trail of every session by the same save), then
    ``recorded``; a refusal is raised with the session as ``view`` shows it to the
    caller."""
    try:
        outcome = await runtime.service.run(session_id, command, audit)
    except EngineUnavailable:
        # The save may have been made and only its reply lost: then the action is done,
        # and the client's retry would not archive its entry (it is refused, or finds
        # the change made). Read the session again: if it holds the entry, say so.
        saved = await runtime.audit.saved_with(session_id, audit["id"])
        if saved is None:
            raise
        session, entry = saved
        await runtime.audit.recorded(entry)
        return session
    refusal = outcome.decision.refusal
    if refusal is not None:
        raise Refused(refusal.code, refusal.message, session=view(outcome.session))
    if outcome.decision.to_save:
        # Nothing saved (a refund, review or effect done by hand asked again by the
        # request that made it) added no entry: the session's last one is another
        # action's, or that request's own, recorded already.
        await runtime.audit.recorded(outcome.session.audit[-1])
    return outcome.session
