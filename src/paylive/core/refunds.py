"""The machine's rules for refunds the shop or staff ask for, and for effects staff
mark done by hand (docs/protocol.md section 7). Pure, like the machine.

A refund is decided here and made by the outbox (``outbox.py``, ``effects.py``): the
decision writes a refund effect with its amount into the session, saved in the same
atomic step, so a worker that dies after answering the request loses nothing, and the
effect loop gives the money back under the refund's own idempotency key.

The sum of the refunds decided never exceeds the payment: the machine checks it
against the session it decides on, and the engine's compare-and-set save makes a
decision on a stale session lose and be decided again, so two refunds racing on
different workers cannot both take the same remaining amount.
"""

from __future__ import annotations

from dataclasses import dataclass

from .decision import Decision, Tx, refuse
from .effects import CAPTURE, REFUND, GatewayEffect
from .outbox import EffectOutcome
from .protocol import ErrorCode
from .session import A_SUCCEEDED, SUCCEEDED, Session


@dataclass(frozen=True)
class Refund:
    """Give back ``amount`` of the session's payment (None: all that remains).
    ``by`` is who asked: ``merchant`` or a staff name. ``request`` names the request
    (a digest of its Idempotency-Key and body), when it has a key."""

    amount: int | None
    reason: str | None
    by: str
    request: str | None = None


@dataclass(frozen=True)
class MarkDone:
    """Staff say a pending effect was done outside paylive (the provider kept refusing
    it, so it was dealt with in the provider's own dashboard): it stops retrying.
    ``request``: as ``ResolveReview``'s."""

    kind: str
    attempt: int
    number: int
    by: str
    note: str
    request: str | None = None


def paid_attempt(s: Session) -> int | None:
    """The attempt whose money the session kept."""
    for attempt in s.attempts:
        if attempt.status == A_SUCCEEDED:
            return attempt.number
    return None


def asked_by(s: Session, request: str | None) -> GatewayEffect | None:
    """The refund the request ``request`` decided, if it decided one."""
    if request is None:
        return None
    return next((e for e in s.refunds if e.request == request), None)


def refund(s: Session, cmd: Refund, now: int) -> Decision:
    if asked_by(s, cmd.request) is not None:
        # The same request again, its kept answer lost (the worker died before keeping
        # it, or the engine's reply to the save was lost and the key let go): the
        # refund it decided is the answer. Deciding again would give the money back
        # twice; checked first, because what remains may no longer allow it.
        return Decision(s)
    number = paid_attempt(s)
    if s.status != SUCCEEDED or number is None:
        return refuse(
            s, ErrorCode.NOT_PAID, f"the session is {s.status}: no payment was taken to refund"
        )
    remaining = s.refundable
    if remaining <= 0:
        return refuse(
            s, ErrorCode.REFUND_EXCEEDS_CAPTURED, "the payment has been refunded in full already"
        )
    amount = remaining if cmd.amount is None else cmd.amount
    if amount < 1:
        return refuse(s, ErrorCode.INVALID_FIELD, "amount must be at least 1")
    if amount > remaining:
        return refuse(
            s,
            ErrorCode.REFUND_EXCEEDS_CAPTURED,
            f"at most {remaining} of {s.amount} may still be refunded",
        )
    effect = GatewayEffect(
        REFUND,
        number,
        created_at=now,
        next_at=now,
        number=len(s.refunds) + 1,
        amount=amount,
        reason=cmd.reason,
        requested_by=cmd.by,
        request=cmd.request,
    )
    tx = Tx(s, now)
    tx.update(effects=s.effects + (effect,))
    tx.state(s.status, "refund_requested", effect=effect.to_public(s.id))
    return tx.done()


def mark_done(s: Session, cmd: MarkDone) -> Decision | EffectOutcome:
    """The refusal, or the outcome the machine records as the provider's confirmation
    (a capture done by hand took the money: the attempt's success, as a confirmed
    capture is; anything else only stops retrying)."""
    effect = s.effect(cmd.kind, cmd.attempt, cmd.number)
    if effect is None:
        return refuse(s, ErrorCode.UNKNOWN_EFFECT, f"{s.id} has no such effect")
    if not effect.pending:
        return refuse(s, ErrorCode.INVALID_STATE, f"the effect is {effect.status} already")
    return EffectOutcome(
        cmd.kind,
        cmd.attempt,
        True,
        charged=cmd.kind == CAPTURE,
        number=cmd.number,
        by=cmd.by,
        note=cmd.note,
    )
