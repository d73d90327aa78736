"""The outbox, as values: what must still reach the provider (gateway effects) and
the shop (merchant event deliveries).

A decision that gives money back (a refund), releases an authorization the session
no longer wants (a void) or takes the money an authorization holds (a capture) writes
a ``GatewayEffect`` into the session itself. The engine stores a session in one
atomic step, so the effect is saved with the decision that needs it on every engine,
Cluster included, and survives whatever the worker does next. A loop at the edge carries effects out; the machine records each answer.

Each effect has an idempotency key of its own, ``"{session}:{attempt}:{kind}"``, sent
with every call, so a call repeated after a crash or a lost answer is done once. A
refund the shop or staff asked for (docs/protocol.md section 7) is the ``number``-th
of its session (1, 2, ...; the automatic refund of a second or late charge is 0) and
carries its ``amount``: its key is ``"{session}:{attempt}:refund.{number}"``, so several
partial refunds of one payment are each made once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VOID = "void"
REFUND = "refund"
CAPTURE = "capture"
KINDS = (VOID, REFUND, CAPTURE)

PENDING = "pending"
DONE = "done"
# A capture that must never be made: the provider confirmed its attempt took no money
# (voided, its hold released) before the capture was.
CANCELLED = "cancelled"


def effect_key(session_id: str, attempt: int, kind: str, number: int = 0) -> str:
    """The effect's idempotency key (also its id): one per attempt, kind and number."""
    if number:
        return f"{session_id}:{attempt}:{kind}.{number}"
    return f"{session_id}:{attempt}:{kind}"


def backoff_ms(tries: int, jitter: float, base_ms: int, cap_ms: int) -> int:
    """Delay before try ``tries + 1``: capped exponential, half fixed and half random
    (``jitter`` in [0, 1), the caller's randomness), so that effects failing together
    in an outage do not all come back at the same moment."""
    delay = min(cap_ms, base_ms * 2 ** min(max(tries - 1, 0), 40))
    half = delay // 2
    return half + int(min(max(jitter, 0.0), 1.0) * (delay - half))


@dataclass(frozen=True)
class GatewayEffect:
    """One effect for attempt ``attempt``; ``next_at`` is when the next try is due."""

    kind: str
    attempt: int
    created_at: int
    next_at: int | None
    status: str = PENDING
    tries: int = 0
    last_error: str | None = None
    done_at: int | None = None
    # A refund asked for (section 7): its number in the session, amount, reason and
    # who asked ("merchant" or a staff name). Absent on the automatic effects.
    number: int = 0
    amount: int | None = None
    reason: str | None = None
    requested_by: str | None = None
    # Marked done by hand by staff (the provider was dealt with outside paylive).
    done_by: str | None = None
    note: str | None = None
    # The request that asked for it (a digest of its Idempotency-Key and body), so
    # that the same request retried finds it after its kept answer was lost. Kept in
    # the record only: it is no part of any answer.
    request: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    @property
    def ident(self) -> tuple[str, int, int]:
        return (self.kind, self.attempt, self.number)

    @property
    def requested(self) -> bool:
        """A refund the shop or staff asked for, not an automatic one."""
        return self.kind == REFUND and self.number > 0

    def key(self, session_id: str) -> str:
        return effect_key(session_id, self.attempt, self.kind, self.number)

    def to_public(self, session_id: str) -> dict[str, Any]:
        return {
            "id": self.key(session_id),
            "session": session_id,
            "attempt": self.attempt,
            "kind": self.kind,
            "status": self.status,
            "tries": self.tries,
            "next_at": self.next_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "done_at": self.done_at,
            **self._extra(_OPTIONAL),
        }

    def _extra(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The optional fields that are set: old records and answers stay as they were."""
        extra: dict[str, Any] = {}
        for name in names:
            value = getattr(self, name)
            if value:
                extra[name] = value
        return extra

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "next_at": self.next_at,
            "status": self.status,
            "tries": self.tries,
            "last_error": self.last_error,
            "done_at": self.done_at,
            **self._extra(_RECORDED),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GatewayEffect:
        return cls(**record)


_OPTIONAL = ("number", "amount", "reason", "requested_by", "done_by", "note")
_RECORDED = (*_OPTIONAL, "request")

# What a customer's channels show of an effect (docs/protocol.md 4.1): what concerns
# the payer, the same as the session's ``refunds`` show them. Named, not the staff
# fields left out: a field added to the effect later stays staff's until it is put
# here. Who asked or marked it done, their note, the provider's error text and the
# retry counters are staff's alone.
CUSTOMER_FIELDS = (
    "id",
    "session",
    "attempt",
    "kind",
    "status",
    "created_at",
    "done_at",
    "number",
    "amount",
    "reason",
)


def customer_effect(effect: dict[str, Any]) -> dict[str, Any]:
    """The customer's view of an effect as ``GatewayEffect.to_public`` made it (also
    one read back from the history, saved before this view existed)."""
    return {name: effect[name] for name in CUSTOMER_FIELDS if name in effect}


@dataclass(frozen=True)
class Delivery:
    """A merchant event the shop is owed (docs/protocol.md section 6), in the same
    outbox as the gateway effects: saved with the decision that made it, claimed by the
    same loop, retried with the same backoff. It is first listed in the events log,
    then, with webhooks on, posted until the shop accepts it or the retry window ends.
    A session's deliveries are kept in ``seq`` order and only the first is ever posted,
    so the shop never gets an event before the one before it was accepted or given up.
    """

    event: dict[str, Any]  # the event as posted: MerchantEvent.to_wire()
    since: int  # when this run of tries began: the event, or its last "send again"
    next_at: int
    listed: bool = False
    attempts: int = 0
    last_attempt_at: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    resent: int = 0

    @property
    def id(self) -> str:
        return str(self.event["id"])

    def to_public(self, status: str, delivered_at: int | None = None) -> dict[str, Any]:
        """The admin API's view of it (``status`` pending, delivered or failed)."""
        return {
            "id": self.id,
            "session": self.event["session"]["id"],
            "type": self.event["type"],
            "seq": self.event["seq"],
            "status": status,
            "created": self.event["created"],
            "since": self.since,
            "attempts": self.attempts,
            "next_at": self.next_at if status == PENDING else None,
            "last_attempt_at": self.last_attempt_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": delivered_at,
            "resent": self.resent,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "since": self.since,
            "next_at": self.next_at,
            "listed": self.listed,
            "attempts": self.attempts,
            "last_attempt_at": self.last_attempt_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "resent": self.resent,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        return cls(**record)
