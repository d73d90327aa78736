"""How an attempt ends without success, and how a session expires (docs/protocol.md
section 2): interrupted with a retry prompt while attempts and time remain, failed or
expired otherwise, after voiding whatever may still take money. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .decision import Decision, NeedsVoid, Rules, Tx
from .effects import VOID
from .session import EXPIRED, FAILED, INTERRUPTED, OUTCOME_UNKNOWN, Session
from .voids import missing, settle_voids, unknown

# Declines no retry can fix: the session fails at once.
NON_RETRYABLE_DECLINES = frozenset(
    {"stolen_card", "lost_card", "pickup_card", "fraudulent", "restricted_card"}
)

REASON_MESSAGES = {
    "timeout": "no result from the provider in {seconds:g} s",
    "network_error": "the connection to the provider was lost; the outcome is unknown",
    "declined": "the card was declined",
    "provider_error": "the provider reported an error",
}


def end_attempt(
    s: Session,
    number: int,
    attempt_status: str,
    reason: str,
    decline_code: str | None,
    retryable: bool,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool],
) -> Decision | NeedsVoid:
    """Attempt ``number`` (the one processing) ended without success."""
    if not retryable or number >= s.max_attempts:
        final = FAILED
    elif now >= s.expires_at:
        final = EXPIRED
    else:
        final = INTERRUPTED
    outcome_unknown = attempt_status in OUTCOME_UNKNOWN
    needed = None
    if final != INTERRUPTED and outcome_unknown:
        needed = missing((number,), voids)
        # As at the expiry (``expire``): every tick from the deadline on asks for the
        # void, and past the review delay the session ends all the same, flagged, with
        # the void in the outbox. Waiting on kept it processing and nobody told, until
        # its record's expiry forgot it with the money in doubt.
        overdue = s.deadline is not None and now >= s.deadline + rules.effect_review_after_ms
        if needed and not overdue:
            return needed
    message = REASON_MESSAGES[reason].format(seconds=rules.attempt_timeout_ms / 1000)
    last_error: dict[str, Any] = {"reason": reason, "attempt": number, "message": message}
    if decline_code is not None:
        last_error["decline_code"] = decline_code
    tx = Tx(s, now)
    previous = s.status
    tx.set_attempt(number, status=attempt_status, ended_at=now, decline_code=decline_code)
    tx.update(last_error=last_error, deadline=None)
    if final == INTERRUPTED:
        tx.update(status=INTERRUPTED, retry_at=now + rules.retry_delay_ms)
        tx.state(previous, reason)
        tx.retry_prompt(number, reason, outcome_unknown)
        return tx.done()
    if needed:
        # A hold's capture still pending is never made: the session is over, so its
        # hold is released (docs/protocol.md 2.3); money taken after all is found by
        # the void and given back as any late success of a session over.
        tx.cancel_capture(number)
        tx.add_effect(VOID, number)
        tx.update(needs_review=True)
    elif outcome_unknown and settle_voids(tx, (number,), voids, emit=False):
        return tx.done()
    tx.update(status=final, retry_at=None)
    tx.state(previous, "expired" if final == EXPIRED else "failed")
    return tx.done()


def expire(
    s: Session, now: int, voids: Mapping[int, bool], rules: Rules | None = None
) -> Decision | NeedsVoid:
    pending = unknown(s, voids)
    needed = missing(pending, voids)
    overdue = rules is not None and now >= s.expires_at + rules.effect_review_after_ms
    if needed and not overdue:
        return needed
    tx = Tx(s, now)
    previous = s.status
    if settle_voids(tx, tuple(n for n in pending if n in voids), voids, emit=False):
        return tx.done()
    if needed:
        # The provider has not confirmed these voids for as long as an effect may fail
        # before a person looks (every expiry tick asked): the session expires all the
        # same, flagged for review, and the voids go on in the outbox, which keeps the
        # session until they are confirmed. Waiting on would leave it active until its
        # record expired, an unknown attempt in it and nobody told. A hold's capture
        # still pending is cancelled: the session is over, so its hold is released,
        # never captured (docs/protocol.md 2.3); if the money was taken after all, the
        # void finds it and it is refunded as any late success of a session over.
        for number in needed.attempts:
            tx.cancel_capture(number)
            tx.add_effect(VOID, number)
        tx.update(needs_review=True)
    tx.update(status=EXPIRED, deadline=None, retry_at=None)
    tx.state(previous, "expired")
    return tx.done()
