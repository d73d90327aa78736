"""The payment session and its attempts as values (docs/protocol.md section 2).

Plain frozen dataclasses: the state machine returns new ones instead of mutating.
``to_public`` is what the wire shows; ``to_record``/``from_record`` is what an engine
stores, which also keeps the payment method for retries and a version for
compare-and-set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .effects import DONE, Delivery, GatewayEffect
from .evolve import evolve
from .protocol import ACTIVE_STATUSES as ACTIVE_STATUSES
from .protocol import TERMINAL_STATUSES as TERMINAL_STATUSES
from .protocol import AttemptStatus, Status

# Short names for the machine's rules, which read better with them.
CREATED, PROCESSING, INTERRUPTED = Status.CREATED, Status.PROCESSING, Status.INTERRUPTED
SUCCEEDED, FAILED, CANCELLED, EXPIRED = (
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELLED,
    Status.EXPIRED,
)
STATUSES = tuple(Status)

A_PROCESSING = AttemptStatus.PROCESSING
A_SUCCEEDED = AttemptStatus.SUCCEEDED
A_DECLINED = AttemptStatus.DECLINED
A_TIMEOUT = AttemptStatus.TIMEOUT
A_NETWORK_ERROR = AttemptStatus.NETWORK_ERROR
A_PROVIDER_ERROR = AttemptStatus.PROVIDER_ERROR
A_VOIDED = AttemptStatus.VOIDED
A_REFUNDED = AttemptStatus.REFUNDED

# The provider may have charged after all: such an attempt must be voided before the
# session moves on.
OUTCOME_UNKNOWN = frozenset({A_TIMEOUT, A_NETWORK_ERROR})
# Nothing more can happen to these, except a success, which is refunded or reconciled.
FINAL_ATTEMPT_STATUSES = frozenset(
    {A_SUCCEEDED, A_DECLINED, A_PROVIDER_ERROR, A_VOIDED, A_REFUNDED}
)

AUDIT_KEPT = 200
# How many keyed commands that changed a session it remembers (``Session.asked``): the
# newest, so that the record never grows past this however many are sent. A request
# sent again after its kept answer was lost comes back within seconds, long before 16
# other keyed changes could push it out; each entry is about 80 bytes of the record
# (up to ~140 for a staff action, which names the effect or event it acted on).
ASKED_KEPT = 16
INTERRUPTION_REASONS = ("timeout", "network_error", "declined", "provider_error")


def idempotency_key(session_id: str, number: int) -> str:
    """The gateway key of attempt ``number``: one charge at most per key."""
    return f"{session_id}:{number}"


def attempt_of(key: str) -> tuple[str, int]:
    """(session id, attempt number) of an idempotency key."""
    session_id, _, number = key.rpartition(":")
    return session_id, int(number)


@dataclass(frozen=True)
class Attempt:
    number: int
    status: str
    started_at: int
    ended_at: int | None = None
    decline_code: str | None = None
    provider_ref: str | None = None
    # What the customer's page must do for the provider to go on (3-D Secure, say);
    # shown only while the attempt is processing.
    action: dict[str, Any] | None = None
    # The keyed request that started it (a digest of its Idempotency-Key and body), so
    # that the same request retried after its kept answer was lost finds it rather
    # than being decided again. Kept in the record only: no part of any answer.
    request: str | None = None

    def to_public(self, session_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "number": self.number,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "idempotency_key": idempotency_key(session_id, self.number),
        }
        if self.decline_code is not None:
            out["decline_code"] = self.decline_code
        if self.provider_ref is not None:
            out["provider_ref"] = self.provider_ref
        if self.action is not None and self.status == A_PROCESSING:
            out["action"] = self.action
        return out


@dataclass(frozen=True)
class Session:
    id: str
    order_id: str
    amount: int
    currency: str
    created_at: int
    expires_at: int
    max_attempts: int
    status: str = CREATED
    attempt: int = 0
    deadline: int | None = None
    retry_at: int | None = None
    last_error: dict[str, Any] | None = None
    attempts: tuple[Attempt, ...] = ()
    updated_at: int = 0
    seq: int = 0
    needs_review: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    # The outbox: gateway effects decided for this session, pending or done, and the
    # merchant events still owed to the shop, in seq order.
    effects: tuple[GatewayEffect, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    # The last resolved review ({by, note, at}): for staff, not for the checkout page.
    review: dict[str, Any] | None = None
    # When a checkout acknowledged drawing the outcome (core/receipt.py), and, while
    # nobody has, when the shop is told it went unseen (not on the wire).
    outcome_seen_at: int | None = None
    unseen_due: int | None = None
    # Since when the archive is owed this ended session's last state (an outbox item,
    # core/outbox.py ``owe_archive``): not on the wire.
    archive_at: int | None = None
    # The audit trail (docs/protocol.md section 8.2): what staff and the shop did to
    # the session, {id, at, staff, role, action, session, address, details} each,
    # saved with the change it records. For staff, not for the checkout page.
    audit: tuple[dict[str, Any], ...] = ()
    # Not on the wire: the card a retry reuses when it names none, and the
    # version that compare-and-set checks (it changes with every save).
    payment_method: dict[str, Any] | None = None
    version: int = 0
    # The W3C traceparent of the last command saved: work done later for the session
    # (its timer, its outbox), on whatever worker, continues that trace.
    trace: str | None = None
    # The keyed commands (cancel, interrupt, seen, complete; staff's review, done by
    # hand and send again, with what they acted on) that changed the session,
    # the newest ``ASKED_KEPT``, oldest first: (command, digest of its Idempotency-Key
    # and body, the refusal code it was answered with or ""). The same request sent
    # again after its kept answer was lost finds what it did here instead of being
    # decided again (docs/protocol.md 3.1). In the stored record only.
    asked: tuple[tuple[str, str, str], ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def attempt_by_number(self, number: int) -> Attempt | None:
        if 1 <= number <= len(self.attempts):
            return self.attempts[number - 1]
        return None

    def with_attempt(self, attempt: Attempt) -> Session:
        attempts = list(self.attempts)
        attempts[attempt.number - 1] = attempt
        return evolve(self, attempts=tuple(attempts))

    def answered(self, command: str, request: str | None) -> tuple[str, str, str] | None:
        """What the keyed request ``request`` of ``command`` did here, if it changed
        the session and is still remembered."""
        if request is None:
            return None
        return next((a for a in self.asked if a[0] == command and a[1] == request), None)

    def with_asked(self, command: str, request: str, refused: str = "") -> Session:
        """The session remembering that ``request`` of ``command`` changed it (the
        newest ``ASKED_KEPT`` are kept)."""
        entry = (command, request, refused)
        return evolve(self, asked=(self.asked + (entry,))[-ASKED_KEPT:])

    def with_audit(self, entry: dict[str, Any]) -> Session:
        """The session with ``entry`` at the end of its audit trail (the newest
        ``AUDIT_KEPT`` are kept with it; the archive keeps them all)."""
        return evolve(self, audit=(self.audit + (entry,))[-AUDIT_KEPT:])

    @property
    def pending_effects(self) -> tuple[GatewayEffect, ...]:
        return tuple(e for e in self.effects if e.pending)

    def effect(self, kind: str, attempt: int, number: int = 0) -> GatewayEffect | None:
        for effect in self.effects:
            if effect.ident == (kind, attempt, number):
                return effect
        return None

    @property
    def refunds(self) -> tuple[GatewayEffect, ...]:
        """The refunds the shop or staff asked for, in the order they were decided."""
        return tuple(e for e in self.effects if e.requested)

    @property
    def amount_refunded(self) -> int:
        """What the provider confirmed was given back of the session's payment."""
        return sum(e.amount or 0 for e in self.refunds if e.status == DONE)

    @property
    def refundable(self) -> int:
        """What may still be refunded: the payment less every refund decided (pending
        ones included, so that two refunds in flight never add up to more)."""
        if self.status != SUCCEEDED:
            return 0
        return self.amount - sum(e.amount or 0 for e in self.refunds)

    def next_effect_at(self) -> int | None:
        """When the effect loop must try this session's outbox again, if ever: its
        pending effects, its first delivery (only the first is ever posted) and any
        merchant event not yet listed in the events log (listed at once, whatever
        the shop does)."""
        due = [e.next_at for e in self.effects if e.pending and e.next_at is not None]
        due += [d.next_at for i, d in enumerate(self.deliveries) if i == 0 or not d.listed]
        if self.archive_at is not None:
            due.append(self.archive_at)
        return min(due) if due else None

    @property
    def owes(self) -> bool:
        """The outbox still owes the provider a call, the shop an event or the archive
        the session's last state: the engines keep the session, however long ago it
        ended."""
        return (
            bool(self.deliveries)
            or any(e.pending for e in self.effects)
            or self.archive_at is not None
        )

    def next_due(self) -> int | None:
        """When the timer loop must look at this session again, if ever: an ended one
        once more, when its outcome is still unacknowledged (core/receipt.py)."""
        if self.status == PROCESSING:
            return self.deadline
        if self.status in ACTIVE_STATUSES:
            return self.expires_at
        return self.unseen_due

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "deadline": self.deadline,
            "retry_at": self.retry_at,
            "last_error": self.last_error,
            "attempts": [a.to_public(self.id) for a in self.attempts],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "seq": self.seq,
            "needs_review": self.needs_review,
            "metadata": self.metadata,
            "outcome_seen_at": self.outcome_seen_at,
            **self._refunds_public(),
        }

    def _refunds_public(self) -> dict[str, Any]:
        """Only on a session with a refund asked for: every other message stays as it was."""
        refunds = self.refunds
        if not refunds:
            return {}
        return {
            "amount_refunded": self.amount_refunded,
            "refunds": [
                {
                    "id": e.key(self.id),
                    "amount": e.amount,
                    "reason": e.reason,
                    "status": e.status,
                    "created_at": e.created_at,
                    "done_at": e.done_at,
                }
                for e in refunds
            ],
        }

    def to_admin(self) -> dict[str, Any]:
        """What staff see: the public session, its outbox and its last review."""
        out = self.to_public()
        out["effects"] = [e.to_public(self.id) for e in self.effects]
        out["review"] = self.review
        out["audit"] = list(self.audit)
        return out

    def to_record(self) -> dict[str, Any]:
        record = self.to_public()
        # Made again from the effects on the way out: not stored twice.
        record.pop("refunds", None)
        record.pop("amount_refunded", None)
        record["attempts"] = [_attempt_record(a) for a in self.attempts]
        record["effects"] = [e.to_record() for e in self.effects]
        if self.deliveries:  # most records never hold one: no empty list in each
            record["deliveries"] = [d.to_record() for d in self.deliveries]
        record["review"] = self.review
        if self.unseen_due is not None:
            record["unseen_due"] = self.unseen_due
        if self.archive_at is not None:
            record["archive_at"] = self.archive_at
        if self.audit:
            record["audit"] = list(self.audit)
        record["payment_method"] = self.payment_method
        record["version"] = self.version
        if self.trace is not None:
            record["trace"] = self.trace
        if self.asked:  # only a session changed by a keyed command's record grows
            record["asked"] = [list(a) for a in self.asked]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Session:
        return cls(
            id=record["id"],
            order_id=record["order_id"],
            amount=record["amount"],
            currency=record["currency"],
            created_at=record["created_at"],
            expires_at=record["expires_at"],
            max_attempts=record["max_attempts"],
            status=record["status"],
            attempt=record["attempt"],
            deadline=record["deadline"],
            retry_at=record["retry_at"],
            last_error=record["last_error"],
            attempts=tuple(Attempt(**a) for a in record["attempts"]),
            updated_at=record["updated_at"],
            seq=record["seq"],
            needs_review=record["needs_review"],
            metadata=record["metadata"],
            effects=tuple(GatewayEffect.from_record(e) for e in record.get("effects", ())),
            deliveries=tuple(Delivery.from_record(d) for d in record.get("deliveries", ())),
            review=record.get("review"),
            outcome_seen_at=record.get("outcome_seen_at"),
            unseen_due=record.get("unseen_due"),
            archive_at=record.get("archive_at"),
            audit=tuple(record.get("audit", ())),
            payment_method=record.get("payment_method"),
            version=record.get("version", 0),
            trace=record.get("trace"),
            # A record written before sessions remembered their keyed commands has none;
            # a worker of that version ignores this field and saves without it.
            asked=tuple((str(c), str(r), str(x)) for c, r, x in record.get("asked", ())),
        )


def _attempt_record(a: Attempt) -> dict[str, Any]:
    record: dict[str, Any] = {
        "number": a.number,
        "status": a.status,
        "started_at": a.started_at,
        "ended_at": a.ended_at,
        "decline_code": a.decline_code,
        "provider_ref": a.provider_ref,
        "action": a.action,
    }
    if a.request is not None:  # only a keyed attempt's record grows
        record["request"] = a.request
    return record
