"""The provider's word on an attempt (``ProviderResult``, ``Reference``), applied by the
rules of docs/protocol.md section 2 and its section 6. Pure, like the machine.

A result is applied at most once, and a late success always wins: money that moved
for a session still open makes it succeed; for a session that is over, it goes back
through the outbox and staff are told (``needs_review``).

A provider that authorizes first (Stripe's manual capture, the sandbox with
``PAYLIVE_SANDBOX_AUTHORIZE_FIRST``) reports ``authorized``: the money is only held.
While the session is open the hold is captured through the outbox, and the attempt
succeeds when the provider confirms the capture, never before: a hold is not money,
and a session that said "paid" on a hold that then could not be captured would have
told the customer and the shop something false. A hold the session no longer wants
(it is over, or the attempt was voided) is released through the outbox instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from .commands import ProviderResult, Reference
from .decision import Decision, NeedsVoid, Rules, Tx, refuse
from .effects import CAPTURE, REFUND, VOID
from .endings import NON_RETRYABLE_DECLINES, end_attempt
from .protocol import ErrorCode
from .session import (
    A_DECLINED,
    A_NETWORK_ERROR,
    A_PROCESSING,
    A_PROVIDER_ERROR,
    A_REFUNDED,
    A_SUCCEEDED,
    FAILED,
    FINAL_ATTEMPT_STATUSES,
    INTERRUPTED,
    OUTCOME_UNKNOWN,
    SUCCEEDED,
    Attempt,
    Session,
)
from .voids import missing


def provider_result(
    s: Session, cmd: ProviderResult, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    attempt = s.attempt_by_number(cmd.attempt)
    if attempt is None:
        return refuse(s, ErrorCode.UNKNOWN_ATTEMPT, f"the session has no attempt {cmd.attempt}")
    if cmd.outcome == "succeeded":
        return _success(s, attempt, cmd, now, voids)
    if cmd.outcome == "authorized":
        return _authorized(s, attempt, cmd, now)
    if cmd.outcome == "requires_action":
        return _requires_action(s, attempt, cmd, now)
    if cmd.outcome not in ("declined", "provider_error", "network_error"):
        return refuse(s, ErrorCode.INVALID_FIELD, f"unknown outcome {cmd.outcome!r}")
    if attempt.status in FINAL_ATTEMPT_STATUSES:
        return Decision(s)  # applied at most once: the attempt already has its result
    if attempt.status == A_PROCESSING:
        if cmd.outcome == "declined":
            retryable = cmd.decline_code not in NON_RETRYABLE_DECLINES
            return end_attempt(
                s,
                attempt.number,
                A_DECLINED,
                "declined",
                cmd.decline_code,
                retryable,
                now,
                rules,
                voids,
            )
        status = A_PROVIDER_ERROR if cmd.outcome == "provider_error" else A_NETWORK_ERROR
        return end_attempt(s, attempt.number, status, cmd.outcome, None, True, now, rules, voids)
    # The attempt timed out or lost its answer, and now the provider says it failed:
    # the outcome is known, so no void is needed for it any more.
    if cmd.outcome == "network_error":
        return Decision(s)
    tx = Tx(s, now)
    previous = s.status
    new_status = A_DECLINED if cmd.outcome == "declined" else A_PROVIDER_ERROR
    tx.set_attempt(attempt.number, status=new_status, decline_code=cmd.decline_code)
    if (
        cmd.outcome == "declined"
        and cmd.decline_code in NON_RETRYABLE_DECLINES
        and s.status == INTERRUPTED
    ):
        tx.update(status=FAILED, retry_at=None)
        tx.state(previous, "failed")
    else:
        tx.state(previous, cmd.outcome)
    return tx.done()


def _success(
    s: Session,
    attempt: Attempt,
    cmd: ProviderResult,
    now: int,
    voids: Mapping[int, bool],
) -> Decision | NeedsVoid:
    if attempt.status in (A_SUCCEEDED, A_REFUNDED):
        return Decision(s)  # a duplicate: this success was applied already
    ref = cmd.provider_ref or attempt.provider_ref
    if s.terminal:
        # Money moved for a session that is over: give it back and flag it.
        tx = Tx(s, now)
        tx.set_attempt(
            attempt.number, status=A_REFUNDED, ended_at=tx.ended(attempt.number), provider_ref=ref
        )
        tx.update(needs_review=True)
        tx.add_effect(REFUND, attempt.number)
        cause = "duplicate_charge_refunded" if s.status == SUCCEEDED else "late_success_refunded"
        tx.state(s.status, cause)
        return tx.done()
    others = tuple(
        a.number
        for a in s.attempts
        if a.number != attempt.number and a.status in OUTCOME_UNKNOWN | {A_PROCESSING}
    )
    needed = missing(others, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    previous = s.status
    duplicates: list[int] = []
    for number in others:
        if voids[number]:
            # Both attempts were charged: keep this one, give the other back.
            tx.set_attempt(number, status=A_REFUNDED, ended_at=tx.ended(number))
            tx.update(needs_review=True)
            tx.add_effect(REFUND, number)
            duplicates.append(number)
        else:
            tx.void_attempt(number)
    late = attempt.status != A_PROCESSING
    tx.set_attempt(
        attempt.number,
        status=A_SUCCEEDED,
        ended_at=attempt.ended_at if late and attempt.ended_at is not None else now,
        provider_ref=ref,
    )
    tx.update(status=SUCCEEDED, deadline=None, retry_at=None)
    tx.state(previous, "late_success" if late else "succeeded")
    for _number in duplicates:
        # A charge the void found is a second success: name its refund (docs/protocol.md 2).
        tx.state(SUCCEEDED, "duplicate_charge_refunded")
    return tx.done()


def _authorized(s: Session, attempt: Attempt, cmd: ProviderResult, now: int) -> Decision:
    """A hold: captured while the session may still succeed by it, else released. Both
    go through the outbox (a quiet save: the page hears when the capture is confirmed)."""
    if attempt.status in (A_SUCCEEDED, A_REFUNDED):
        return Decision(s)  # captured already: the success was applied
    tx = Tx(s, now)
    if attempt.provider_ref is None and cmd.provider_ref is not None:
        tx.set_attempt(attempt.number, provider_ref=cmd.provider_ref)
    if s.terminal or attempt.status in FINAL_ATTEMPT_STATUSES:
        # The session moved on, or this attempt was voided before its hold was known:
        # release the hold rather than take the money and give it back. A release
        # confirmed once is not asked for again.
        tx.add_effect(VOID, attempt.number)
    else:
        # A hold for an attempt in flight, or one whose outcome was unknown: take it.
        tx.add_effect(CAPTURE, attempt.number)
    return tx.done()


def _requires_action(s: Session, attempt: Attempt, cmd: ProviderResult, now: int) -> Decision:
    if attempt.status != A_PROCESSING or attempt.action == cmd.action:
        # An attempt that ended is voided by the usual rules; the same action twice is
        # one action.
        return Decision(s)
    tx = Tx(s, now)
    tx.set_attempt(
        attempt.number,
        action=cmd.action,
        provider_ref=attempt.provider_ref or cmd.provider_ref,
    )
    tx.state(s.status, "requires_action")
    return tx.done()


def reference(s: Session, cmd: Reference, now: int) -> Decision:
    attempt = s.attempt_by_number(cmd.attempt)
    if attempt is None:
        return refuse(s, ErrorCode.UNKNOWN_ATTEMPT, f"the session has no attempt {cmd.attempt}")
    if attempt.status != A_PROCESSING:
        return refuse(
            s, ErrorCode.INVALID_STATE, f"attempt {attempt.number} has ended: it must not go on"
        )
    if attempt.provider_ref == cmd.provider_ref:
        return Decision(s)
    if attempt.provider_ref is not None:
        # The first payment named is the only one that may be confirmed.
        return refuse(
            s,
            ErrorCode.INVALID_STATE,
            f"attempt {attempt.number} is {attempt.provider_ref} already",
        )
    tx = Tx(s, now)
    tx.set_attempt(attempt.number, provider_ref=cmd.provider_ref)
    return tx.done()
