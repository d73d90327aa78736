"""The machine's rules for the outbox and for reviews: pure, like the machine.

An effect's try is I/O, so the machine cannot make it: the effect loop at the edge
calls the provider with the effect's idempotency key and hands the answer back as an
``EffectOutcome``. A confirmed effect is done, with a durable ``state`` event (cause
``effect_done``); a failed try is written on the effect alone (its tries, last error
and next try, with capped exponential backoff and the caller's jitter), and retries
go on until the provider confirms. What a confirmed capture or void found out about
the money (taken, or the hold gone) is the provider's word on the attempt, which the
machine applies after recording the answer (``machine.py``). An effect still failing
``effect_review_after_ms`` after it was decided flags the session ``needs_review``
(cause ``effect_overdue``). Staff resolve a review once nothing is pending.

With the archive on, an ended session that changes (a durable event, an audit entry)
owes the archive its new state (``owe_archive``): an outbox item too, so that the
engine keeps the session until the loop has put its state in the events log, which
the archive follows (service/deliveries.py); ``DeliveryOutcome.archived`` settles it.

Merchant events owed to the shop (``Delivery``) are recorded the same way: the loop
lists them in the events log and posts the first, and ``DeliveryOutcome`` brings the
answer back. Accepted, or failing past ``merchant_retry_for_ms``, it leaves the
outbox and the next one is due; failed, it waits with the same backoff. Neither is a
durable event: the shop's webhooks are not part of the session's story.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .decision import Decision, Rules, Tx, refuse
from .effects import DONE, Delivery, backoff_ms
from .evolve import evolve
from .protocol import ErrorCode
from .session import Session


@dataclass(frozen=True)
class EffectOutcome:
    """The provider's answer to the outbox effect ``kind`` of attempt ``attempt``."""

    kind: str
    attempt: int
    ok: bool
    error: str | None = None
    # In [0, 1): spreads the next try. The caller's randomness: the machine has none.
    jitter: float = 0.5
    # The attempt's money has moved: a capture took it, or a void found it taken. A
    # capture confirmed with False found the hold gone (released, expired).
    charged: bool = False
    # Which refund of the session (effects.py): 0 for every other effect.
    number: int = 0
    # Staff marked it done by hand (``MarkDone``): who, and why.
    by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ResolveReview:
    """Staff closed the case of a session flagged ``needs_review``. ``request`` names
    a keyed request (a digest of its Idempotency-Key and body): the session remembers
    it (``Session.asked``), as it does a keyed cancel."""

    by: str
    note: str
    request: str | None = None


@dataclass(frozen=True)
class DeliveryOutcome:
    """The loop's work on a session's merchant events: the ids it ``listed`` in the
    events log, and the answer to its post of the first one (``posted`` its id; None
    when nothing was posted)."""

    listed: tuple[str, ...] = ()
    posted: str | None = None
    ok: bool = False
    status: int | None = None
    error: str | None = None
    jitter: float = 0.5
    # The session's version whose state the loop put in the events log for the
    # archive; it settles what the archive is owed only if nothing changed since.
    archived: int | None = None


@dataclass(frozen=True)
class SendAgain:
    """Staff post a merchant event once more (it was given up, or the shop lost it):
    it goes behind whatever its session still owes the shop."""

    event: dict[str, Any]
    resent: int = 1
    # As ``ResolveReview``'s: one "send again" must never post the event twice.
    request: str | None = None


def record_outcome(s: Session, cmd: EffectOutcome, now: int, rules: Rules) -> Decision:
    effect = s.effect(cmd.kind, cmd.attempt, cmd.number)
    if effect is None:
        return refuse(
            s, ErrorCode.UNKNOWN_EFFECT, f"no {cmd.kind} effect for attempt {cmd.attempt} in {s.id}"
        )
    if not effect.pending:
        return Decision(s)  # answered already: a try repeated after its answer was saved
    tx = Tx(s, now)
    if cmd.ok and cmd.by is not None:
        # Done by hand: no call to the provider was confirmed, so no try is counted.
        done = evolve(effect, status=DONE, next_at=None, done_at=now, done_by=cmd.by, note=cmd.note)
        tx.set_effect(done)
        tx.state(s.status, "effect_done", effect=done.to_public(s.id), by_hand=True)
        return tx.done()
    tries = effect.tries + 1
    if cmd.ok:
        done = evolve(effect, status=DONE, tries=tries, next_at=None, done_at=now)
        tx.set_effect(done)
        tx.state(s.status, "effect_done", effect=done.to_public(s.id))
        return tx.done()
    review_at = effect.created_at + rules.effect_review_after_ms
    next_at = now + backoff_ms(
        tries, cmd.jitter, rules.effect_retry_base_ms, rules.effect_retry_cap_ms
    )
    if not s.needs_review and now < review_at < next_at:
        next_at = review_at  # try once more exactly when the review would be due
    failed = evolve(effect, tries=tries, last_error=cmd.error or "failed", next_at=next_at)
    tx.set_effect(failed)
    if now >= review_at and not s.needs_review:
        tx.update(needs_review=True)
        tx.state(s.status, "effect_overdue", effect=failed.to_public(s.id))
        return tx.done()
    return tx.done()  # the try is written on the effect alone: a quiet save


def resolve_review(s: Session, cmd: ResolveReview, now: int) -> Decision:
    pending = s.pending_effects
    if pending:
        kinds = ", ".join(f"{e.kind} of attempt {e.attempt}" for e in pending)
        return refuse(
            s,
            ErrorCode.EFFECTS_PENDING,
            f"the provider has not confirmed the {kinds} yet; resolve once it has,"
            " or once staff marked it done by hand",
        )
    if not s.needs_review:
        return refuse(s, ErrorCode.INVALID_STATE, "the session does not need review")
    tx = Tx(s, now)
    tx.update(needs_review=False, review={"by": cmd.by, "note": cmd.note, "at": now})
    tx.state(s.status, "review_resolved")
    return tx.done()


def tried(delivery: Delivery, status: int | None, error: str | None, now: int) -> Delivery:
    """``delivery`` with one more post written on it (its answer, or why none came)."""
    return evolve(
        delivery,
        attempts=delivery.attempts + 1,
        last_attempt_at=now,
        last_status=status,
        last_error=error,
    )


def record_delivery(s: Session, cmd: DeliveryOutcome, now: int, rules: Rules) -> Decision:
    items = [evolve(d, listed=True) if d.id in cmd.listed else d for d in s.deliveries]
    head = items[0] if items else None
    if cmd.posted is not None and head is not None and head.id == cmd.posted:
        if cmd.ok or now - head.since >= rules.merchant_retry_for_ms:
            items.pop(0)  # accepted, or given up: the next one is due
        else:
            failed = tried(head, cmd.status, cmd.error, now)
            delay = backoff_ms(
                failed.attempts,
                cmd.jitter,
                rules.merchant_retry_base_ms,
                rules.merchant_retry_cap_ms,
            )
            items[0] = evolve(failed, next_at=now + delay)
    if not rules.webhooks:
        items = [d for d in items if not d.listed]  # listed is all they are owed
    archived = s.archive_at is not None and cmd.archived == s.version
    if tuple(items) == s.deliveries and not archived:
        return Decision(s)  # answered already (another worker's lease), or nothing to do
    tx = Tx(s, now)
    tx.update(deliveries=tuple(items))
    if archived:
        tx.update(archive_at=None)
    return tx.done()


def owe_archive(before: Session, decision: Decision, rules: Rules, now: int) -> Decision:
    """``decision`` with its ended session owing the archive its state, when the
    decision changes what the archive keeps of it (a durable event, an audit entry):
    the merchant events alone would leave the archive's copy as of the last one."""
    after = decision.session
    if not rules.archive or not after.terminal or after.archive_at is not None:
        return decision
    if not decision.events and after.audit == before.audit:
        return decision
    return evolve(decision, session=evolve(after, archive_at=now))


def send_again(s: Session, cmd: SendAgain, now: int) -> Decision:
    event_id = cmd.event["id"]
    if any(d.id == event_id for d in s.deliveries):
        return refuse(s, ErrorCode.DELIVERY_PENDING, f"{event_id} is still being delivered")
    again = Delivery(cmd.event, since=now, next_at=now, listed=True, resent=cmd.resent)
    tx = Tx(s, now)
    tx.update(deliveries=s.deliveries + (again,))
    return tx.done()
