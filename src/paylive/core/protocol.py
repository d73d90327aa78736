"""The protocol's vocabulary (docs/protocol.md sections 2 and 4), in one place.

Everything that speaks the protocol, the server and the load generator alike, takes
its statuses, message types and subprotocol names from here.
"""

from __future__ import annotations

from enum import StrEnum


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
