"""Events for the shop's backend (docs/protocol.md section 6): which durable changes it hears of.

Pure: ``merchant_events`` reads the ``state`` events of one decision (each carries the
session after it, its previous status and its cause) and says which merchant events
they make; ``queue_events`` puts them in the session's outbox (``Delivery``), so they
are saved with the decision. The outbox loop then lists them in the events log and
delivers them as signed webhooks (service/deliveries.py).

``session.refunded`` says the money went back: it comes with the provider's
confirmation of the refund (cause ``effect_done``), not with the decision to give it
back, which makes ``session.needs_review`` at once.

An event's id is made from its session, the ``seq`` of the state event that made it
and its type, so that a decision decided again after a lost race makes the same ids,
and a receiver can de-duplicate by id alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .codec import Message, dumps_strict
from .decision import Decision, Rules
from .effects import REFUND, Delivery
from .evolve import evolve
from .protocol import TERMINAL_STATUSES
from .receipt import UNSEEN as UNSEEN_CAUSE
from .session import Session

SUCCEEDED = "session.succeeded"
FAILED = "session.failed"
CANCELLED = "session.cancelled"
EXPIRED = "session.expired"
REFUNDED = "session.refunded"
# A refund the shop or staff asked for (section 7) that leaves part of the payment.
PARTIALLY_REFUNDED = "session.partially_refunded"
NEEDS_REVIEW = "session.needs_review"
REVIEW_RESOLVED = "session.review_resolved"
# Nobody acknowledged the outcome in time (core/receipt.py): the shop may e-mail it.
OUTCOME_UNSEEN = "session.outcome_unseen"
# With PAYLIVE_MERCHANT_EVENTS=all: a durable state change that is no outcome.
UPDATED = "session.updated"

OUTCOME_TYPES = (
    SUCCEEDED,
    FAILED,
    CANCELLED,
    EXPIRED,
    REFUNDED,
    PARTIALLY_REFUNDED,
    NEEDS_REVIEW,
    REVIEW_RESOLVED,
    OUTCOME_UNSEEN,
)
EVENT_TYPES = (*OUTCOME_TYPES, UPDATED)
MODES = ("outcomes", "all")


@dataclass(frozen=True)
class MerchantEvent:
    id: str
    type: str
    created: int
    session: dict[str, Any]
    seq: int
    cause: str
    previous: str
    # On session.refunded: the confirmed effect (its attempt, kind and id).
    effect: dict[str, Any] | None = None
    # On a refund the shop or staff asked for: {amount, amount_refunded, reason}.
    refund: dict[str, Any] | None = None

    @property
    def session_id(self) -> str:
        return str(self.session["id"])

    @property
    def outcome(self) -> bool:
        return self.type in OUTCOME_TYPES

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "id": self.id,
            "type": self.type,
            "created": self.created,
            "session": self.session,
            "seq": self.seq,
            "cause": self.cause,
            "previous": self.previous,
        }
        if self.effect is not None:
            wire["effect"] = self.effect
        if self.refund is not None:
            wire["refund"] = self.refund
        return wire

    def body(self) -> bytes:
        """The exact bytes that are stored, signed and posted."""
        return dumps_strict(self.to_wire())


def event_id(session_id: str, seq: int, kind: str) -> str:
    return f"evt_{session_id.removeprefix('ps_')}_{seq}_{kind.removeprefix('session.')}"


def refund_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The refund a ``state`` event confirms, if it confirms one. Money goes back only
    by refund: a void releases a hold, and no money moved."""
    effect = data.get("effect")
    if data.get("cause") == "effect_done" and isinstance(effect, dict):
        if effect.get("kind") == REFUND:
            return effect
    return None


def refund_type(session: dict[str, Any], effect: dict[str, Any]) -> str:
    """``session.refunded``, unless a refund asked for leaves part of the payment. The
    automatic refund of a second or late charge is always ``session.refunded``, as it
    was before refunds could be asked for."""
    if effect.get("number") and session.get("amount_refunded", 0) < session["amount"]:
        return PARTIALLY_REFUNDED
    return REFUNDED


def refund_details(session: dict[str, Any], effect: dict[str, Any]) -> dict[str, Any] | None:
    """What a refund event says of a refund asked for (None for an automatic one)."""
    if not effect.get("number"):
        return None
    return {
        "id": effect["id"],
        "amount": effect.get("amount"),
        "amount_refunded": session.get("amount_refunded", 0),
        "reason": effect.get("reason"),
    }


def outcomes_of(
    previous: str,
    was_review: bool,
    session: dict[str, Any],
    refunded: dict[str, Any] | None,
    cause: str = "",
) -> list[str]:
    """The outcome types one state change makes, in the order they are delivered
    (``refunded``: the refund effect it confirms, if any)."""
    out: list[str] = []
    if cause == UNSEEN_CAUSE:
        out.append(OUTCOME_UNSEEN)
    status = session["status"]
    if status != previous and status in TERMINAL_STATUSES:
        out.append(f"session.{status}")
    if refunded is not None:
        out.append(refund_type(session, refunded))
    review = bool(session.get("needs_review"))
    if review and not was_review:
        out.append(NEEDS_REVIEW)
    elif was_review and not review:
        out.append(REVIEW_RESOLVED)
    return out


def merchant_events(
    was_review: bool, events: Sequence[Message], mode: str = "outcomes"
) -> tuple[MerchantEvent, ...]:
    """The merchant events made by one decision's durable ``events``.

    ``was_review`` is the session's ``needs_review`` before the decision. With ``mode``
    ``all``, a state change that makes no outcome makes a ``session.updated``.
    """
    out: list[MerchantEvent] = []
    for message in events:
        if message.type != "state" or message.session is None or message.seq is None:
            continue
        session = message.data["session"]
        previous, cause = str(message.data["previous"]), str(message.data["cause"])
        refund = refund_of(message.data)
        kinds = outcomes_of(previous, was_review, session, refund, cause)
        if not kinds and mode == "all":
            kinds = [UPDATED]
        for kind in kinds:
            refunds = kind in (REFUNDED, PARTIALLY_REFUNDED) and refund is not None
            out.append(
                MerchantEvent(
                    event_id(message.session, message.seq, kind),
                    kind,
                    message.ts,
                    session,
                    message.seq,
                    cause,
                    previous,
                    refund if refunds else None,
                    refund_details(session, refund) if refunds and refund else None,
                )
            )
        was_review = bool(session.get("needs_review"))
    return tuple(out)


def queue_events(before: Session, decision: Decision, rules: Rules) -> Decision:
    """``decision`` with the merchant events it makes queued in its session's outbox,
    each due at once, so that they are saved with it (or not at all)."""
    made = merchant_events(before.needs_review, decision.events, rules.merchant_events)
    if not made:
        return decision
    queued = tuple(Delivery(e.to_wire(), since=e.created, next_at=e.created) for e in made)
    session = evolve(decision.session, deliveries=decision.session.deliveries + queued)
    return evolve(decision, session=session)


def log_record(body: bytes, history: Sequence[bytes] | None = None) -> bytes:
    """What the events log holds for one event: its body and, for the archive, the
    session's durable history when it was logged. Built from bytes, never re-encoded."""
    if history is None:
        return b'{"event":' + body + b"}"
    return b'{"event":' + body + b',"history":[' + b",".join(history) + b"]}"


SNAPSHOT_PREFIX = b'{"snapshot":'


def snapshot_id(session_id: str, version: int) -> str:
    """A snapshot's id in the events log: one per saved version, so that a loop that
    lists the same version twice appends it once."""
    return f"snap_{session_id}_{version}"


def snapshot_record(
    public: dict[str, Any],
    staff: dict[str, Any],
    version: int,
    history: Sequence[bytes] | None,
) -> bytes:
    """What the events log holds for the archive alone: an ended session's state at
    ``version`` (``public`` as the API shows it, ``staff`` what staff see besides) and
    its durable history. No merchant event: the events API and webhooks skip it."""
    head = dumps_strict({"session": public, "staff": staff, "version": version})
    if not history:
        return SNAPSHOT_PREFIX + head + b"}"
    return SNAPSHOT_PREFIX + head + b',"history":[' + b",".join(history) + b"]}"


def is_snapshot(raw: bytes) -> bool:
    """Whether a log record is a snapshot (``snapshot_record``), not a merchant event."""
    return raw.startswith(SNAPSHOT_PREFIX)


def read_snapshot(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The snapshot (``session``, ``staff``, ``version``) and history a record holds."""
    record = json.loads(raw)
    return record["snapshot"], record.get("history") or []


def read_log_record(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The event (as posted) and the history a log record holds."""
    record = json.loads(raw)
    return record["event"], record.get("history") or []
