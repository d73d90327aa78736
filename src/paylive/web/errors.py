"""Error codes at the edge: the one place that says which HTTP status and which
WebSocket close code each ``ErrorCode`` gets, and that builds the error body
``{"error": {"code", "message"}}`` (docs/protocol.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.protocol import CloseCode as C
from ..core.protocol import ErrorCode as E
from ..errors import Refused
from .responses import Json

# The answer to any request or command while the engine cannot be reached.
ENGINE_DOWN = Refused(E.ENGINE_UNAVAILABLE, "the session store is unavailable; retry shortly")

HTTP_STATUS: Mapping[E, int] = {
    E.INVALID_JSON: 400,
    E.INVALID_REQUEST: 400,
    E.INVALID_SIGNATURE: 400,
    E.UNKNOWN_COMMAND: 400,
    E.UNAUTHORIZED: 401,
    E.FORBIDDEN: 403,
    E.ROLE_NOT_ALLOWED: 403,
    E.ORIGIN_NOT_ALLOWED: 403,
    E.NOT_FOUND: 404,
    E.UNKNOWN_ATTEMPT: 404,
    E.UNKNOWN_EFFECT: 404,
    E.METHOD_NOT_ALLOWED: 405,
    E.REQUEST_TIMEOUT: 408,
    E.INVALID_STATE: 409,
    E.RETRY_NOT_YET_ALLOWED: 409,
    E.MAX_ATTEMPTS_REACHED: 409,
    E.ALREADY_PAID: 409,
    E.EFFECTS_PENDING: 409,
    E.DELIVERY_PENDING: 409,
    E.WEBHOOKS_OFF: 409,
    E.NOT_PAID: 409,
    E.REFUND_EXCEEDS_CAPTURED: 409,
    E.CONFLICT: 409,
    E.IDEMPOTENCY_KEY_IN_USE: 409,
    E.BODY_TOO_LARGE: 413,
    E.HEADERS_TOO_LARGE: 431,
    E.INVALID_FIELD: 422,
    E.INVALID_CURRENCY: 422,
    E.INVALID_CARD: 422,
    E.INVALID_PAYMENT_METHOD: 422,
    E.IDEMPOTENCY_KEY_REUSED: 422,
    E.RATE_LIMITED: 429,
    E.TOO_MANY_SOCKETS: 429,
    E.OVERLOADED: 503,
    E.ENGINE_UNAVAILABLE: 503,
    E.GATEWAY_UNAVAILABLE: 503,
    E.ARCHIVE_UNAVAILABLE: 503,
    E.SHUTTING_DOWN: 503,
}

# A refusal that ends a socket (at its handshake, or a frame that cannot be read)
# closes it with this code; any other code closes with 1008. Refused commands do not
# close: they get an ``error`` message.
CLOSE_CODE: Mapping[E, C] = {
    E.UNAUTHORIZED: C.BAD_TOKEN,
    E.FORBIDDEN: C.BAD_TOKEN,
    E.ORIGIN_NOT_ALLOWED: C.ORIGIN,
    E.NOT_FOUND: C.UNKNOWN_SESSION,
    E.BODY_TOO_LARGE: C.TOO_BIG,
    E.TOO_MANY_SOCKETS: C.TRY_LATER,
    E.OVERLOADED: C.TRY_LATER,
    E.ENGINE_UNAVAILABLE: C.TRY_LATER,
}


def http_status(code: str) -> int:
    """The HTTP status of ``code``; 400 for a code this table does not know."""
    try:
        return HTTP_STATUS[E(code)]
    except ValueError:
        return 400


def close_code(code: str) -> C:
    """The close code of a refusal that ends a socket."""
    try:
        return CLOSE_CODE.get(E(code), C.POLICY)
    except ValueError:
        return C.POLICY


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The body of every error answer; ``extra`` goes beside ``error``."""
    return {"error": {"code": str(code), "message": message}, **extra}


def error_reply(exc: Refused) -> tuple[int, dict[str, Any]]:
    return http_status(exc.code), error_body(exc.code, exc.message, **exc.extra)


def error_response(exc: Refused, headers: Mapping[str, str] | None = None) -> Json:
    status, body = error_reply(exc)
    if exc.code == E.REQUEST_TIMEOUT:
        # The rest of the body may still come: the connection cannot carry another request.
        headers = {**(headers or {}), "Connection": "close"}
    return Json(body, status_code=status, headers=headers)
