"""The protocol's vocabulary (docs/protocol.md sections 2 and 4), in one place.

Everything that speaks the protocol, the server and the load generator alike, takes
its statuses, message types and subprotocol names from here.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Status(StrEnum):
    """A session's status."""

    CREATED = "created"
    PROCESSING = "processing"
    INTERRUPTED = "interrupted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class AttemptStatus(StrEnum):
    """An attempt's status."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    PROVIDER_ERROR = "provider_error"
    VOIDED = "voided"
    REFUNDED = "refunded"


ACTIVE_STATUSES = frozenset({Status.CREATED, Status.PROCESSING, Status.INTERRUPTED})
TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})

# Server messages that carry a seq and are replayed by ``since``.
DURABLE_TYPES = frozenset({"state", "retry_prompt"})

# WebSocket subprotocols, by codec name.
JSON = "paylive.v1.json"
MSGPACK = "paylive.v1.msgpack"
SUBPROTOCOLS = {"json": JSON, "msgpack": MSGPACK}


class CloseCode(IntEnum):
    """WebSocket close codes the server sends (docs/protocol.md section 4)."""

    GOING_AWAY = 1001  # the server is shutting down: reconnect
    POLICY = 1008  # a malformed message or a policy violation
    TOO_BIG = 1009  # a message over the size limit
    SERVICE_RESTART = 1012  # the worker is restarting (a drain): reconnect within the hint
    TRY_LATER = 1013  # too slow to keep up, too many sockets, or the store is down
    BAD_TOKEN = 4401
    ORIGIN = 4403
    UNKNOWN_SESSION = 4404  # no such session, or it is gone (a store that lost it)


class ErrorCode(StrEnum):
    """Every ``error.code`` paylive answers with (docs/protocol.md sections 3 and 3.1).

    A code says what went wrong, never how it travels: ``paylive.web.errors`` maps each
    one to its HTTP status and, where a refusal ends a socket, its close code."""

    # The request cannot be read.
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_SIGNATURE = "invalid_signature"
    UNKNOWN_COMMAND = "unknown_command"
    REQUEST_TIMEOUT = "request_timeout"
    # Who is asking.
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    # What is asked for.
    NOT_FOUND = "not_found"
    UNKNOWN_ATTEMPT = "unknown_attempt"
    UNKNOWN_EFFECT = "unknown_effect"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Not allowed in the session's state.
    INVALID_STATE = "invalid_state"
    RETRY_NOT_YET_ALLOWED = "retry_not_yet_allowed"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"
    ALREADY_PAID = "already_paid"
    EFFECTS_PENDING = "effects_pending"
    DELIVERY_PENDING = "delivery_pending"
    WEBHOOKS_OFF = "webhooks_off"
    NOT_PAID = "not_paid"
    REFUND_EXCEEDS_CAPTURED = "refund_exceeds_captured"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    # A field is wrong.
    INVALID_FIELD = "invalid_field"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_CARD = "invalid_card"
    INVALID_PAYMENT_METHOD = "invalid_payment_method"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    # Too much.
    BODY_TOO_LARGE = "body_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SOCKETS = "too_many_sockets"
    OVERLOADED = "overloaded"
    # Something paylive depends on is down.
    ENGINE_UNAVAILABLE = "engine_unavailable"
    GATEWAY_UNAVAILABLE = "gateway_unavailable"
    ARCHIVE_UNAVAILABLE = "archive_unavailable"
    # The worker stopped before it answered (docs/protocol.md section 4.3).
    SHUTTING_DOWN = "shutting_down"


# Refusals that say "not now" rather than "no": the same request may succeed later
# without changing. An ``Idempotency-Key`` never remembers them (docs/protocol.md
# section 3.1); every other answer with a key is final and replayed.
TEMPORARY_CODES = frozenset(
    {
        ErrorCode.RETRY_NOT_YET_ALLOWED,
        ErrorCode.CONFLICT,
        ErrorCode.RATE_LIMITED,
        ErrorCode.OVERLOADED,
        ErrorCode.REQUEST_TIMEOUT,
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        ErrorCode.TOO_MANY_SOCKETS,
        ErrorCode.EFFECTS_PENDING,
        ErrorCode.DELIVERY_PENDING,
        ErrorCode.ENGINE_UNAVAILABLE,
        ErrorCode.GATEWAY_UNAVAILABLE,
        ErrorCode.ARCHIVE_UNAVAILABLE,
        ErrorCode.SHUTTING_DOWN,
    }
)
